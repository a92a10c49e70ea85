"""rebuild.store: generations, lock, journal, crash recovery, safe deletion (real folders)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from rebuild.errors import UserError
from rebuild.store.disk import exclusive_usage
from rebuild.store.faults import FAULT_ENV
from rebuild.store.journal import new_op_id
from rebuild.store.location import state_dir
from rebuild.store.records import Generation
from rebuild.store.operations import Swapped
from rebuild.store.store import Store

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def make_tree(path: Path, label: str) -> Path:
    """A fake environment tree whose MARKER file says which generation it is."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("#!/bin/sh\n")
    (path / "lib" / "site-packages").mkdir(parents=True)
    (path / "lib" / "site-packages" / "tf.py").write_text(f"VERSION = {label!r}\n")
    (path / "MARKER").write_text(label)
    return path


def marker(path: Path) -> str:
    return (path / "MARKER").read_text()


def adopt(tmp_path: Path) -> Store:
    env = make_tree(tmp_path / "tf", "gen1")
    store = Store.unmanaged(env)
    store.adopt({"command": "tfrebuild adopt", "tensorflow": "tensorflow-cpu 2.15.1", "python": "3.11.7"})
    return store


def upgrade(store: Store, label: str | None = None) -> Swapped:
    n = store.next_number()
    with store.lock(f"tfrebuild upgrade #{n}"):
        op = new_op_id("upgrade")
        tree = make_tree(store.staging_dir(op) / "env", label or f"gen{n}")
        return store.switch_to(tree, Generation.new(n, command="tfrebuild upgrade", tensorflow=f"tensorflow-cpu 2.{n}"))


def assert_consistent(store: Store) -> None:
    """No journal or staging left; every generation's tree is where and what the store says."""
    store = Store.open(store.env)
    assert store.journal() is None
    assert not store.journal_path.exists()
    assert store.leftover_staging() == []
    cur = store.current
    env_stat = os.lstat(store.env)
    assert (env_stat.st_dev, env_stat.st_ino) == (cur.device, cur.inode)
    assert marker(store.env) == f"gen{cur.number}"
    assert not (store.generation_dir(cur.number) / "env").exists()
    for gen in store.generations():
        tree = gen.path(store)
        assert marker(tree) == f"gen{gen.number}", gen
        assert os.lstat(tree).st_ino == gen.inode
    if store.previous_number is not None:
        assert store.previous.path(store).is_dir()


