"""TensorFlow know-how: the release table, the Keras 3 switch, dropped packages, one variant per env.

Offline against the test kit; real uv, real venvs.
"""

from __future__ import annotations

import json

import pytest

from rebuild.knowledge import tf as tfinfo
from tests.kit.cli import run_cli as cli
from tests.kit.wheels import build_wheel


def plan_json(kit_env, kit_index, venv, *extra):
    res = cli(kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--json", *extra)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["plan"]


def change(plan, name):
    return next((c for c in plan["changes"] if c["name"] == name), None)


# --- release table -------------------------------------------------------------


def test_release_table_covers_2_10_to_newest_in_order():
    rows = tfinfo.releases()
    minors = [r.minor for r in rows]
    assert minors[0] == "2.10" and minors == sorted(minors, key=lambda m: tuple(map(int, m.split("."))))
    assert len(set(minors)) == len(minors)
    by = {r.minor: r for r in rows}
    assert by["2.15"].keras_major == 2 and by["2.16"].keras_major == 3
    assert "3.12" in by["2.16"].python and "3.12" not in by["2.15"].python
    assert "3.9" not in by["2.21"].python and "3.13" in by["2.20"].python
    assert by["2.14"].gpu_route == "tensorflow[and-cuda]" and by["2.13"].gpu_route != "tensorflow[and-cuda]"
    assert tfinfo.release_for("2.18.1").minor == "2.18" and tfinfo.release_for("9.9.9") is None


def test_releases_command_marks_installed_and_latest(make_venv, kit_env):
    venv = make_venv("v", ["tensorflow-cpu==2.16.1"])
    res = cli(kit_env, "releases", "--env", venv, "--offline", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["installed"] == "tensorflow-cpu 2.16.1" and doc["installed_minor"] == "2.16"
    assert doc["latest"] == tfinfo.releases()[-1].newest and doc["latest_source"] == "table"
    human = cli(kit_env, "releases", "--env", venv, "--offline")
    assert human.returncode == 0
    assert "2.16 (installed)" in human.stdout and "(latest)" in human.stdout


# --- Keras 3 ---------------------------------------------------------------------


def test_crossing_2_16_names_installed_keras2_packages(make_venv, kit_env, kit_index, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    # Known to be built on Keras 2, by name (it declares no keras requirement here).
    build_wheel(extra, "tensorflow-model-optimization", "0.8.0")
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "tensorflow-model-optimization==0.8.0"], extra_find_links=[extra])
    plan = plan_json(kit_env, kit_index, venv, "--find-links", extra, "--to", "2.16")
    assert plan["keras2_dependents"] == ["tensorflow-model-optimization"]
    assert any("Keras 3" in n and "tensorflow-model-optimization" in n for n in plan["notes"])


def test_package_capping_keras_below_3_blocks_2_16_with_an_explanation(make_venv, kit_env, kit_index, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    build_wheel(extra, "keras2-app", "1.0", requires=["keras<3"])
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "keras2-app==1.0"], extra_find_links=[extra])
    res = cli(
        kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--find-links", extra, "--to", "2.16"
    )
    assert res.returncode == 1, res.stdout
    assert "keras2-app" in res.stderr and "uv says" in res.stderr and "Traceback" not in res.stderr


