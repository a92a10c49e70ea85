"""--gpu auto|cuda|cpu with a fake nvidia-smi on PATH and the kit's fake TensorFlow (FAKE_TF_GPUS)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.kit.cli import run_cli as cli
from tests.kit.nvidia import fake_nvidia_smi


@pytest.fixture
def gpu_env(kit_env, tmp_path):
    """kit_env with the kit's fake nvidia-smi first on PATH, replaying one recorded machine."""

    def make(variant: str = "h100-590", gpus: int | None = None) -> dict[str, str]:
        folder = tmp_path / f"smi-{variant}"
        fake_nvidia_smi(folder, variant)
        env = dict(kit_env, PATH=f"{folder}{os.pathsep}{kit_env['PATH']}")
        if gpus is not None:
            env["FAKE_TF_GPUS"] = str(gpus)
        return env

    return make


def plan(env, venv: Path, kit_index: Path, *extra):
    res = cli(env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--json", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["plan"]


def names(p):
    return {c["name"]: c for c in p["changes"]}


@pytest.mark.slow
def test_auto_without_gpu_keeps_the_variant(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    p = plan(kit_env, venv, kit_index, "--to", "2.18")
    assert p["gpu_route"] == "keep" and p["tf_distribution"] == "tensorflow-cpu"
    assert not any(n.startswith("nvidia-") for n in names(p))


@pytest.mark.parametrize("variant", ["no-driver", "nvml-mismatch"])
def test_auto_with_a_failing_nvidia_smi_keeps_the_variant(make_venv, gpu_env, kit_index, variant):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    p = plan(gpu_env(variant), venv, kit_index, "--to", "2.18")
    assert p["gpu_route"] == "keep" and p["tf_distribution"] == "tensorflow-cpu"
    assert not any(n.startswith("nvidia-") for n in names(p))


def test_auto_with_gpu_takes_the_cuda_route_and_swaps_the_variant(make_venv, gpu_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    p = plan(gpu_env(), venv, kit_index, "--to", "2.18")
    assert p["gpu_route"] == "cuda" and p["gpu_required"] is True and p["tf_distribution"] == "tensorflow"
    changes = names(p)
    assert changes["tensorflow-cpu"]["kind"] == "remove" and changes["tensorflow"]["new"] == "2.18.0"
    assert changes["nvidia-cudnn-cu12"]["kind"] == "add"


def test_cpu_route_from_tensorflow(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow==2.15.1"])
    p = plan(kit_env, venv, kit_index, "--to", "2.18", "--gpu", "cpu")
    changes = names(p)
    assert p["tf_distribution"] == "tensorflow-cpu"
    assert changes["tensorflow"]["kind"] == "remove" and changes["tensorflow-cpu"]["new"] == "2.18.0"


def test_old_driver_is_a_plan_error_with_the_fix(make_venv, gpu_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    res = cli(gpu_env("geforce-470"), "plan", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.18")
    assert res.returncode == 1
    assert "driver 470.82.01 is too old" in res.stderr and "525.60.13" in res.stderr
    assert "--gpu cpu" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_cuda_upgrade_requires_a_visible_gpu(make_venv, gpu_env, kit_index, venv_run):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    no_gpu = cli(gpu_env(), "upgrade", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.18", "--yes")
    assert no_gpu.returncode == 1
    assert "TensorFlow sees a GPU" in no_gpu.stderr and "likely causes" in no_gpu.stderr
    assert venv_run(venv, "import tensorflow as tf; print(tf.__version__)").stdout.strip() == "2.15.1"
    ok = cli(
        gpu_env(gpus=1),
        "upgrade",
        "--env",
        venv,
        "--offline",
        "--find-links",
        kit_index,
        "--to",
        "2.18",
        "--yes",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    checks = {c["name"]: c["ok"] for c in json.loads(ok.stdout)["checks"]}
    assert checks["TensorFlow sees a GPU"] is True


def test_unknown_gpu_value(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    res = cli(kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--gpu", "tpu")
    assert res.returncode == 2 and "--gpu" in res.stderr
