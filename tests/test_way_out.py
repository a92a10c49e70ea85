"""Issue 23, point 6: every state has a way out.

* a managed env whose ``bin/python`` dangles is rolled back to its whole generation 1 (status, history too);
* an ``apply`` into a new path killed after its build, before its rename (a state folder with a journal and a
  staged env, and no env at the path) is visible to ``status``, ``history`` and ``gc`` by that path, and undone;
* a generation whose record cannot be read is reported as unreadable, with whose it is, by history, rollback
  and ``gc --dry-run``, never as missing and never silently left out.

Real kit envs (uv venvs with the kit's TensorFlow wheels), the real CLI.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.test_generations import _fast_managed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")

ROOT = Path(__file__).resolve().parent.parent


def state_of(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def tfr(kit_env, *args, **overrides):
    return run_cli(kit_env, *[str(a) for a in args], cwd=ROOT, timeout=180, overrides=overrides or None)


def test_dangling_interpreter_can_be_rolled_back(tmp_path, kit_index, kit_env):
    env = _fast_managed(tmp_path / "p" / "tf", 2, kit_index, kit_env)
    python = env / "bin" / "python"
    real = os.path.realpath(python)
    python.unlink()
    python.symlink_to(tmp_path / "gone" / "python3")  # the interpreter it linked to was removed
    for args in (["status", "--json"], ["history", "--json"]):
        run = tfr(kit_env, *args, "--env", env)
        assert run.code == 0, str(run)
    run = tfr(kit_env, "rollback", "--env", env, "--yes", "--json")
    assert run.code == 0, str(run)
    doc = run.json()
    assert (doc["from_generation"], doc["to_generation"]) == (2, 1), doc
    assert (env / "bin" / "python").exists() and os.path.realpath(env / "bin" / "python") != str(tmp_path / "gone")
    assert real
    assert (state_of(env) / "generations" / "2" / "env" / "bin" / "python").is_symlink()  # kept as it was


@pytest.mark.parametrize("next_command", ["status", "history", "gc"])
def test_apply_into_a_new_path_killed_before_its_rename_is_undone_by(next_command, tmp_path, kit_index, kit_env):
    source = _fast_managed(tmp_path / "p" / "tf", 2, kit_index, kit_env)
    profile = tmp_path / "foreign.toml"
    profile.write_text((state_of(source) / "generations" / "1" / "profile.toml").read_text())
    target = tmp_path / "new" / "venv"
    run = tfr(
        kit_env,
        "apply",
        profile,
        "--env",
        target,
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        TFREBUILD_FAULT="apply.built",
    )
    assert run.code == -signal.SIGKILL, str(run)
    assert not os.path.lexists(target) and (state_of(target) / "journal.json").exists()
    args = {"status": ["status", "--json"], "history": ["history", "--json"], "gc": ["gc", "--dry-run", "--json"]}
    run = tfr(kit_env, *args[next_command], "--env", target)
    assert "Traceback" not in run.text, str(run)
    assert "does not exist" not in run.text, str(run)
    if next_command == "status":
        assert run.code == 0 and run.json()["managed"] is False, str(run)
        assert run.json()["recovered"], str(run)
    else:
        assert run.code == 2 and "not managed" in run.err, str(run)
    assert "interrupted apply" in run.text, str(run)
    assert not os.path.lexists(target) and not os.path.lexists(state_of(target))
    again = tfr(kit_env, "apply", profile, "--env", target, "--offline", "--find-links", kit_index, "--yes", "--json")
    assert again.code == 0, str(again)


@pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("setpriv"), reason="needs root and setpriv")
def test_unreadable_generation_is_reported_as_unreadable_with_its_owner(tmp_path):
    """Root's generation folder (mode 0700) inside another user's managed env: that user's history, gc --dry-run
    and rollback name it as unreadable, with whose it is."""
    import shutil
    import subprocess

    from tests.test_shared_machine import managed

    base = Path(__import__("tempfile").mkdtemp(prefix="tfr-unreadable-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        store = managed(base / "tf", 4)
        subprocess.run(["chown", "-R", "65534:65534", str(store.env), str(store.state)], check=True)
        folder = store.generation_dir(2)
        subprocess.run(["chown", "-R", "0:0", str(folder)], check=True)
        os.chmod(folder, 0o700)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "rebuild"]
        env = {**os.environ, "HOME": str(base)}
        for args in (["history"], ["gc", "--dry-run"], ["rollback", "--to", "2", "--yes"], ["history", "--json"]):
            p = subprocess.run(
                [*as_nobody, *args, "--env", str(store.env)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=120,
            )
            text = p.stdout + p.stderr
            assert "Traceback" not in text, text
            assert "permission denied" in text.lower() and "belongs to root" in text, (args, text)
            assert "no generation 2" not in text and "There is no generation" not in text, text
        assert (store.env / "MARKER").read_text() == "gen4"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_apply_into_a_new_path_killed_before_its_journal_is_tidied_by_status(tmp_path, kit_env):
    """The state folder an apply made (its creation record, lock, a staging folder) with no journal yet, and no env
    at the path: status reaches it by that path and removes it (under the lock), and says so."""
    from rebuild.store.store import Store

    target = tmp_path / "new" / "venv"
    target.parent.mkdir()
    store = Store.unmanaged(target)
    with store.lock("tfrebuild apply (killed by the test)"):
        (store.make_dir(store.staging_root / "apply-x") / "env" / "bin").mkdir(parents=True)
    run = tfr(kit_env, "status", "--env", target, "--json")
    assert run.code == 0 and "Traceback" not in run.text, str(run)
    assert run.json()["managed"] is False and "killed" in run.json()["recovered"], run.json()
    assert not os.path.lexists(state_of(target)) and not os.path.lexists(target)
