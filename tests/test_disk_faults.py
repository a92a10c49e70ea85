"""Issue 14, point 6 and the failure-message items: disk full, read-only, EBUSY, permissions, logs, messages.

The filesystem cases mount a real (small) tmpfs, remount it read-only, bind-mount an env,
or hand an env to another uid; each skips, saying why, where this process cannot
(not root, no ``mount``, no ``setpriv``).  Every failure must be one paragraph
(``error:`` and ``hint:``, no traceback), a non-zero exit, and the env byte-for-byte
as it was; the commands that only read must exit 0.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tests.kit import releases
from tests.kit.cli import run_cli, tree_state

from rebuild.core import build, smoke
from rebuild.env import fsguard

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mounts and /proc/self/mountinfo are Linux")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


def state_dir(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def clean_error(res, *fragments: str, code: int | None = None) -> None:
    assert res.code not in (0, -9), res
    if code is not None:
        assert res.code == code, res
    assert "Traceback" not in res.err, res
    assert "error:" in res.err and "hint:" in res.err, res
    for fragment in fragments:
        assert fragment in res.err, (fragment, str(res))


def ok(res):
    assert res.code == 0, res
    assert "Traceback" not in res.err, res
    return res


@pytest.fixture
def cli(kit_env, kit_index, tmp_path):
    def _run(command: str, env: Path, *args: str, find_links=None, drop=(), timeout: float = 300):
        links = [a for folder in find_links or [kit_index] for a in ("--find-links", folder)]
        overrides = {key: None for key in drop}
        return run_cli(
            kit_env,
            command,
            "--env",
            env,
            *(("--offline", *links) if command in ("upgrade", "plan") else ()),
            *args,
            overrides=overrides,
            cwd=tmp_path,
            timeout=timeout,
        )

    return _run


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` -> a fresh tmpfs of that size mounted under tmp_path (unmounted afterwards)."""
    mounted: list[Path] = []

    def _make(size: str = "128m") -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        res = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield _make
    for point in reversed(mounted):
        _mount("-o", "remount,rw", str(point))
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(folder: Path) -> None:
    """Write until the filesystem says ENOSPC (blocks first, then small files for the last bytes)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    try:
        for i in range(100000):
            (folder / f"filler-{i}").write_bytes(b"\0" * 4096)
    except OSError:
        pass
    assert shutil.disk_usage(folder).free < 64 * 1024, "premise: the filesystem is full"


def managed_env(make_venv, cli, root: Path, upgrades=("2.16", "2.18")) -> Path:
    env = make_venv(root / "envs" / "tf", CLASSIC)
    for target in upgrades:
        ok(cli("upgrade", env, "--to", target, "--yes"))
    return env


# --------------------------------------------------------------------------- disk full


@pytest.mark.slow
def test_full_disk_reads_work_gc_frees_and_changes_refuse_cleanly(tmpfs, make_venv, cli):
    root = tmpfs("160m")
    env = managed_env(make_venv, cli, root)
    before = tree_state(env)
    # Nearly full: the estimate (env size, plus a margin for uv's temporary files) refuses before building.
    leave = 24 * 2**20
    with open(root / "almost", "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(shutil.disk_usage(root).free - leave, 0))
    res = cli("upgrade", env, "--to", "2.21", "--yes")
    clean_error(res, "Not enough free disk space", "to spare", code=1)
    assert "uv pip sync" not in res.err and list((state_dir(env) / "staging").iterdir()) == []
    assert tree_state(env) == before
    fill(root)

    for command, args in [("status", ()), ("history", ()), ("diff", ("1", "3"))]:
        res = ok(cli(command, env, *args))
        assert res.out.strip(), res
    assert "generation 3" in cli("status", env).out
    res = cli("upgrade", env, "--to", "2.21", "--yes")
    clean_error(res, code=1)
    assert "disk is full" in res.err and "/logs/upgrade-" in res.err, res  # the resolver's log, named
    res = cli("rollback", env, "--yes")
    clean_error(res, code=1)
    assert "disk is full" in res.err, res
    assert tree_state(env) == before
    assert not (state_dir(env) / "journal.json").exists()

    # gc is what the messages suggest: it must work on a full disk, and free space.
    free_before = shutil.disk_usage(root).free
    res = ok(cli("gc", env, "--keep", "1", "--yes", "--json"))
    assert res.json()["deleted"] == [1], res
    assert not (state_dir(env) / "generations" / "1").exists()
    assert list((state_dir(env) / "staging").iterdir()) == []
    assert not (state_dir(env) / "journal.json").exists()
    assert shutil.disk_usage(root).free > free_before
    assert tree_state(env) == before
    ok(cli("status", env))


# --------------------------------------------------------------------------- read-only filesystem


@pytest.mark.slow
def test_read_only_filesystem(tmpfs, make_venv, cli):
    root = tmpfs("160m")
    env = managed_env(make_venv, cli, root)
    res = _mount("-o", "remount,ro", str(root))
    if res.returncode != 0:
        pytest.skip(f"cannot remount read-only: {res.stderr.strip()}")
    before = tree_state(env)
    assert "generation 3" in ok(cli("status", env)).out
    assert ok(cli("status", env, "--json")).json()["current"] == 3
    assert ok(cli("history", env, "--json")).json()["rows"]
    assert ok(cli("diff", env, "1", "3")).out.strip()
    ok(cli("plan", env, "--to", "2.18"))
    for command, args in [
        ("rollback", ("--yes",)),
        ("gc", ("--keep", "1", "--yes")),
        ("upgrade", ("--to", "2.21", "--yes")),
    ]:
        res = cli(command, env, *args)
        clean_error(res, "read-only", code=1)
    assert tree_state(env) == before


# --------------------------------------------------------------------------- EBUSY: a bind-mounted env


def test_bind_mounted_env_is_refused_before_the_build(tmp_path, make_venv, cli):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a bind mount needs root and mount(8)")
    source = make_venv(tmp_path / "real" / "tf", CLASSIC)
    point = tmp_path / "envs" / "tf"
    point.mkdir(parents=True)
    res = _mount("--bind", str(source), str(point))
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        assert os.lstat(point).st_dev == os.lstat(point.parent).st_dev, "premise: same filesystem"
        assert fsguard.is_mount_point(point) and not fsguard.is_mount_point(source)
        before = tree_state(point)
        res = cli("upgrade", point, "--to", "2.18", "--yes")
        clean_error(res, "is a mount point", code=1)
        assert "uv pip sync" not in res.err and "resolve:" not in res.err, "refused before resolving or building"
        assert tree_state(point) == before
        assert not state_dir(point).exists(), "nothing is left beside the mount point"
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)


def test_mountinfo_escapes_are_read():
    assert fsguard._unescape(r"/mnt/with\040space\012nl") == "/mnt/with space\nnl"
    assert "/" in fsguard.mount_points()


# --------------------------------------------------------------------------- root on another user's env


def test_root_upgrading_another_users_env_keeps_the_owner(make_venv, cli):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to act as another uid")
    uid = gid = 1000
    top = Path(tempfile.mkdtemp(prefix="tfr-owner-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        home = top / "home"
        home.mkdir()
        os.chown(home, uid, gid)
        env = make_venv(home / "tf", CLASSIC)
        for base, dirs, files in os.walk(env):
            for name in dirs + files:
                os.lchown(os.path.join(base, name), uid, gid)
        os.lchown(env, uid, gid)
        ok(cli("upgrade", env, "--to", "2.18", "--yes"))
        wrong = [
            os.path.join(b, n)
            for tree in (env, state_dir(env))
            for b, ds, fs in os.walk(tree)
            for n in ds + fs
            if os.lstat(os.path.join(b, n)).st_uid != uid
        ]
        assert wrong == [], wrong[:5]
        assert os.lstat(env).st_uid == uid and os.lstat(state_dir(env)).st_uid == uid
        # The owner can write into the env (what pip install needs) and run tfrebuild on it.
        (site,) = env.glob("lib/python3*/site-packages")
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        proc = subprocess.run([*as_user, "touch", str(site / "owner-can-write")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        # ... and the state folder: its lock and the generation folders (the next tfrebuild run as the owner).
        for path in (state_dir(env) / "lock", state_dir(env) / "generations" / "2" / "profile.toml"):
            proc = subprocess.run([*as_user, "sh", "-c", f"test -w '{path}' && touch '{path}'"], capture_output=True)
            assert proc.returncode == 0, path
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --------------------------------------------------------------------------- logs


@pytest.mark.slow
def test_logs_are_pruned_to_the_newest(make_venv, cli, tmp_path):
    env = managed_env(make_venv, cli, tmp_path, upgrades=("2.18",))
    logs = state_dir(env) / "logs"
    for i in range(30):
        old = logs / f"upgrade-old-{i:02d}.log"
        old.write_text("old\n")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    ok(cli("upgrade", env, "--to", "2.18", "--yes"))
    names = sorted(p.name for p in logs.glob("*.log"))
    assert len(names) == 20, names
    assert "upgrade-old-00.log" not in names and "upgrade-old-29.log" in names
    assert [n for n in names if not n.startswith("upgrade-old-")], "the newest log is kept"


# --------------------------------------------------------------------------- free-space estimate


def test_space_estimate_counts_the_env_and_the_message_tells_figures_apart(make_venv, tmp_path):
    env = make_venv(tmp_path / "tf", CLASSIC)
    alone, total = __import__("rebuild.store.disk", fromlist=["x"]).exclusive_usage([env])
    assert build.estimate_bytes("", env) == total > 0
    assert build.estimate_bytes("", env, links=True) == alone[env]
    assert build.estimate_bytes("", env, links=True, usage=build.usage_later(env)) == alone[env]  # computed ahead
    lock = '[[packages]]\nname = "a"\nversion = "1"\nwheels = [{ url = "x", size = 1000000 }]\n'
    assert build.estimate_bytes(lock) == 3_000_000
    assert build.size_text(210 * 2**20) != build.size_text(200 * 2**20)
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(Exception) as info:
        build.check_disk(tmp_path, free)  # exactly what is free: the margin is missing
    assert "to spare" in info.value.message and info.value.exit_code == 1


# --------------------------------------------------------------------------- failure messages


@pytest.fixture(scope="module")
def broken_index(tmp_path_factory, kit_index: Path) -> Path:
    """The kit's wheels, except that tensorflow-cpu 2.21.0 fails to import."""
    dest = tmp_path_factory.mktemp("broken-index")
    for wheel in kit_index.glob("*.whl"):
        if not wheel.name.startswith("tensorflow_cpu-2.21.0-"):
            shutil.copyfile(wheel, dest / wheel.name)
    (good,) = [r for r in releases("tensorflow-cpu") if r.version == "2.21.0"]
    modules = dict(good.modules)
    modules["tensorflow/__init__.py"] = 'raise ImportError("fake broken tensorflow")\n'
    dataclasses.replace(good, modules=modules).build(dest)
    return dest