def test_keras3_note_without_legacy(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    plan = plan_json(kit_env, kit_index, venv, "--to", "2.16")
    assert plan["keras_legacy"] is False
    assert any("Keras 3" in n and "--keras legacy" in n for n in plan["notes"])
    assert change(plan, "keras")["new"].startswith("3.")


@pytest.mark.slow
def test_keras_legacy_upgrade_keeps_keras2_for_every_interpreter(make_venv, kit_env, kit_index, venv_run):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    plan = plan_json(kit_env, kit_index, venv, "--to", "2.18", "--keras", "legacy")
    assert plan["keras_legacy"] is True
    assert change(plan, "tf-keras")["new"] == "2.18.0"
    res = cli(
        kit_env,
        "upgrade",
        "--env",
        venv,
        "--offline",
        "--find-links",
        kit_index,
        "--to",
        "2.18",
        "--keras",
        "legacy",
        "--yes",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert any(c["name"] == "tf.keras is Keras 2" and c["ok"] for c in doc["checks"])
    pth = next(venv.glob("lib/python*/site-packages")) / tfinfo.LEGACY_KERAS_PTH
    assert pth.read_text() == tfinfo.LEGACY_KERAS_LINE
    # Not activated, no TF_USE_LEGACY_KERAS in the environment: the interpreter itself sets it.
    out = venv_run(
        venv,
        "import tensorflow as tf; print(tf.keras.__name__, tf.keras.layers.Dense.__module__)",
        TF_USE_LEGACY_KERAS=None,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tf_keras.api._v2.keras", "tf_keras.src.engine"]
    # The next plan keeps Keras 2 without being told again.
    again = plan_json(kit_env, kit_index, venv, "--to", "2.21")
    assert again["keras_legacy"] is True


def test_unknown_keras_value_is_refused(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    res = cli(kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--keras", "4")
    assert res.returncode == 2 and "--keras" in res.stderr and "Traceback" not in res.stderr


# --- variants and dropped packages ----------------------------------------------


def test_companion_requiring_tensorflow_keeps_one_variant(make_venv, kit_env, kit_index):
    # tf-keras requires `tensorflow`: next to tensorflow-cpu, uv would install both.
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    plan = plan_json(kit_env, kit_index, venv, "--to", "2.18", "--keras", "legacy")
    assert plan["tf_distribution"] == "tensorflow"
    assert change(plan, "tensorflow-cpu")["kind"] == "remove"
    assert change(plan, "tensorflow")["new"] == "2.18.0"
    assert any("overwriting each other" in n for n in plan["notes"])


def test_dropped_estimator_is_explained(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    plan = plan_json(kit_env, kit_index, venv, "--to", "2.16")
    assert change(plan, "tensorflow-estimator")["kind"] == "remove"
    assert any(n.startswith("tensorflow-estimator 2.15.0 is removed") and "tf.estimator" in n for n in plan["notes"])


@pytest.mark.parametrize("to, expected", [("2.18", False), ("2.21", True)])
def test_tensorboard_note_only_when_it_leaves(make_venv, kit_env, kit_index, to, expected):
    venv = make_venv("v", ["tensorflow-cpu==2.16.1"])
    plan = plan_json(kit_env, kit_index, venv, "--to", to)
    assert any(n.startswith("tensorboard") for n in plan["notes"]) is expected


# --- moving Python -------------------------------------------------------------


def test_python_auto_picks_the_newest_supported_interpreter(make_venv, kit_env, kit_index, require_python):
    newest = require_python("3.13")
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    plan = plan_json(kit_env, kit_index, venv, "--python", "auto", "--to", "2.21")
    assert plan["python_old"].startswith("3.11.") and plan["python_new"].startswith("3.13.")
    assert plan["python_path"] == str(newest)
    assert any(n.startswith("--python auto: interpreters found:") and str(newest) in n for n in plan["notes"])
    # 2.18 has no 3.13 wheel: auto falls back to the newest Python it supports.
    older = plan_json(kit_env, kit_index, venv, "--python", "auto", "--to", "2.18")
    assert older["python_new"].startswith("3.12.")


def test_upgrade_moves_the_env_to_another_python(make_venv, kit_env, kit_index, require_python, venv_run):
    require_python("3.12")
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    res = cli(
        kit_env,
        "upgrade",
        "--env",
        venv,
        "--offline",
        "--find-links",
        kit_index,
        "--python",
        "3.12",
        "--to",
        "2.18",
        "--yes",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = venv_run(venv, "import sys, tensorflow, scipy; print(sys.version_info[:2], tensorflow.__version__)")
    assert out.stdout.strip() == "(3, 12) 2.18.0"


# --- tf-nightly with --pre --------------------------------------------------------


@pytest.mark.slow
def test_tf_nightly_moves_only_with_pre(make_venv, kit_env, kit_index, tmp_path, venv_run):
    from tests.kit.catalog import tf_modules

    nightly = tmp_path / "nightly"
    nightly.mkdir()
    for version in ("2.22.0.dev20261001", "2.23.0.dev20261101"):
        build_wheel(
            nightly, "tf-nightly", version, requires=["numpy>=1.26.0", "keras>=3.12.0"], modules=tf_modules(version)
        )
    venv = make_venv("v", ["tf-nightly==2.22.0.dev20261001"], extra_find_links=[nightly])
    args = ["--offline", "--find-links", kit_index, "--find-links", nightly]
    without = cli(kit_env, "plan", "--env", venv, *args)
    assert without.returncode == 2 and "pre-release" in without.stderr and "--pre" in without.stderr
    pre = cli(kit_env, "plan", "--env", venv, *args, "--pre", "--json")
    assert pre.returncode == 0, pre.stderr
    plan = json.loads(pre.stdout)["plan"]
    assert plan["tf_distribution"] == "tf-nightly" and plan["tf_new"] == "2.23.0.dev20261101"
    res = cli(kit_env, "upgrade", "--env", venv, *args, "--pre", "--yes")
    assert res.returncode == 0, res.stderr
    out = venv_run(venv, "import tensorflow as tf; print(tf.__version__)")
    assert out.stdout.strip() == "2.23.0.dev20261101"
