"""End-to-end tests of ``tfrebuild upgrade`` against real venvs made from the kit's fake wheels.

Every upgrade runs the real CLI in a subprocess (``python -m rebuild upgrade --offline
--find-links <kit index>``) under ``kit_env``.  stdin is never a terminal here, so
``--yes`` is passed unless the test is about the confirmation.

What is checked, beyond "it worked": before the swap the environment stays
byte-for-byte as it was (every entry's size, mtime and link-ness, and the
top folder's inode), whatever goes wrong -- a failing smoke check, or the process
SIGKILLing itself at a fault point (``TFREBUILD_FAULT``, see ``rebuild.store.store.fault_point``);
after the swap the path always holds one complete environment, and the next run
finishes the interrupted operation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Callable

import pytest
from tests.kit.cli import CliRun as Run, run_cli, tree_state

import rebuild
from tests.kit import releases

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

PACKAGE_DIR = os.path.dirname(os.path.abspath(rebuild.__file__)) + os.sep
CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]

VERSIONS = """
import json, sys
import numpy, scipy, tensorflow
print(json.dumps({"tensorflow": tensorflow.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
                  "total": float(tensorflow.reduce_sum(tensorflow.constant([1.0, 2.0]))), "prefix": sys.prefix}))
"""


# --------------------------------------------------------------------------- helpers


def state_dir(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def site_packages(env: Path) -> Path:
    (sp,) = env.glob("lib/python3.*/site-packages")
    return sp


def tf_dist_infos(env: Path) -> list[str]:
    return sorted(p.name for p in site_packages(env).glob("tensorflow_cpu-*.dist-info"))


def leftovers(env: Path) -> list[str]:
    """Staging folders and journal left in the state folder (both must be gone when idle)."""
    state = state_dir(env)
    found = [f"staging/{p.name}" for p in (state / "staging").glob("*")] if (state / "staging").is_dir() else []
    if (state / "journal.json").exists():
        found.append("journal.json")
    return found


def store_toml(env: Path) -> dict:
    return tomllib.loads((state_dir(env) / "store.toml").read_text())


def assert_clean_error(res: Run, *fragments: str) -> None:
    assert res.code not in (0, -9), res.out
    assert "error:" in res.err, res.err
    assert "hint:" in res.err, res.err
    assert "Traceback" not in res.err, res.err
    for fragment in fragments:
        assert fragment in res.err, (fragment, res.err)


@pytest.fixture
def cli(kit_env: dict[str, str], kit_index: Path, tmp_path: Path) -> Callable[..., Run]:
    """``cli(command, env, *args, find_links=None, fault=None, drop=())`` runs tfrebuild offline.

    ``find_links`` defaults to the kit index; ``fault`` sets ``TFREBUILD_FAULT``; ``drop``
    removes variables from ``kit_env`` (e.g. ``UV_FIND_LINKS`` to hide the kit index).
    """

    def _run(
        command: str,
        env: Path | str,
        *args: str,
        find_links: list[Path] | None = None,
        fault: str | None = None,
        drop: tuple[str, ...] = (),
    ) -> Run:
        links = [arg for folder in find_links or [kit_index] for arg in ("--find-links", folder)]
        overrides = {**{key: None for key in drop}, "TFREBUILD_FAULT": fault or None}
        return run_cli(kit_env, command, "--env", env, "--offline", *links, *args, overrides=overrides, cwd=tmp_path)

    return _run


@pytest.fixture
def classic(make_venv, tmp_path: Path) -> Path:
    """A fresh uv-made venv (alone in its folder) with the classic TF 2.15 + scipy 1.11 + numpy 1.24 set."""
    return make_venv(tmp_path / "envs" / "tf", CLASSIC)


def versions_at(venv_run, env: Path) -> dict:
    proc = venv_run(env, VERSIONS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the happy path


def test_upgrade_swaps_in_a_new_env_and_keeps_the_old_one(classic: Path, cli, venv_run) -> None:
    env = classic
    before = tree_state(env)
    old_inode = os.lstat(env).st_ino

    res = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["ok"] is True and doc["changed"] is True
    assert (doc["generation"], doc["previous"]) == (2, 1)
    assert doc["recovered"] is None
    assert doc["plan"]["tf_new"] == "2.18.0"
    assert doc["checks"] and all(c["ok"] for c in doc["checks"]), doc["checks"]
    assert doc["after_swap"] and all(c["ok"] for c in doc["after_swap"]), doc["after_swap"]

    # The env path now holds the new env, and it works there.
    got = versions_at(venv_run, env)
    assert (got["tensorflow"], got["numpy"], got["scipy"], got["total"]) == ("2.18.0", "1.26.4", "1.11.4", 3.0)
    assert Path(got["prefix"]) == env
    assert tf_dist_infos(env) == ["tensorflow_cpu-2.18.0.dist-info"]

    # It was swapped in (new inode); the old tree lives on, untouched, as generation 1.
    state = state_dir(env)
    gen1_env = state / "generations" / "1" / "env"
    assert os.lstat(env).st_ino != old_inode
    assert os.lstat(gen1_env).st_ino == old_inode
    assert tree_state(gen1_env) == before, "the old env must be kept byte-for-byte"
    assert tf_dist_infos(gen1_env) == ["tensorflow_cpu-2.15.1.dist-info"]

    gen2 = state / "generations" / "2"
    for name in ("pylock.toml", "profile.toml", "meta.toml"):
        assert (gen2 / name).is_file(), name
    assert not (gen2 / "env").exists(), "the current generation's tree is the env itself"
    meta = tomllib.loads((gen2 / "meta.toml").read_text())
    assert meta["tensorflow"] == "tensorflow-cpu 2.18.0"
    assert int(meta["inode"]) == os.lstat(env).st_ino
    assert 'name = "tensorflow-cpu"' in (gen2 / "pylock.toml").read_text()
    assert (store_toml(env)["current"], store_toml(env)["previous"]) == (2, 1)
    assert leftovers(env) == []

    # Upgrading again to the same target has nothing to do and makes no generation.
    again = cli("upgrade", env, "--to", "2.18", "--yes")
    assert again.code == 0, again.err
    assert "Nothing to do" in again.out
    assert not (state / "generations" / "3").exists()
    assert store_toml(env)["current"] == 2
    assert leftovers(env) == []


def test_human_output(classic: Path, cli) -> None:
    res = cli("upgrade", classic, "--to", "2.18", "--yes")
    assert res.code == 0, res.err
    assert "tensorflow-cpu 2.15.1 → 2.18.0" in res.out
    assert "Swapped in atomically" in res.out
    assert "to generation 2" in res.out and "Generation 1 is kept" in res.out
    assert "FAIL" not in res.out
    assert "Traceback" not in res.err


@pytest.mark.slow
def test_pip_made_env_with_absolute_shebangs(make_venv, tmp_path: Path, cli, kit_env: dict[str, str]) -> None:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC, creator="venv")
    script = env / "bin" / "saved_model_cli"
    assert script.read_text().startswith(f"#!{env}/bin/python"), "premise: pip writes absolute shebangs"

    res = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert res.code == 0, res.err
    assert res.json()["generation"] == 2

    def run(*cmd):
        return subprocess.run(
            [str(c) for c in cmd], env=dict(kit_env), capture_output=True, text=True, timeout=60, cwd=tmp_path
        )

    proc = run(env / "bin" / "saved_model_cli")
    assert proc.returncode == 0, proc.stderr
    assert "fake tensorflow 2.18.0" in proc.stdout
    proc = run(env / "bin" / "pip", "--version")
    assert proc.returncode == 0, proc.stderr
    assert str(env / "lib") in proc.stdout, proc.stdout
    proc = run(env / "bin" / "python", "-c", "import scipy, numpy; print(numpy.__version__)")
    assert proc.returncode == 0 and proc.stdout.strip() == "1.26.4", proc


# --------------------------------------------------------------------------- failures before the swap


@pytest.fixture(scope="module")
def broken_index(tmp_path_factory, kit_index: Path) -> Path:
    """The kit's wheels, except that tensorflow-cpu 2.21.0 fails to import."""
    dest = tmp_path_factory.mktemp("broken-index")
    for wheel in kit_index.glob("*.whl"):
        if not wheel.name.startswith("tensorflow_cpu-2.21.0-"):
            shutil.copyfile(wheel, dest / wheel.name)
    (good,) = [r for r in releases("tensorflow-cpu") if r.version == "2.21.0"]
    modules = dict(good.modules)
    modules["tensorflow/__init__.py"] = (
        'raise ImportError("fake broken tensorflow: libtensorflow_framework.so.2: cannot open shared object file")\n'
    )
    dataclasses.replace(good, modules=modules).build(dest)
    return dest


