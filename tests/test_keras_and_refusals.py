"""Issue 12, points 4, 7 and 8: --keras legacy that works, refusals before the build, and the smaller items.

Offline against the test kit (real uv, real venvs), except the last test (real PyPI, this machine's pip
configuration untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rebuild.core import smoke
from rebuild.store.location import state_dir
from tests.kit.cli import run_cli as cli
from tests.kit.cli import tree_state
from tests.kit.wheels import build_wheel

KIT = ("--offline",)


def links(kit_index, *more):
    out = []
    for folder in (kit_index, *more):
        out += ["--find-links", str(folder)]
    return out


def plan_of(kit_env, kit_index, venv, *extra, overrides=None):
    res = cli(kit_env, "plan", "--env", venv, *KIT, *links(kit_index), "--json", *extra, overrides=overrides)
    assert res.code == 0, str(res)
    return res.json()["plan"]


def upgrade(kit_env, kit_index, venv, *extra, overrides=None, more_links=()):
    return cli(
        kit_env,
        "upgrade",
        "--env",
        venv,
        *KIT,
        *links(kit_index, *more_links),
        "--yes",
        "--json",
        *extra,
        overrides=overrides,
    )


def changes(plan):
    return {c["name"]: c for c in plan["changes"]}


# --------------------------------------------------------------------------- point 4: Keras 2 through tf-keras


def test_old_keras_check_fails_on_the_lazy_kit_and_the_new_one_passes(make_venv, kit_env):
    """The kit's tf.keras resolves lazily like the real one: tf.keras.__version__ is not there under legacy."""
    venv = make_venv("v", ["tensorflow==2.21.0", "tf-keras==2.21.0"])
    py = str(venv / "bin" / "python")
    environ = {**smoke.clean_environ(venv), "TF_USE_LEGACY_KERAS": "1"}
    old = 'import json, tensorflow as tf; print(json.dumps({"keras": getattr(tf.keras, "__version__", "?")}))'
    assert json.loads(
        subprocess.run([py, "-c", old], env=environ, capture_output=True, text=True, check=True).stdout
    ) == {"keras": "?"}
    new = json.loads(
        subprocess.run([py, "-c", smoke._KERAS_CHECK], env=environ, capture_output=True, text=True, check=True).stdout
    )
    assert new["package"] == "tf_keras" and new["version"] == "2.21.0"
    script = subprocess.run([py, "-c", smoke._KERAS2_SCRIPT], env=environ, capture_output=True, text=True)
    assert script.returncode == 0, script.stderr
    assert json.loads(script.stdout)["model"].startswith("tf_keras.")
    # Without TF_USE_LEGACY_KERAS, tf.keras is Keras 3: the check says so.
    environ.pop("TF_USE_LEGACY_KERAS")
    k3 = json.loads(
        subprocess.run([py, "-c", smoke._KERAS_CHECK], env=environ, capture_output=True, text=True, check=True).stdout
    )
    assert k3["package"] == "keras" and k3["version"].startswith("3.")


