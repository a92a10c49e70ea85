"""Issue 23, point 1: on a shared machine tfrebuild trusts only state folders the user (or the env's owner) owns.

Real processes: the attacker is uid 65534 (``setpriv --reuid 65534 --regid 65534 --clear-groups``) working in a
sticky, world-writable folder beside root's env, as in ``/tmp`` or a shared ``/scratch``. Each attack is tried
with the real CLI; the marker file the planted code would write is never created, the env keeps its owner and
its tree, and the planted folder is left as it was (tfrebuild neither reads it nor adopts it).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.test_state_folder import managed

from rebuild.errors import UserError
from rebuild.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the store needs Linux"),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv(1) to act as another user"
    ),
]

PLANT = r"""
import os, subprocess, sys
env, marker = sys.argv[1], sys.argv[2]
state = os.path.join(os.path.dirname(env), "." + os.path.basename(env) + ".tfrebuild")
for n in (1, 2):
    os.makedirs(os.path.join(state, "generations", str(n)))
st, pst = os.stat(env), os.stat(os.path.dirname(env))
open(state + "/store.toml", "w").write(
    'schema = 1\nenv = "%s"\ncurrent = 1\nprevious = 2\nparent_device = %d\nparent_inode = %d\n'
    % (env, pst.st_dev, pst.st_ino))
meta = ('number = %d\ncreated = "2026-01-01T00:00:00Z"\ncommand = "x"\ntensorflow = ""\npython = "3.11"\n'
        'inode = %d\ndevice = %d\nnote = ""\n')