def test_failing_smoke_check_leaves_the_env_untouched(classic: Path, cli, broken_index: Path) -> None:
    env = classic
    before = tree_state(env)
    # Hide the kit index (kit_env's UV_FIND_LINKS) so only the broken tensorflow-cpu 2.21.0 exists.
    res = cli(
        "upgrade", env, "--to", "2.21.0", "--yes", find_links=[broken_index], drop=("UV_FIND_LINKS", "PIP_FIND_LINKS")
    )
    assert res.code == 1, (res.out, res.err)
    assert "error:" in res.err and "hint:" in res.err
    assert "failed its checks before the swap" in res.err
    assert "tensorflow 2.21.0 imports and computes" in res.err, "the failing check must be named"
    assert "fake broken tensorflow" in res.err, "the check's own output must be shown"
    frames = [line for line in res.err.splitlines() if line.strip().startswith("File ")]
    assert not [f for f in frames if PACKAGE_DIR in f], "no traceback from tfrebuild itself"
    assert tree_state(env) == before
    assert leftovers(env) == []
    assert not (state_dir(env) / "generations" / "2").exists()


@pytest.mark.parametrize("point", ["upgrade.built", "upgrade.checked"])
def test_kill_before_the_swap_leaves_the_env_untouched(point: str, classic: Path, cli) -> None:
    env = classic
    before = tree_state(env)
    res = cli("upgrade", env, "--to", "2.18", "--yes", fault=point)
    assert res.code == -9, (res.out, res.err)
    assert tree_state(env) == before
    plan = cli("plan", env, "--to", "2.18", "--json")
    assert plan.code == 0, plan.err
    assert plan.json()["plan"]["tf_old"] == "2.15.1"
    assert tree_state(env) == before


