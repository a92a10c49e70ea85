"""Real PyPI (issue 12, point 3): an env installed from a pinned requirements file of
tensorflow-cpu 2.15.1 (its full pinned closure, so pip writes REQUESTED on every
distribution) is upgraded to the latest TensorFlow; what only 2.15 needed goes.

Every command runs with this machine's own pip and uv configuration untouched
(constraints file, extra mirrors, find-links). Skipped when PyPI does not answer.
Run it with ``python -m pytest tests/test_intent_pypi.py -q -m network``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from tests.kit.cli import run_cli

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX venv layout and Linux wheels assumed"),
]


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["NO_COLOR"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run(cmd, cwd, timeout=1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], env=environ(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_pinned_requirements_env_upgraded_to_latest(pypi_reachable, tmp_path: Path) -> None:
    source = tmp_path / "source"
    run([sys.executable, "-m", "venv", source], tmp_path)
    run([source / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "tensorflow-cpu==2.15.1"], tmp_path)
    pins = run([source / "bin" / "pip", "freeze", "--disable-pip-version-check"], tmp_path).stdout
    assert "tensorflow-estimator==" in pins and "tensorflow-io-gcs-filesystem==" in pins, pins
    shutil.rmtree(source)
    req = tmp_path / "requirements.txt"
    req.write_text(pins)

    env = tmp_path / "tf"
    run([sys.executable, "-m", "venv", env], tmp_path)
    run([env / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-r", req], tmp_path)
    site = next(env.glob("lib/python3.*/site-packages"))
    assert (next(site.glob("tensorflow_estimator-*.dist-info")) / "REQUESTED").exists(), "premise"

    plan = run_cli(environ(), "plan", "--env", env, "--json", cwd=tmp_path, timeout=1800)
    assert plan.code == 0, str(plan)
    doc = plan.json()["plan"]
    assert Version(doc["tf_new"]) >= Version("2.20"), doc["tf_new"]
    changes = {c["name"]: c for c in doc["changes"]}
    for gone in ("tensorflow-estimator", "tensorflow-io-gcs-filesystem"):
        assert changes[gone]["kind"] == "remove", changes.get(gone)
        assert changes[gone]["reason"] == "no longer required (only tensorflow-cpu 2.15.1 needed it)", changes[gone]
    assert all(c["reason"] for c in doc["changes"]), [c for c in doc["changes"] if not c["reason"]]

    # requirements.txt beside the env pins the old TensorFlow and has no .in to recompile it from: `pip install -r`
    # would put it back, so upgrade refuses unless --force (issue 13, point 4)
    assert doc["project"]["manager"] == "requirements" and not doc["project"]["drivable"], doc["project"]
    refused = run_cli(environ(), "upgrade", "--env", env, "--yes", cwd=tmp_path, timeout=1800)
    assert refused.code == 1 and "--force" in refused.err, str(refused)
    up = run_cli(environ(), "upgrade", "--env", env, "--yes", "--force", "--json", cwd=tmp_path, timeout=1800)
    assert up.code == 0, str(up)
    assert all(c["ok"] for c in up.json()["checks"]), up.json()["checks"]
    site = next(env.glob("lib/python3.*/site-packages"))
    assert not list(site.glob("tensorflow_estimator-*.dist-info"))
    assert not list(site.glob("tensorflow_io_gcs_filesystem-*.dist-info"))
    out = run(
        [
            env / "bin" / "python",
            "-c",
            "import tensorflow as tf; print(tf.__version__, float(tf.reduce_sum(tf.constant([1.0, 2.0]))))",
        ],
        tmp_path,
    ).stdout.split()
    assert (out[0], out[1]) == (doc["tf_new"], "3.0")

    doctor = run_cli(environ(), "doctor", "--env", env, "--json", cwd=tmp_path, timeout=600)
    assert not [f for f in doctor.json()["findings"] if f["id"] == "record-missing-files"]
