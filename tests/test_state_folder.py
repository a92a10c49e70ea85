"""Issue 14, points 2 and 3: the state folder is owned and unambiguous; ``bundle -o`` writes only into its own folder.

* ``venv`` and ``.venv`` side by side have two state folders (``.venv.tfrebuild``, ``..venv.tfrebuild``);
  a folder of the old naming moves to its owner's name; one that names another env is refused.
* nothing in the state folder is followed through a symlink: a planted ``lock`` link is never truncated;
* the lock cannot be stolen by deleting its file; a busy lock exits 1;
* an env reached through a symlink is the env of its real path;
* ``bundle`` refuses a used folder and deletes nothing; it updates its own earlier folder.

Stores are made with the store's own calls on small fake trees (``bin/python`` present, so the CLI's
``--env`` accepts them); the commands run as the real CLI (``python -m rebuild``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tests.kit.cli import run_cli

from rebuild.errors import UserError
from rebuild.env import profile as prof
from rebuild.store.journal import new_op_id
from rebuild.store.location import legacy_state_dir, state_dir
from rebuild.store.records import Generation
from rebuild.store.store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the store needs Linux (flock, /proc)")

ROOT = Path(__file__).resolve().parent.parent


def make_tree(path: Path, label: str) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("#!/bin/sh\n")
    (path / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (path / "MARKER").write_text(label)
    return path


def managed(env: Path, generations: int = 3) -> Store:
    """A store for a fake tree at ``env`` with ``generations`` generations (the last one current)."""
    make_tree(env, "gen1")
    store = Store.unmanaged(env)
    store.adopt({"command": "adopted", "tensorflow": "tensorflow-cpu 2.15.1", "python": "3.11.7"})
    for n in range(2, generations + 1):
        with store.lock(f"test upgrade #{n}"):
            tree = make_tree(store.staging_dir(new_op_id("upgrade")) / "env", f"gen{n}")
            store.switch_to(tree, Generation.new(n, command=f"test upgrade #{n}", tensorflow=f"tensorflow-cpu 2.{n}"))
    for n in range(1, generations + 1):  # every generation tfrebuild records has its profile
        (store.generation_dir(n) / "profile.toml").write_text(prof.dumps(prof.Profile()))
    return store


def tfr(kit_env, *args, timeout: float = 60):
    return run_cli(kit_env, *[str(a) for a in args], cwd=ROOT, timeout=timeout)


def clean_error(run, *needles: str, code: int | None = None):
    assert run.code > 0 if code is None else run.code == code, str(run)
    assert "Traceback" not in run.text, str(run)
    for needle in needles:
        assert needle.lower() in run.err.lower(), f"{needle!r} not in stderr\n{run}"
    return run


def listing(folder: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under ``folder`` (not followed): inode, size, and a file's bytes."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            body = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else None
            found[os.path.relpath(path, folder)] = (st.st_ino, st.st_size, body)
    return found


# --------------------------------------------------------------------------- venv and .venv side by side


def test_venv_and_dot_venv_have_their_own_state_folders(tmp_path, kit_env):
    plain = managed(tmp_path / "venv", 3)
    dotted = managed(tmp_path / ".venv", 2)
    assert plain.state == tmp_path / ".venv.tfrebuild" and dotted.state == tmp_path / "..venv.tfrebuild"
    plain_before = listing(plain.state / "generations")

    gc = tfr(kit_env, "gc", "--env", tmp_path / ".venv", "--keep", "1", "--yes", "--json")
    assert gc.code == 0, str(gc)
    assert listing(plain.state / "generations") == plain_before  # venv's generations, its adopted 1 included
    assert (plain.generation_dir(1) / "env" / "MARKER").read_text() == "gen1"

    hist = tfr(kit_env, "history", "--env", tmp_path / ".venv", "--json")
    assert hist.code == 0, str(hist)
    assert [r["number"] for r in hist.json()["rows"]] == [1, 2]  # not venv's three
    status = tfr(kit_env, "status", "--env", tmp_path / ".venv", "--json").json()
    assert status["current"] == 2 and status["state_dir"] == str(tmp_path / "..venv.tfrebuild")
    status = tfr(kit_env, "status", "--env", tmp_path / "venv", "--json").json()
    assert status["current"] == 3 and status["state_dir"] == str(tmp_path / ".venv.tfrebuild")


def test_old_naming_moves_to_its_owner(tmp_path, kit_env):
    """``.venv``'s state of the old naming (``.venv.tfrebuild``, recorded env ``.venv``) moves to
    ``..venv.tfrebuild`` when either env is opened; ``venv`` is then not managed."""
    dotted = managed(tmp_path / ".venv", 2)
    os.rename(dotted.state, legacy_state_dir(dotted.env))
    assert legacy_state_dir(dotted.env) == tmp_path / ".venv.tfrebuild"
    make_tree(tmp_path / "venv", "other")
    status = tfr(kit_env, "status", "--env", tmp_path / "venv", "--json")
    assert status.code == 0 and status.json()["managed"] is False, str(status)
    assert (tmp_path / "..venv.tfrebuild" / "store.toml").is_file()
    assert not (tmp_path / ".venv.tfrebuild").exists()
    assert Store.open(tmp_path / ".venv").current_number == 2


def test_state_folder_of_another_env_is_refused(tmp_path, kit_env):
    store = managed(tmp_path / "a" / "tf", 3)
    make_tree(tmp_path / "b" / "tf", "b")
    copied = state_dir(tmp_path / "b" / "tf")
    subprocess.run(["cp", "-a", str(store.state), str(copied)], check=True)
    before = listing(copied)
    for args in (["status"], ["history"], ["gc", "--keep", "1", "--yes"], ["rollback", "--yes"]):
        run = tfr(kit_env, *args, "--env", tmp_path / "b" / "tf")
        clean_error(run, f"belongs to {tmp_path / 'a' / 'tf'}", code=1)
    assert listing(copied) == before
    with pytest.raises(UserError, match="belongs to"):
        Store.open(tmp_path / "b" / "tf")


def test_env_through_a_symlink_is_the_real_env(tmp_path, kit_env):
    store = managed(tmp_path / "real", 2)
    (tmp_path / "link").symlink_to(store.env)
    status = tfr(kit_env, "status", "--env", tmp_path / "link", "--json")
    assert status.code == 0, str(status)
    doc = status.json()
    assert doc["managed"] is True and doc["current"] == 2 and doc["state_dir"] == str(store.state)
    assert not (tmp_path / ".link.tfrebuild").exists()
    hist = tfr(kit_env, "history", "--env", tmp_path / "link", "--json")
    assert [r["number"] for r in hist.json()["rows"]] == [1, 2]


# --------------------------------------------------------------------------- symlinks and the lock


def test_planted_lock_symlink_truncates_nothing(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 3)
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    store.lock_path.unlink()
    store.lock_path.symlink_to(victim)
    # Something to recover, so that even the readers try to take the lock.
    (store.staging_root / "upgrade-left-over").mkdir()
    # Issue 23: a link anywhere in the state folder is refused by every command before anything is read.
    for args in (["status", "--json"], ["history", "--json"], ["rollback", "--yes"], ["gc", "--keep", "1", "--yes"]):
        run = tfr(kit_env, *args, "--env", store.env)
        clean_error(run, f"{store.lock_path} is a symbolic link", code=1)
    assert victim.read_text() == "do not truncate me\n"
    assert os.path.islink(store.lock_path)
    assert tomllib.loads(store.store_file.read_text())["current"] == 3


def test_symlinked_folder_in_the_state_folder_is_not_written_through(tmp_path):
    store = managed(tmp_path / "tf", 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rmdir(store.staging_root)
    store.staging_root.symlink_to(outside)
    with pytest.raises(UserError, match="symbolic link"):  # issue 23: the lock's check refuses it first
        with store.lock("test"):
            store.staging_dir(new_op_id("upgrade"))
    (store.generations_dir / "9").symlink_to(outside)
    with pytest.raises(UserError, match="symbolic link"):
        store.write_meta(Generation.new(9, command="x"))
    assert os.listdir(outside) == []


def test_readers_do_not_write_the_lock_when_idle(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 2)
    before = os.stat(store.lock_path)
    os.chmod(store.lock_path, 0o444)
    for args in (["status", "--json"], ["history", "--json"]):
        run = tfr(kit_env, *args, "--env", store.env)
        assert run.code == 0, str(run)
    after = os.stat(store.lock_path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def hold(env: Path, kit_env) -> subprocess.Popen:
    code = (
        "import sys, time; from pathlib import Path; from rebuild.store.store import Store; "
        f"s = Store.open(Path({str(env)!r})); cm = s.lock('tfrebuild upgrade (test holder)'); cm.__enter__(); "
        "s.begin({'op': 'upgrade', 'id': 'upgrade-held', 'step': 'building', "
        "'staging': str(s.staging_dir('upgrade-held'))}); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=kit_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert "locked" in line, proc.stderr.read()
    return proc


def test_deleting_the_held_lock_file_lets_no_second_writer_in(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 3)
    holder = hold(store.env, kit_env)
    try:
        busy = tfr(kit_env, "rollback", "--env", store.env, "--yes")
        clean_error(busy, f"pid {holder.pid}", code=1)  # a busy lock exits 1
        store.lock_path.unlink()
        for args in (["rollback", "--yes"], ["gc", "--keep", "1", "--yes"]):
            run = tfr(kit_env, *args, "--env", store.env)
            clean_error(run, "another", "lock", code=1)
        status = tfr(kit_env, "status", "--env", store.env, "--json")
        assert status.code == 0, str(status)
        # The live operation was not "recovered": its journal and staging are still there.
        assert store.journal_path.is_file() and (store.staging_root / "upgrade-held").is_dir()
        assert Store.open(store.env).current_number == 3
        with pytest.raises(UserError, match="holds the tfrebuild lock"):
            with Store.open(store.env).lock("test"):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
        holder.stderr.close()
    # Once the holder is gone its operation is recovered as usual.
    assert "interrupted upgrade" in Store.open(store.env).recover()
    assert not store.journal_path.exists() and not (store.staging_root / "upgrade-held").exists()


# --------------------------------------------------------------------------- bundle -o DIR


@pytest.fixture
def bundle_profile(make_venv, require_python, kit_os_env, tmp_path):
    from rebuild.commands import snapshot

    require_python("3.11")
    env = make_venv(tmp_path / "src" / "venv", ["tensorflow-cpu==2.15.1", "numpy==1.24.3"], python="3.11")
    return snapshot.run(env, tmp_path / "profiles" / "src.toml").written_to


def test_bundle_into_a_used_folder_refuses_and_deletes_nothing(bundle_profile, kit_index, tmp_path):
    from rebuild.commands import bundle as bundling

    out = tmp_path / "wheels"
    out.mkdir()
    for name in ("numpy-1.24.3-py3-none-any.whl", "mine-1.0-py3-none-any.whl", "other-2.0.tar.gz"):
        (out / name).write_bytes(b"someone else's " + name.encode())
    before = listing(out)
    with pytest.raises(UserError, match="not a bundle"):
        bundling.run(bundle_profile, out, find_links=[str(kit_index)], offline=True)
    assert listing(out) == before


def test_bundle_updates_its_own_folder_and_keeps_strangers_out(bundle_profile, kit_index, tmp_path):
    from rebuild.commands import bundle as bundling

    out = tmp_path / "b"
    first = bundling.run(bundle_profile, out, find_links=[str(kit_index)], offline=True)
    marker = json.loads((out / bundling.MARKER).read_text())
    assert set(marker["files"]) == {f.filename for f in first.files}
    again = bundling.run(bundle_profile, out, find_links=[str(kit_index)], offline=True)
    assert {f.how for f in again.files} == {"present"}
    # A file tfrebuild did not write: refused, nothing deleted or overwritten.
    (out / "notes.whl").write_bytes(b"mine")
    before = listing(out)
    with pytest.raises(UserError, match="did not write"):
        bundling.run(bundle_profile, out, find_links=[str(kit_index)], offline=True)
    assert listing(out) == before
    # A bundle made before the marker existed still counts as one (by its SHA256SUMS).
    (out / "notes.whl").unlink()
    (out / bundling.MARKER).unlink()
    lock = tomllib.loads((out / "pylock.toml").read_text())
    assert lock["created-by"] == "tfrebuild bundle"
    third = bundling.run(bundle_profile, out, find_links=[str(kit_index)], offline=True)
    assert {f.how for f in third.files} == {"present"} and (out / bundling.MARKER).is_file()


def test_state_folder_is_ignored_by_git_and_a_planted_gitignore_link_is_not_followed(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    store = managed(project / ".venv", generations=2)
    (project / ".gitignore").write_text(".venv/\n")  # what uv init writes; the state folder is not in it
    status = subprocess.run(
        ["git", "-C", str(project), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status.strip() == "?? .gitignore", status  # nothing of ..venv.tfrebuild/
    assert (store.state / ".gitignore").read_text().splitlines()[-1] == "*"

    other = managed(tmp_path / "env2", generations=1)
    (other.state / ".gitignore").unlink()
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    os.symlink(target, other.state / ".gitignore")
    with pytest.raises(UserError, match="is a symbolic link"):  # issue 23: a link there is refused at once
        with other.lock("test"):
            pass
    assert target.read_text() == "keep me\n" and os.path.islink(other.state / ".gitignore")