@pytest.mark.parametrize("point", ["upgrade.built", "upgrade.checked"])
def test_next_upgrade_recovers_from_a_kill_before_the_swap(point: str, classic: Path, cli, venv_run) -> None:
    env = classic
    before = tree_state(env)
    assert cli("upgrade", env, "--to", "2.18", "--yes", fault=point).code == -9
    assert leftovers(env), "premise: the killed run left its staging folder and journal"
    assert tree_state(env) == before

    res = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["recovered"], doc
    assert doc["changed"] is True
    assert versions_at(venv_run, env)["tensorflow"] == "2.18.0"
    assert leftovers(env) == []


# --------------------------------------------------------------------------- kills around the swap


@pytest.mark.parametrize(
    "point, at_env",
    [
        ("upgrade.journal-written", "2.15.1"),
        ("upgrade.swapped", "2.18.0"),
        ("upgrade.old-moved", "2.18.0"),
        ("upgrade.recorded", "2.18.0"),
    ],
)
def test_kill_around_the_swap_leaves_one_complete_env(point: str, at_env: str, classic: Path, cli, venv_run) -> None:
    env = classic
    res = cli("upgrade", env, "--to", "2.18", "--yes", fault=point)
    assert res.code == -9, (res.out, res.err)

    # One complete env at the path: what imports is what its metadata says, nothing mixed.
    got = versions_at(venv_run, env)
    assert got["tensorflow"] == at_env
    assert tf_dist_infos(env) == [f"tensorflow_cpu-{at_env}.dist-info"]
    assert got["numpy"] == ("1.24.3" if at_env == "2.15.1" else "1.26.4")

    # The next run finishes (or undoes) the interrupted operation, then does its own work.
    res = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["recovered"], doc
    if at_env == "2.18.0":
        assert "finished interrupted upgrade to generation 2" in doc["recovered"]
        assert doc["changed"] is False  # already at the target
    else:
        assert "rolled back" in doc["recovered"]
        assert (doc["changed"], doc["generation"]) == (True, 2)
    assert versions_at(venv_run, env)["tensorflow"] == "2.18.0"
    assert (store_toml(env)["current"], store_toml(env)["previous"]) == (2, 1)
    assert tf_dist_infos(state_dir(env) / "generations" / "1" / "env") == ["tensorflow_cpu-2.15.1.dist-info"]
    meta = tomllib.loads((state_dir(env) / "generations" / "2" / "meta.toml").read_text())
    assert int(meta["inode"]) == os.lstat(env).st_ino
    assert leftovers(env) == []