open(state + "/generations/1/meta.toml", "w").write(meta % (1, st.st_ino, st.st_dev))
tree = state + "/generations/2/env"
subprocess.run([sys.executable, "-m", "venv", "--without-pip", tree], check=True)
site = subprocess.run([tree + "/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      capture_output=True, text=True, check=True).stdout.strip()
open(site + "/evil.pth", "w").write("import os; open(%r, 'a').write(str(os.getuid()))\n" % marker)
open(state + "/generations/2/meta.toml", "w").write(meta % (2, os.stat(tree).st_ino, os.stat(tree).st_dev))
"""


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scratch():
    """A sticky, world-writable folder both users can reach (``/tmp/<random>``, mode 1777)."""
    folder = Path(tempfile.mkdtemp(prefix="tfr-scratch-", dir="/tmp"))
    os.chmod(folder, 0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def root_env(scratch: Path) -> Path:
    """A small env of root's (a real venv: its interpreter runs) in the shared folder."""
    env = scratch / "tf"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    return env


def snapshot(path: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``path``: inode, owner, mode (never followed)."""
    out = {}
    for top, dirs, files in os.walk(path):
        for name in ["."] + dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_ino, st.st_uid, st.st_mode)
    return out


def tfr(kit_env, *args, cwd=ROOT):
    return run_cli(kit_env, *[str(a) for a in args], cwd=cwd, timeout=120)


def refused(run, *needles: str):
    assert run.code == 1, str(run)
    assert "Traceback" not in run.text, str(run)
    for needle in needles:
        assert needle in run.err, f"{needle!r} not in\n{run}"


# --------------------------------------------------------------------------- a planted state folder


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"{SYSTEM_PYTHON} (runnable by uid 65534) is needed")
@pytest.mark.slow
def test_planted_state_folder_is_refused_by_every_command(scratch, kit_env, kit_index):
    env = root_env(scratch)
    marker = scratch / "MARKER"
    plant = scratch / "plant.py"
    plant.write_text(PLANT)
    done = as_nobody(SYSTEM_PYTHON, str(plant), str(env), str(marker))
    assert done.returncode == 0, done.stderr
    state = scratch / ".tf.tfrebuild"
    assert os.stat(state).st_uid == NOBODY
    env_before, state_before = snapshot(env), snapshot(state)
    commands = [
        ["rollback", "--yes"],
        ["rollback", "--to", "2", "--yes", "--check", "import"],
        ["status"],
        ["history"],
        ["gc", "--keep", "1", "--yes"],
        ["gc", "--dry-run"],
        ["diff", "1", "2"],
        ["status", "--json"],
    ]
    for args in commands:
        run = tfr(kit_env, *args, "--env", env)
        refused(run, str(state), "belongs to nobody (uid 65534)")
        assert not marker.exists(), f"the planted .pth ran as root during {args}"
    assert snapshot(env) == env_before and os.stat(env).st_uid == 0
    assert snapshot(state) == state_before  # nothing read into, moved or adopted


def test_empty_state_folder_of_another_user_is_never_adopted(scratch, make_venv, kit_env, kit_index):
    env = make_venv(scratch / "tf", ["tensorflow-cpu==2.15.1"])
    state = scratch / ".tf.tfrebuild"
    assert as_nobody("mkdir", str(state)).returncode == 0
    before = snapshot(env)
    run = tfr(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes")
    refused(run, str(state), "belongs to nobody")
    assert os.listdir(state) == [] and os.stat(state).st_uid == NOBODY
    assert snapshot(env) == before


def test_own_state_folder_that_tfrebuild_did_not_make_is_not_adopted(tmp_path, make_venv, kit_env, kit_index):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    state = tmp_path / ".tf.tfrebuild"
    state.mkdir()
    (state / "something").write_text("not tfrebuild's\n")
    for args in (["upgrade", "--offline", "--find-links", kit_index, "--yes"], ["status"]):
        run = tfr(kit_env, *args, "--env", env)
        refused(run, str(state), "tfrebuild did not create it")
    assert sorted(os.listdir(state)) == ["something"]
    with pytest.raises(UserError, match="did not create it"):
        Store.unmanaged(env).adopt()
    # the hint's command, run as given (an older tfrebuild's crashed first run leaves such a folder), then it works
    (aside,) = re.findall(r"`(mv -- [^`]+)`", run.err)
    assert subprocess.run(aside, shell=True, cwd=tmp_path).returncode == 0
    assert (tmp_path / ".tf.tfrebuild.unknown" / "something").is_file()
    run = tfr(kit_env, "upgrade", "--offline", "--find-links", kit_index, "--yes", "--to", "2.16", "--env", env)
    assert run.code == 0, str(run)


# --------------------------------------------------------------------------- entries of a state folder of one's own


def test_created_state_folder_carries_its_record_and_no_write_bit_for_others(tmp_path):
    old = os.umask(0o002)  # a group-writing umask: the state folder's folders are still 0755
    try:
        store = managed(tmp_path / "tf", 2)
    finally:
        os.umask(old)
    assert (store.state / "created").is_file()
    for folder in (store.state, store.generations_dir, store.generation_dir(1), store.logs_dir):
        assert stat.S_IMODE(os.lstat(folder).st_mode) & 0o022 == 0, folder


@pytest.mark.parametrize(
    "entry,change",
    [
        ("generations", "chmod-777"),
        ("generations/1/meta.toml", "chown-nobody"),
        ("generations/1/env/lib/python3.11/site-packages/evil.pth", "pth-nobody"),
        ("generations/1/env", "chown-nobody"),
        ("store.toml", "chmod-666"),
    ],
)
@pytest.mark.slow
def test_stranger_entry_in_own_state_folder_is_refused(tmp_path, kit_env, entry, change):
    store = managed(tmp_path / "tf", 2)
    path = store.state / entry
    if change == "pth-nobody":
        path.write_text(f"import os; open({str(tmp_path / 'MARKER')!r}, 'w').write('ran')\n")
        os.chown(path, NOBODY, NOBODY)
    elif change == "chown-nobody":
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, int(change.split("-")[1], 8))
    env_before = snapshot(store.env)
    for args in (["rollback", "--yes"], ["status"], ["gc", "--keep", "1", "--yes"]):
        run = tfr(kit_env, *args, "--env", store.env)
        refused(run, str(path))
    assert snapshot(store.env) == env_before and not (tmp_path / "MARKER").exists()
    assert (store.generation_dir(1) / "env" / "MARKER").read_text() == "gen1"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"{SYSTEM_PYTHON} (runnable by uid 65534) is needed")
def test_a_strangers_link_to_roots_env_does_not_make_the_stranger_trusted(scratch, kit_env):
    """``--env`` given as a link that another user made (to root's env) trusts the env's owner, not the link's."""
    env = root_env(scratch)
    link, marker, plant = scratch / "link", scratch / "MARKER", scratch / "plant.py"
    plant.write_text(PLANT)
    made = as_nobody(SYSTEM_PYTHON, "-c", f"import os; os.symlink({str(env)!r}, {str(link)!r})")
    assert made.returncode == 0, made.stderr
    done = as_nobody(SYSTEM_PYTHON, str(plant), str(link), str(marker))
    assert done.returncode == 0, done.stderr
    planted = snapshot(scratch / ".link.tfrebuild")
    for args in (["rollback", "--yes"], ["rollback", "--to", "2", "--yes"], ["status"], ["gc", "--keep", "1", "--yes"]):
        run = tfr(kit_env, *args, "--env", link)
        assert "Traceback" not in run.text and "generation 2" not in run.out, str(run)
        assert not marker.exists(), f"the planted .pth ran as root during {args}"
    assert snapshot(scratch / ".link.tfrebuild") == planted  # the stranger's folder beside the link is never used
    assert os.stat(env).st_uid == 0 and link.is_symlink() and os.readlink(link) == str(env)


def test_root_on_another_users_env_trusts_that_user(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 2)
    for path in (store.env, store.state):
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)
    run = tfr(kit_env, "status", "--json", "--env", store.env)
    assert run.code == 0, str(run)
    assert run.json()["current"] == 2


# --------------------------------------------------------------------------- the pyc cache


def test_pyc_cache_another_user_can_change_is_refused(scratch, monkeypatch):
    from rebuild.core import bytecode

    cache = scratch / "pyc"
    assert as_nobody("mkdir", "-p", str(cache / "3495-cpython-311" / "ab")).returncode == 0
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(cache))
    where = scratch / "build"
    where.mkdir()
    with pytest.raises(UserError, match="belongs to nobody") as info:
        bytecode.usable_cache(where)
    assert "TFREBUILD_PYC_CACHE=off" in info.value.hint
    assert info.value.message.startswith(f"The pyc cache entry {cache} belongs to nobody"), info.value.message
    own = scratch / "own"
    (own / "3495-cpython-311" / "ab").mkdir(parents=True)
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(own))
    assert bytecode.usable_cache(where) == own
    os.chmod(own / "3495-cpython-311" / "ab", 0o777)  # a bucket anyone can write into
    with pytest.raises(UserError, match="can be written by other users"):
        bytecode.usable_cache(where)