@pytest.mark.slow
def test_keras_legacy_upgrade_succeeds_with_switch_shown(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    plan = plan_of(kit_env, kit_index, venv, "--to", "2.21", "--keras", "legacy")
    got = changes(plan)
    assert plan["tf_distribution"] == "tensorflow" and plan["tf_old_distribution"] == "tensorflow-cpu"
    switch = got["tensorflow"]
    assert switch["replaces"] == "tensorflow-cpu" and (switch["old"], switch["new"]) == ("2.15.1", "2.21.0")
    assert "variant switch" in switch["reason"] and "tf-keras" in switch["reason"]
    assert got["tensorflow-cpu"]["kind"] == "remove" and "variant switch" in got["tensorflow-cpu"]["reason"]
    text = cli(kit_env, "plan", "--env", venv, *KIT, *links(kit_index), "--to", "2.21", "--keras", "legacy")
    assert text.code == 0, str(text)
    assert "TensorFlow: tensorflow-cpu 2.15.1 → tensorflow 2.21.0" in text.out
    assert "tensorflow-cpu → tensorflow" in text.out and "Variant switch tensorflow-cpu → tensorflow:" in text.out

    res = upgrade(kit_env, kit_index, venv, "--to", "2.21", "--keras", "legacy")
    assert res.code == 0, str(res)
    checks = {c["name"]: c for c in res.json()["checks"]}
    assert checks["tf.keras is Keras 2"]["ok"], checks
    assert checks["Keras 2 script (Sequential, compile, fit, save/load .h5)"]["ok"], checks


def test_keras_check_fails_when_tf_keras_is_not_used(make_venv, tmp_path):
    """The check verifies Keras 2 the way TF resolves tf.keras: Keras 3 is refused, with what it found."""
    venv = make_venv("v", ["tensorflow==2.21.0"])
    report = smoke.run_checks(venv, tf_version="2.21.0", imports=[], keras_major=2, timeout=60)
    check = next(c for c in report.checks if c.name == "tf.keras is Keras 2")
    assert not check.ok and "tf.keras is keras 3." in check.output and "keras.src.engine" in check.output


# --------------------------------------------------------------------------- point 7: refusals before the build


def test_process_running_from_the_env_is_refused_before_the_build(make_venv, kit_env, kit_index):
    venv = make_venv("busy", ["tensorflow-cpu==2.15.1"])
    before = tree_state(venv)
    user = subprocess.Popen([str(venv / "bin" / "python"), "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        res = upgrade(kit_env, kit_index, venv, "--to", "2.18")
        assert res.code == 1, str(res)
        doc = res.json()
        assert f"pid {user.pid}" in doc["error"] and "--force" in doc["hint"] and "Traceback" not in res.text
        assert not state_dir(venv).exists(), "nothing (no state or staging folder) may be created"
        assert tree_state(venv) == before
    finally:
        user.kill()
        user.wait(timeout=10)
    done = upgrade(kit_env, kit_index, venv, "--to", "2.18")
    assert done.code == 0, str(done)
    assert res.seconds < done.seconds, (res.seconds, done.seconds)


def _as_nobody(kit_env, *args):
    environ = {**kit_env, "HOME": "/tmp", "UV_CACHE_DIR": tempfile.mkdtemp(prefix="uvc-")}
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "rebuild", *args]
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120, cwd="/tmp")


SYSTEM_PYTHON = "/usr/bin/python3"  # runnable by every user (pyenv's and uv's Pythons may live in ~root)


@pytest.fixture
def open_dir():
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root and setpriv to act as another user")
    top = Path(tempfile.mkdtemp(prefix="tfr-perm-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def test_unwritable_parent_and_other_owner_are_refused_first(make_venv, kit_env, kit_index, open_dir):
    locked = open_dir / "locked"  # root's, 755: nobody cannot create the state folder or staging there
    locked.mkdir(mode=0o755)
    env = make_venv(locked / "env", ["tensorflow-cpu==2.15.1"], python=SYSTEM_PYTHON)
    subprocess.run(["chown", "-R", "65534:65534", str(env)], check=True)
    res = _as_nobody(kit_env, "upgrade", "--env", str(env), "--offline", "--find-links", str(kit_index), "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{locked} that holds {env} is not writable by nobody" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in locked.iterdir()) == ["env"]

    shared = open_dir / "shared"  # writable by all, but the env is root's: nobody cannot keep its owner
    shared.mkdir()
    shared.chmod(0o1777)
    env2 = make_venv(shared / "env", ["tensorflow-cpu==2.15.1"], python=SYSTEM_PYTHON)
    res = _as_nobody(kit_env, "upgrade", "--env", str(env2), "--offline", "--find-links", str(kit_index), "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{env2} belongs to root" in res.stderr and "sudo -u root" in res.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["env"]


def test_mount_point_env_is_refused(make_venv, kit_env, kit_index, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        env = make_venv(mnt, ["six"])
        from rebuild.env import refusals

        found = refusals.refusals(env)
        assert any("is a mount point" in e.message for e in found)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- point 8: the smaller items


def test_preflight_error_for_the_new_env_blocks_the_upgrade(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    shadow = tmp_path / "shadow"
    (shadow / "scipy").mkdir(parents=True)
    (shadow / "scipy" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(shadow)}
    text = cli(kit_env, "plan", "--env", venv, *KIT, *links(kit_index), "--to", "2.18", overrides=env)
    assert "pre-flight (error, blocks the upgrade) pythonpath-shadow" in text.out, str(text)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", overrides=env)
    assert res.code == 1, str(res)
    assert "pythonpath-shadow" in res.json()["error"] and "stops before building" in res.json()["error"]
    assert not state_dir(venv).exists()


def test_target_blocked_cured_by_the_resolution_is_not_an_error(make_venv, kit_env, kit_index):
    """tensorflow-text 2.15.0 blocks 2.18 in doctor; the resolution moves it, so the plan says it is fixed."""
    venv = make_venv("v", ["tensorflow==2.15.1", "tensorflow-text==2.15.0"])
    doctor = cli(kit_env, "doctor", "--env", venv, *KIT, *links(kit_index), "--to", "2.18", "--json")
    assert any(f["id"] == "target-blocked" and f["severity"] == "error" for f in doctor.json()["findings"])
    plan = plan_of(kit_env, kit_index, venv, "--to", "2.18")
    blocked = [f for f in plan["preflight"] if f["id"] == "target-blocked"]
    assert blocked and all(f["fixed_by_rebuild"] and not f["affects_new_env"] for f in blocked)
    assert changes(plan)["tensorflow-text"]["new"] == "2.18.1"


def test_pip_other_interpreter_only_for_an_activated_env(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pip"
    fake.write_text("#!/bin/sh\necho 'pip 24.0 from /usr/lib/python3/dist-packages/pip (python 3.12)'\n")
    fake.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{kit_env.get('PATH', os.defpath)}"
    plain = plan_of(kit_env, kit_index, venv, "--to", "2.16", overrides={"PATH": path, "VIRTUAL_ENV": None})
    assert "pip-other-interpreter" not in [f["id"] for f in plain["preflight"]]
    active = plan_of(kit_env, kit_index, venv, "--to", "2.16", overrides={"PATH": path, "VIRTUAL_ENV": str(venv)})
    assert "pip-other-interpreter" in [f["id"] for f in active["preflight"]]


def test_reasons_ignore_extras_only_requirements(make_venv, kit_env, kit_index, tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "toolbelt", "1.0", requires=['tomli-w>=1.0; extra == "test"'])
    build_wheel(wheels, "tomli-w", "1.0.0")
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "toolbelt==1.0", "tomli-w==1.0.0"], extra_find_links=[wheels])
    # tomli-w is installed only as a dependency nobody needs without the extra: requested = toolbelt only
    res = cli(kit_env, "plan", "--env", venv, *KIT, *links(kit_index, wheels), "--to", "2.16", "--json")
    assert res.code == 0, str(res)
    got = changes(res.json()["plan"])
    if "tomli-w" in got and got["tomli-w"]["new"] is None:
        assert "toolbelt" not in got["tomli-w"]["reason"], got["tomli-w"]
    from rebuild.env import graph

    assert not graph.without_extra('tomli-w>=1.0; extra == "test"') and graph.without_extra("tomli-w>=1.0")


@pytest.mark.slow
def test_diff_after_in_place_install_and_gc_keep(make_venv, kit_env, kit_index, uv):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    for to in ("2.16", "2.18", "2.21"):
        res = upgrade(kit_env, kit_index, venv, "--to", to)
        assert res.code == 0, str(res)
    # An in-place install into the current generation (4): diff reads the tree, not the stale record.
    uv("pip", "install", "-q", "--python", str(venv / "bin" / "python"), "six==1.17.0")
    d = cli(kit_env, "diff", "1", "4", "--env", venv, "--json")
    assert d.code == 0, str(d)
    assert {c["name"]: c for c in d.json()["changes"]}["six"]["new"] == "1.17.0"
    d = cli(kit_env, "diff", "4", "4", "--env", venv, "--json")
    assert d.json()["changes"] == []
    # Roll back to 2: the tree changed in place is adopted first as generation 5 (so nothing of it is lost),
    # which becomes the previous one; --keep 2 keeps exactly the current and the previous.
    rb = cli(kit_env, "rollback", "--env", venv, "--to", "2", "--yes", "--json")
    assert rb.code == 0, str(rb)
    assert rb.json()["from_generation"] == 5 and "adopted" in rb.json()["recovered"], str(rb)
    gc = cli(kit_env, "gc", "--env", venv, "--keep", "2", "--yes", "--json")
    assert gc.code == 0, str(gc)
    assert gc.json()["kept"] == [2, 5] and gc.json()["deleted"] == [1, 3, 4]


# --------------------------------------------------------------------------- real PyPI


@pytest.mark.network
def test_real_plan_keras_legacy_shows_the_variant_switch(tmp_path):
    """A real tensorflow-cpu 2.15.1 env (this machine's pip configuration, untouched): the plan names the switch."""
    env = Path(os.environ.get("TFREBUILD_REAL_TF215", "")) if os.environ.get("TFREBUILD_REAL_TF215") else None
    if env is None:
        env = tmp_path / "tf215"
        py = shutil.which("python3.11")
        if not py:
            pytest.skip("no python3.11 for tensorflow-cpu 2.15.1")
        subprocess.run([py, "-m", "venv", str(env)], check=True)
        pip = subprocess.run(
            [str(env / "bin" / "pip"), "install", "-q", "tensorflow-cpu==2.15.1"],
            capture_output=True,
            text=True,
            timeout=1500,
        )
        if pip.returncode != 0:
            pytest.skip(f"could not install tensorflow-cpu 2.15.1: {pip.stderr[-300:]}")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(
        [sys.executable, "-m", "rebuild", "plan", "--env", str(env), "--keras", "legacy", "--json"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    row = changes(plan)["tensorflow"]
    assert row["replaces"] == "tensorflow-cpu" and "tf-keras" in row["reason"]
    assert plan["tf_switch"] and plan["keras_legacy"] is True