def test_failed_first_upgrade_names_a_log_that_exists_and_json_carries_the_plan(make_venv, cli, broken_index):
    env = make_venv("envs/tf", CLASSIC)
    before = tree_state(env)
    res = cli(
        "upgrade",
        env,
        "--to",
        "2.21.0",
        "--yes",
        "--json",
        find_links=[broken_index],
        drop=("UV_FIND_LINKS", "PIP_FIND_LINKS"),
    )
    assert res.code == 1, res
    doc = res.json()
    assert doc["ok"] is False and "failed its checks" in doc["error"]
    assert doc["plan"]["tf_new"] == "2.21.0" and doc["plan"]["tf_old"] == "2.15.1", doc
    assert "output above" in doc["hint"] and "below" not in doc["hint"]
    assert not state_dir(env).exists(), "a failed first upgrade leaves no state folder"
    named = [w.rstrip(".") for w in doc["hint"].split() if w.rstrip(".").endswith(".log")]
    assert named and all(Path(p).is_file() for p in named), doc["hint"]
    assert "uv" in Path(named[0]).read_text() or Path(named[0]).stat().st_size >= 0
    assert tree_state(env) == before
    human = cli(
        "upgrade", env, "--to", "2.21.0", "--yes", find_links=[broken_index], drop=("UV_FIND_LINKS", "PIP_FIND_LINKS")
    )
    assert human.code == 1 and "Plan for" in human.out and "2.15.1 → 2.21.0" in human.out, human


def test_smoke_headline_names_only_the_imports_that_failed(make_venv):
    env = make_venv("plain", ["numpy==1.24.3"])
    imports = ["json", "numpy", "no_such_module_a", "os", "no_such_module_b"] + [
        f"encodings.{e}" for e in ("utf_8", "ascii", "latin_1")
    ]
    report = smoke.run_checks(env, tf_version="", imports=imports, commands=[])
    (failed,) = [c for c in report.checks if not c.ok]
    assert failed.name == "imports: no_such_module_a, no_such_module_b (2 of 8 failed)", failed.name
    err = smoke.failure(report, "before the swap", Path("/x.log"), "Nothing changed.")
    assert "numpy" not in err.message and "no_such_module_b" in err.message
    assert "above" in err.hint