def test_generation_finished_by_recovery_has_a_profile(classic: Path, cli) -> None:
    env = classic
    assert cli("upgrade", env, "--to", "2.18", "--yes", fault="upgrade.swapped").code == -9
    res = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert res.code == 0, res.err
    assert res.json()["recovered"]
    gen2 = state_dir(env) / "generations" / "2"
    assert (gen2 / "meta.toml").is_file() and (gen2 / "pylock.toml").is_file()
    assert (gen2 / "profile.toml").is_file()


# --------------------------------------------------------------------------- locking, confirmation, no-ops


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rebuild.store.store import Store
    env = Path(sys.argv[1])
    s = Store.open(env) or Store.unmanaged(env)
    cm = s.lock("tfrebuild upgrade (test holder)")
    cm.__enter__()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_concurrent_upgrade_is_refused_at_once(classic: Path, cli, kit_env: dict[str, str]) -> None:
    env = classic
    before = tree_state(env)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(env)],
        env=dict(kit_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready, "the lock holder did not start"
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read() if holder.poll() is not None else ""
        res = cli("upgrade", env, "--to", "2.18", "--yes")
        assert_clean_error(res, f"pid {holder.pid}", "tfrebuild upgrade (test holder)")
        assert res.seconds < 5, f"a busy lock must be reported at once, took {res.seconds:.1f}s"
        assert tree_state(env) == before
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # Once the holder is gone, the upgrade goes through.
    res = cli("upgrade", env, "--to", "2.18", "--yes")
    assert res.code == 0, res.err


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_without_yes_and_without_a_terminal_it_refuses(extra: list[str], classic: Path, cli) -> None:
    env = classic
    before = tree_state(env)
    res = cli("upgrade", env, "--to", "2.18", *extra)
    assert_clean_error(res, "needs confirmation", "--yes")
    if extra:
        assert res.json()["ok"] is False
    assert tree_state(env) == before
    assert not state_dir(env).exists()
    assert sorted(os.listdir(env.parent)) == [env.name]


def test_nothing_to_do(make_venv, tmp_path: Path, cli) -> None:
    env = make_venv(tmp_path / "envs" / "tf", ["tensorflow-cpu==2.16.1"])
    before = tree_state(env)
    res = cli("upgrade", env, "--to", "2.16", "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["changed"] is False and doc["generation"] is None
    assert doc["plan"]["changes"] == []
    text = cli("upgrade", env, "--to", "2.16", "--yes")
    assert text.code == 0, text.err
    assert "Nothing to do" in text.out
    assert tree_state(env) == before
    assert not state_dir(env).exists(), "an env tfrebuild did not change is not adopted"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--to", "9.9"], "No tensorflow-cpu release matches --to 9.9"),
        (["--to", "banana"], "'banana' is not a TensorFlow version"),
        (["--to", "2.18", "--strategy", "weird"], "Unknown strategy"),
    ],
)
def test_bad_target(args: list[str], fragment: str, classic: Path, cli) -> None:
    env = classic
    before = tree_state(env)
    res = cli("upgrade", env, *args, "--yes")
    assert_clean_error(res, fragment)
    assert tree_state(env) == before
    assert not state_dir(env).exists(), "no state folder may be left behind"
    assert sorted(os.listdir(env.parent)) == [env.name]


def test_bad_target_on_a_managed_env(classic: Path, cli) -> None:
    env = classic
    assert cli("upgrade", env, "--to", "2.16", "--yes").code == 0
    before, store_before = tree_state(env), store_toml(env)
    res = cli("upgrade", env, "--to", "9.9", "--yes")
    assert_clean_error(res, "No tensorflow-cpu release matches --to 9.9")
    assert tree_state(env) == before
    assert store_toml(env) == store_before
    assert leftovers(env) == []


def test_folder_that_is_not_an_env(tmp_path: Path, cli) -> None:
    folder = tmp_path / "envs" / "notenv"
    folder.mkdir(parents=True)
    (folder / "README").write_text("not a venv\n")
    res = cli("upgrade", folder, "--to", "2.18", "--yes")
    assert_clean_error(res, "is not a Python environment")
    assert sorted(os.listdir(folder.parent)) == ["notenv"]
    assert os.listdir(folder) == ["README"]


def test_env_that_does_not_exist(tmp_path: Path, cli) -> None:
    missing = tmp_path / "envs" / "nothing"
    res = cli("upgrade", missing, "--to", "2.18", "--yes")
    assert_clean_error(res, "does not exist")
    assert not (tmp_path / "envs").exists()