def run_py(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- layout, adopt, upgrade, rollback


def test_state_dir_is_a_hidden_sibling(tmp_path: Path) -> None:
    assert state_dir(tmp_path / "tf") == tmp_path / ".tf.tfrebuild"
    assert state_dir(tmp_path / ".venv") == tmp_path / "..venv.tfrebuild"  # never venv's .venv.tfrebuild
    assert state_dir(tmp_path / "tf" / "") == tmp_path / ".tf.tfrebuild"


def test_unmanaged_env_opens_as_none(tmp_path: Path) -> None:
    make_tree(tmp_path / "tf", "gen1")
    assert Store.open(tmp_path / "tf") is None


def test_create_adopts_env_as_generation_1(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    env = tmp_path / "tf"
    assert store.state == tmp_path / ".tf.tfrebuild"
    assert store.current_number == 1 and store.previous is None
    gen = store.current
    assert (gen.inode, gen.device) == (os.lstat(env).st_ino, os.lstat(env).st_dev)
    assert gen.tensorflow == "tensorflow-cpu 2.15.1" and gen.python == "3.11.7"
    assert gen.path(store) == env
    assert marker(env) == "gen1"  # nothing written into the user's environment
    assert sorted(p.name for p in env.iterdir()) == ["MARKER", "bin", "lib"]

    data = tomllib.loads((store.state / "store.toml").read_text())
    parent = os.stat(tmp_path)
    assert data == {
        "schema": 1,
        "env": str(env),
        "current": 1,
        "parent_device": parent.st_dev,
        "parent_inode": parent.st_ino,
    }
    meta = tomllib.loads((store.state / "generations" / "1" / "meta.toml").read_text())
    assert meta["number"] == 1 and meta["inode"] == gen.inode and meta["created"].endswith("Z")

    reopened = Store.open(env)
    assert reopened.current == gen
    with pytest.raises(UserError, match="already managed"):
        Store.unmanaged(env).adopt()


def test_create_refuses_missing_and_resolves_symlinked_env(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Store.unmanaged(tmp_path / "nope").adopt()
    real = make_tree(tmp_path / "real", "gen1")
    (tmp_path / "link").symlink_to(real)
    store = Store.unmanaged(tmp_path / "link")  # the env its real path names
    assert store.env == real and store.state == tmp_path / ".real.tfrebuild"
    store.adopt()
    assert Store.open(tmp_path / "link").current_number == 1 and not (tmp_path / ".link.tfrebuild").exists()


def test_switch_to_records_new_generation_and_parks_old(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    gen1 = store.current
    gen2 = upgrade(store).generation

    assert gen2.number == 2 and store.current_number == 2 and store.previous_number == 1
    assert marker(store.env) == "gen2"
    parked = store.state / "generations" / "1" / "env"
    assert marker(parked) == "gen1" and os.lstat(parked).st_ino == gen1.inode
    assert os.lstat(store.env).st_ino == gen2.inode
    assert [g.number for g in store.generations()] == [1, 2]
    assert store.generation(2).tensorflow == "tensorflow-cpu 2.2"
    assert list(store.staging_root.iterdir()) == []
    assert store.next_number() == 3
    assert_consistent(store)


def test_rollback_twice_returns_to_start(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    upgrade(store)
    upgrade(store)  # current 3, previous 2
    inodes = {g.number: g.inode for g in store.generations()}

    back = store.rollback_to().generation  # to the previous one (2)
    assert back.number == 2 and store.current_number == 2 and store.previous_number == 3
    assert marker(store.env) == "gen2"
    assert marker(store.state / "generations" / "3" / "env") == "gen3"
    assert_consistent(store)

    again = store.rollback_to().generation  # cd - : back to 3
    assert again.number == 3 and store.current_number == 3 and store.previous_number == 2
    assert marker(store.env) == "gen3"
    assert_consistent(store)

    store.rollback_to(1)  # any generation by number
    assert (store.current_number, store.previous_number) == (1, 3)
    assert os.lstat(store.env).st_ino == inodes[1]
    assert sorted(p.name for p in (store.state / "generations").iterdir()) == ["1", "2", "3"]
    assert_consistent(store)


def test_switch_and_rollback_report_the_exchange_method_that_ran(tmp_path: Path, monkeypatch) -> None:
    from rebuild.store import swap

    store = adopt(tmp_path)
    assert upgrade(store).method in ("renameat2", "rename")
    monkeypatch.setattr(swap, "_load_renameat2", lambda: None)  # as on a system without renameat2
    assert store.rollback_to().method == "rename"
    assert marker(store.env) == "gen1"
    assert_consistent(store)


def test_rollback_errors(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    with pytest.raises(UserError, match="no previous generation"):
        store.rollback_to()
    upgrade(store)
    with pytest.raises(UserError, match="already the current"):
        store.rollback_to(2)
    with pytest.raises(UserError, match="no generation 7"):
        store.rollback_to(7)


def test_generation_lookup_errors(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    with pytest.raises(UserError, match="no generation 5"):
        store.generation(5)


def test_env_replaced_outside_tfrebuild_is_not_moved(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    upgrade(store)
    os.rename(store.env, tmp_path / "moved-away")
    make_tree(store.env, "hand-made")
    with pytest.raises(UserError, match="replaced or recreated outside tfrebuild"):
        store.rollback_to()
    assert marker(store.env) == "hand-made"
    assert store.journal() is None


def test_switch_to_requires_tree_in_staging(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    elsewhere = make_tree(tmp_path / "elsewhere", "gen2")
    with pytest.raises(UserError, match="staging"):
        store.switch_to(elsewhere, Generation.new(2, command="x"))
    assert marker(store.env) == "gen1" and marker(elsewhere) == "gen2"


def test_journal_roundtrip_and_atomic_files(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    with pytest.raises(RuntimeError):
        store.begin({"op": "upgrade"})  # needs the lock
    with store.lock("test"):
        j = store.begin({"op": "upgrade", "id": "upgrade-x", "step": "building"})
        assert j["pid"] == os.getpid()
        assert store.journal() == j
        store.update_journal(step="resolved", extra=1)
        assert store.journal()["step"] == "resolved" and store.journal()["extra"] == 1
        store.commit()
        assert store.journal() is None
    leftovers = [p.name for p in store.state.rglob("*.tmp")]
    assert leftovers == []


def test_staging_and_log_paths(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    staging = store.staging_dir("upgrade-1")
    assert staging == store.state / "staging" / "upgrade-1" and staging.is_dir()
    assert store.log_path("upgrade-1") == store.state / "logs" / "upgrade-1.log"
    with pytest.raises(ValueError):
        store.staging_dir("../escape")


# --------------------------------------------------------------------------- lock


def test_second_lock_raises_with_pid_and_command(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    other = Store.open(store.env)
    with store.lock("tfrebuild upgrade --to 2.16"):
        holder = other.lock_holder()
        assert holder["pid"] == os.getpid() and holder["command"] == "tfrebuild upgrade --to 2.16"
        with pytest.raises(UserError) as err:
            with other.lock("tfrebuild rollback"):
                pass
        assert f"pid {os.getpid()}" in err.value.message
        assert "tfrebuild upgrade --to 2.16" in err.value.message
        assert str(store.env) in err.value.message
        assert err.value.hint
        with store.lock("nested"):  # re-entrant for the same object
            pass
        assert store.locked
    assert other.lock_holder() is None
    with other.lock("tfrebuild rollback"):
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_is_taken_over(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    dead = _dead_pid()
    store.lock_path.write_text(json.dumps({"pid": dead, "command": "tfrebuild upgrade", "started": "x"}))
    assert store.lock_holder() is None  # a dead holder is no holder
    with store.lock("tfrebuild status"):
        info = json.loads(store.lock_path.read_text())
        assert info["pid"] == os.getpid() and info["command"] == "tfrebuild status"


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from rebuild.store.store import Store
store = Store.open(Path(sys.argv[1]))
with store.lock("tfrebuild upgrade --to 2.16"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_held_by_child_process_blocks_immediately(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(ROOT)
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(store.env)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        assert store.lock_holder()["pid"] == child.pid
        started = time.monotonic()
        with pytest.raises(UserError) as err:
            with store.lock("tfrebuild rollback"):
                pass
        assert time.monotonic() - started < 1.0
        assert f"pid {child.pid}: tfrebuild upgrade --to 2.16" in err.value.message
        assert f"kill {child.pid}" in err.value.hint
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    # SIGKILL released the flock; the file still names the dead child: a stale lock
    with store.lock("tfrebuild rollback"):
        assert store.lock_holder()["pid"] == os.getpid()


# --------------------------------------------------------------------------- crash recovery

_UPGRADE = """
import sys
from pathlib import Path
from rebuild.store.records import Generation
from rebuild.store.store import Store
store = Store.open(Path(sys.argv[1]))
with store.lock("tfrebuild upgrade (crash test)"):
    tree = Path(sys.argv[2])
    store.begin({"op": "upgrade", "id": tree.parent.name, "step": "building", "staging": str(tree.parent)})
    store.switch_to(tree, Generation.new(int(sys.argv[3]), command="tfrebuild upgrade", tensorflow="tensorflow-cpu 2.16.1"))
print("completed")
"""

_ROLLBACK = """
import sys
from pathlib import Path
from rebuild.store.store import Store
store = Store.open(Path(sys.argv[1]))
store.rollback_to(int(sys.argv[2]))
print("completed")
"""

UPGRADE_POINTS = ["journal-written", "swapped", "old-moved", "recorded"]


@pytest.mark.parametrize("point", UPGRADE_POINTS)
def test_upgrade_crash_is_recovered(tmp_path: Path, point: str) -> None:
    store = adopt(tmp_path)
    op = new_op_id("upgrade")
    tree = make_tree(store.staging_dir(op) / "env", "gen2")
    (store.generation_dir(2)).mkdir()
    (store.generation_dir(2) / "profile.toml").write_text("# written by the caller\n")

    proc = run_py(_UPGRADE, str(store.env), str(tree), "2", TFREBUILD_FAULT=f"upgrade.{point}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "completed" not in proc.stdout
    assert Store.open(store.env).journal()["step"] == point

    message = Store.open(store.env).recover()
    store = Store.open(store.env)
    if point == "journal-written":  # not swapped yet: undone
        assert message.startswith("rolled back interrupted upgrade")
        assert store.current_number == 1 and store.previous_number is None
        assert marker(store.env) == "gen1"
        assert not store.generation_dir(2).exists()
    else:
        assert message == "finished interrupted upgrade to generation 2"
        assert (store.current_number, store.previous_number) == (2, 1)
        assert marker(store.env) == "gen2"
        assert store.current.tensorflow == "tensorflow-cpu 2.16.1"
        assert (store.generation_dir(2) / "profile.toml").exists()
    assert not (store.staging_root / op).exists()
    assert_consistent(store)
    assert store.recover() is None  # idempotent


def test_upgrade_without_fault_completes_in_subprocess(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    tree = make_tree(store.staging_dir(new_op_id("upgrade")) / "env", "gen2")
    proc = run_py(_UPGRADE, str(store.env), str(tree), "2")
    assert proc.returncode == 0 and "completed" in proc.stdout, proc.stderr
    assert Store.open(store.env).recover() is None
    assert_consistent(store)


@pytest.mark.parametrize("point", UPGRADE_POINTS)
def test_rollback_crash_is_recovered(tmp_path: Path, point: str) -> None:
    store = adopt(tmp_path)
    upgrade(store)  # current 2, previous 1

    proc = run_py(_ROLLBACK, str(store.env), "1", TFREBUILD_FAULT=f"rollback.{point}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Store.open(store.env).journal()["op"] == "rollback"

    message = Store.open(store.env).recover()
    store = Store.open(store.env)
    if point == "journal-written":
        assert message.startswith("undid interrupted rollback")
        assert (store.current_number, store.previous_number) == (2, 1)
        assert marker(store.env) == "gen2"
    else:
        assert message == "finished interrupted rollback to generation 1"
        assert (store.current_number, store.previous_number) == (1, 2)
        assert marker(store.env) == "gen1"
    assert_consistent(store)


def test_crash_inside_fallback_swap_is_repaired(tmp_path: Path) -> None:
    """A crash between the fallback's renames leaves E missing; recover() puts it back."""
    from rebuild.store import swap

    store = adopt(tmp_path)
    op = new_op_id("upgrade")
    tree = make_tree(store.staging_dir(op) / "env", "gen2")
    with store.lock("test"):
        store.begin(
            {
                "op": "upgrade",
                "id": op,
                "step": "journal-written",
                "new": 2,
                "old": 1,
                "staging": str(tree.parent),
                "new_tree": str(tree),
                "old_dest": str(store.generation_dir(1) / "env"),
                "new_inode": os.lstat(tree).st_ino,
                "new_device": os.lstat(tree).st_dev,
                "old_inode": store.current.inode,
                "old_device": store.current.device,
                "generation": {"number": 2, "created": "x", "command": "c"},
            }
        )
    os.rename(store.env, swap.tmp_name(store.env))  # fallback step 1, then crash
    assert not store.env.exists()

    message = store.recover()
    assert message.startswith("rolled back interrupted upgrade")
    assert marker(store.env) == "gen1"
    assert_consistent(store)


def test_leftover_staging_is_listed_and_removed(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    make_tree(store.staging_dir("upgrade-old") / "env", "junk")
    assert store.leftover_staging() == [store.staging_root / "upgrade-old"]
    assert "removed leftover staging folder" in store.recover()
    assert store.leftover_staging() == []
    assert marker(store.env) == "gen1"


# --------------------------------------------------------------------------- gc and disk usage


def test_delete_generation_never_follows_symlinks(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    upgrade(store)
    upgrade(store)  # current 3, previous 2, generation 1 parked
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    outside_file = tmp_path / "precious.txt"
    outside_file.write_text("keep me too")
    shared = tmp_path / "shared-blob"
    shared.write_bytes(os.urandom(256 * 1024))
    old_env = store.generation_dir(1) / "env"
    (old_env / "lib" / "link-to-dir").symlink_to(outside)
    (old_env / "lib" / "link-to-file").symlink_to(outside_file)
    (old_env / "lib" / "site-packages" / "big.bin").write_bytes(os.urandom(512 * 1024))
    os.link(shared, old_env / "lib" / "site-packages" / "shared.bin")  # hard link to outside

    with pytest.raises(UserError, match="current"):
        store.delete_generation(3)
    with pytest.raises(UserError, match="previous"):
        store.delete_generation(2)
    with pytest.raises(UserError, match="no generation 9"):
        store.delete_generation(9)

    freed = store.delete_generation(1)

    assert not store.generation_dir(1).exists()
    assert (outside / "data.txt").read_text() == "keep me"
    assert outside_file.read_text() == "keep me too"
    assert shared.stat().st_size == 256 * 1024
    assert 512 * 1024 <= freed < (512 + 256) * 1024  # the shared blob is not freed
    assert [g.number for g in store.generations()] == [2, 3]
    assert store.journal() is None and not any(store.trash_root.iterdir())
    assert_consistent(store)


def test_delete_generation_refuses_symlinked_generation_folder(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    upgrade(store)
    upgrade(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (store.generations_dir / "7").symlink_to(outside)
    with pytest.raises(UserError, match="outside|symbolic link"):
        store.delete_generation(7)
    assert (outside / "keep").read_text() == "x"


def test_gc_crash_is_finished_by_recover(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    upgrade(store)
    upgrade(store)
    code = "import sys; from pathlib import Path; from rebuild.store.store import Store; Store.open(Path(sys.argv[1])).delete_generation(1)"
    proc = run_py(code, str(store.env), TFREBUILD_FAULT="gc.moved")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Store.open(store.env).recover() == "finished interrupted deletion of generation 1"
    assert not store.generation_dir(1).exists()
    assert not any(store.trash_root.iterdir())
    assert_consistent(store)


def test_disk_usage_counts_hardlinks_once(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    big = a / "lib" / "site-packages" / "big.so"
    big.write_bytes(os.urandom(1024 * 1024))
    os.link(big, b / "lib" / "site-packages" / "big.so")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(os.urandom(2 * 1024 * 1024))
    (b / "link").symlink_to(outside)  # not followed

    alone, total = exclusive_usage([a, b])
    assert alone[a] < 256 * 1024 and alone[b] < 256 * 1024  # the shared file is in neither tree alone
    shared = total - alone[a] - alone[b]
    assert 1024 * 1024 <= shared < 1024 * 1024 + 256 * 1024  # ...and counted once in the total
    reverse_alone, reverse_total = exclusive_usage([b, a])
    assert reverse_alone == alone and reverse_total == total
    only_b, total_b = exclusive_usage([b])
    assert only_b[b] < 256 * 1024  # big.so is also linked from a: deleting b alone frees none of it
    assert total_b >= 1024 * 1024 and total_b < 2 * 1024 * 1024  # counted, but the symlink is not followed
    assert exclusive_usage([tmp_path / "missing"]) == ({tmp_path / "missing": 0}, 0)


def test_recover_refuses_journal_paths_outside_the_store(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    with store.lock("test"):
        store.begin({"op": "upgrade", "id": "upgrade-x", "step": "building", "staging": str(store.generations_dir)})
    with pytest.raises(UserError, match="outside"):
        store.recover()
    with store.lock("test"):
        store.commit()
        store.begin({"op": "gc", "id": "gc-x", "generation": 9, "trash": str(victim)})
    with pytest.raises(UserError, match="outside"):
        store.recover()
    assert (victim / "keep").read_text() == "x"
    assert store.generations_dir.is_dir() and marker(store.env) == "gen1"


def test_venv_identity_tells_a_venv_made_again_in_the_same_directory(tmp_path: Path) -> None:
    """What the project steps compare around ``uv sync``/``poetry sync`` (a sync that replaced the env): a venv made
    again in the same directory keeps the directory's inode but writes a new ``pyvenv.cfg``; installs do not."""
    from rebuild.store.trees import venv_identity

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    first = venv_identity(env)
    assert first[0] == os.lstat(env).st_ino and first[1]
    (env / "lib" / "installed.txt").write_text("an install writes files, not pyvenv.cfg")
    assert venv_identity(env) == first
    time.sleep(0.01)  # a new mtime even where the file system keeps coarse times (the inode may come back)
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", env], check=True)
    again = venv_identity(env)
    assert again[0] == first[0] and again != first  # the same directory, a venv made again in it
    assert venv_identity(tmp_path / "gone") == (-1, "")
