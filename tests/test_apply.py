"""``tfrebuild apply``: a profile's lock into a new path or as a new generation, on the offline kit.

Core functions run in-process under the kit's offline environment (``kit_os_env``); the
CLI runs in a subprocess through :func:`launcher` (a script that runs this checkout's CLI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rebuild.commands import apply as applying
from rebuild.core import portability
from rebuild.env import profile as prof
from rebuild.commands import snapshot as snapshotting
from rebuild.env import snapshot
from rebuild.errors import UserError
from rebuild.store.store import Store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["tensorflow-cpu==2.15.1", "numpy==1.24.3", "pandas==2.1.4"]

# --------------------------------------------------------------------------- the CLI code (for cli.py / render.py)


def launcher(folder: Path) -> Path:
    """A script that runs the tfrebuild CLI from this checkout (``python SCRIPT apply ...``)."""
    script = folder / "tfrebuild_cli.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom rebuild.cli.app import main\nmain()\n")
    return script


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def source_env(make_venv, require_python, kit_os_env, tmp_path):
    """A Python 3.11 kit env with TensorFlow 2.15.1, and its snapshot profile (no lock)."""
    require_python("3.11")
    env = make_venv(tmp_path / "src" / "venv", SMALL, python="3.11")
    result = snapshotting.run(env, tmp_path / "profiles" / "src.toml")
    return env, result.written_to


def opts(profile, env, kit_index, **kw) -> applying.Options:
    kw.setdefault("find_links", [str(kit_index)])
    kw.setdefault("offline", True)
    kw.setdefault("yes", True)
    return applying.Options(profile=profile, env=env, **kw)


def freeze(env: Path) -> dict[str, str]:
    from tests.kit import uv_bin

    out = subprocess.run(
        [uv_bin(), "pip", "freeze", "--python", str(env / "bin" / "python")], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line)


def tree_state(root: Path) -> dict[str, tuple]:
    state = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    state["."] = (os.lstat(root).st_ino,)
    return state


def sibling_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir()) if path.parent.exists() else []


def assert_nothing_created(target: Path) -> None:
    assert not os.path.lexists(target), f"{target} was created"
    assert not any(n.endswith(".tfrebuild") for n in sibling_names(target)), sibling_names(target)


def edit_profile(path: Path, **changes) -> Path:
    p = prof.load(path)
    for key, value in changes.items():
        obj = p
        *parts, last = key.split(".")
        for part in parts:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    snapshot.write(p, path)
    return path


# --------------------------------------------------------------------------- new env / existing env


@pytest.mark.slow
def test_new_env_from_snapshot_profile(source_env, kit_index, tmp_path):
    src, profile = source_env
    target = tmp_path / "fresh" / "tf"  # the parent does not exist either
    r = applying.run(opts(profile, target, kit_index))
    assert r.changed and r.new_env and r.generation == 1 and r.previous is None
    assert freeze(target) == freeze(src)
    assert "locked with uv" in r.lock_source and r.hashes.startswith("required")
    assert [c.ok for c in r.checks] and all(c.ok for c in r.checks + r.after_swap)
    store = Store.open(target)
    assert store is not None and store.current_number == 1 and store.current.tensorflow == "tensorflow-cpu 2.15.1"
    gen = store.generation_dir(1)
    assert (gen / "pylock.toml").is_file() and prof.load(gen / "profile.toml").lock == "pylock.toml"
    assert not list(store.staging_root.iterdir()) and store.journal() is None
    # relocatable: nothing in the env points back at the staging folder
    assert "staging" not in (target / "bin" / "activate").read_text()
    # requested markers follow the profile, not uv's "everything is requested"
    again = snapshot.take(target)
    assert set(again.requested) == set(prof.load(profile).requested)


@pytest.mark.slow
def test_existing_unmanaged_env_gets_a_new_generation(source_env, make_venv, kit_index, tmp_path):
    src, profile = source_env
    other = make_venv(tmp_path / "other" / "venv", ["tensorflow-cpu==2.16.1", "numpy==1.26.4"], python="3.11")
    before = freeze(other)
    r = applying.run(opts(profile, other, kit_index))
    assert r.changed and not r.new_env and (r.generation, r.previous) == (2, 1)
    assert {c.name for c in r.env_changes} >= {"tensorflow-cpu", "numpy", "pandas"}
    assert freeze(other) == freeze(src)
    store = Store.open(other)
    assert store.current_number == 2 and store.previous_number == 1
    assert (store.generation_dir(1) / "profile.toml").is_file()  # the adopted env's own profile
    store.rollback_to()
    assert freeze(other) == before


def test_same_set_is_nothing_to_do(source_env, kit_index, tmp_path):
    src, profile = source_env
    r = applying.run(opts(profile, src, kit_index))
    assert not r.changed and any("nothing to do" in n for n in r.notes)
    assert Store.open(src) is None and not (src.parent / ".venv.tfrebuild").exists()


@pytest.mark.slow
def test_lock_file_profile_installs_the_lock_as_is(source_env, kit_index, tmp_path):
    src, profile = source_env
    first = tmp_path / "a" / "venv"
    applying.run(opts(profile, first, kit_index))
    gen_profile = Store.open(first).generation_dir(1) / "profile.toml"
    copy_dir = tmp_path / "shared"
    copy_dir.mkdir()
    shutil.copy(gen_profile, copy_dir / "profile.toml")
    shutil.copy(gen_profile.with_name("pylock.toml"), copy_dir / "pylock.toml")
    second = tmp_path / "b" / "venv"
    r = applying.run(opts(copy_dir / "profile.toml", second, kit_index))
    assert r.lock_source.startswith("the profile's lock") and freeze(second) == freeze(src)
    assert not r.trusted


# --------------------------------------------------------------------------- foreign profiles


def test_confirmation_needed_and_cancel_changes_nothing(source_env, kit_index, tmp_path):
    _, profile = source_env
    edit_profile(profile, **{"smoke.commands": ["echo hi"]})
    target = tmp_path / "n" / "venv"
    with pytest.raises(UserError) as exc:
        applying.run(opts(profile, target, kit_index, yes=False))
    assert "confirmation" in exc.value.message and "echo hi" in exc.value.details
    assert "find-links" in exc.value.details
    seen = []
    with pytest.raises(UserError, match="cancelled"):
        applying.run(opts(profile, target, kit_index, yes=False), confirm=lambda r: seen.append(r) or False)
    assert seen and seen[0].smoke_commands == ["echo hi"] and not seen[0].commands_run
    assert seen[0].index_urls
    assert_nothing_created(target)


@pytest.mark.slow
def test_foreign_smoke_commands_are_not_run_without_allow(source_env, kit_index, tmp_path):
    _, profile = source_env
    marker = tmp_path / "ran"
    edit_profile(profile, **{"smoke.commands": [f"echo pwned > {marker}"]})
    r = applying.run(opts(profile, tmp_path / "x" / "venv", kit_index))
    assert r.changed and not marker.exists() and not r.commands_run
    assert any("--allow-commands" in n for n in r.notes)
    gen_profile = prof.load(Store.open(tmp_path / "x" / "venv").generation_dir(1) / "profile.toml")
    assert gen_profile.smoke.commands == []  # never laundered into a trusted generation profile
    r = applying.run(opts(profile, tmp_path / "y" / "venv", kit_index, allow_commands=True))
    assert r.commands_run and marker.read_text().strip() == "pwned"
    assert any(c.name.startswith("command:") for c in r.checks)
    assert prof.load(Store.open(tmp_path / "y" / "venv").generation_dir(1) / "profile.toml").smoke.commands


@pytest.mark.slow
def test_own_generation_profile_is_trusted(source_env, make_venv, kit_index, tmp_path):
    _, profile = source_env
    env = tmp_path / "own" / "venv"
    applying.run(opts(profile, env, kit_index))
    store = Store.open(env)
    gen_profile = store.generation_dir(1) / "profile.toml"
    marker = tmp_path / "trusted-ran"
    edit_profile(gen_profile, **{"smoke.commands": [f"touch {marker}"]})
    # make the env hold another set, so there is something to do
    from tests.kit import uv_bin

    subprocess.run(
        [
            uv_bin(),
            "pip",
            "install",
            "--python",
            str(env / "bin" / "python"),
            "--no-index",
            "--find-links",
            str(kit_index),
            "--no-deps",
            "h5py==3.11.0",
        ],
        check=True,
        capture_output=True,
    )
    assert applying.is_trusted(gen_profile, env) and not applying.is_trusted(gen_profile, tmp_path / "elsewhere")
    r = applying.run(opts(gen_profile, env, kit_index))
    assert r.trusted and r.commands_run and marker.exists()
    assert [c.name for c in r.env_changes] == ["h5py"] and "h5py" not in freeze(env)


def test_insecure_index_is_refused(source_env, kit_index, tmp_path):
    _, profile = source_env
    edit_profile(profile, **{"index.extra_index_urls": ["http://mirror.example/simple"]})
    target = tmp_path / "i" / "venv"
    with pytest.raises(UserError, match="plain-http") as exc:
        applying.run(opts(profile, target, kit_index))
    assert "--allow-insecure-index" in exc.value.hint
    assert_nothing_created(target)
    r = applying.run(opts(profile, target, kit_index, allow_insecure_index=True))
    assert r.changed and any(u.startswith("extra index: http://mirror.example/simple") for u in r.index_urls)


def test_insecure_file_url_in_lock_is_refused(source_env, kit_index, tmp_path):
    _, profile = source_env
    p = prof.load(profile)
    lock = profile.parent / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "x"\n\n[[packages]]\nname = "six"\nversion = "1.17.0"\n'
        'wheels = [{ url = "http://files.example/six-1.17.0-py3-none-any.whl", hashes = { sha256 = "'
        + "0" * 64
        + '" } }]\n'
    )
    p.lock = "pylock.toml"
    p.packages = [prof.Package(name="six", version="1.17.0")]
    snapshot.write(p, profile)
    with pytest.raises(UserError, match="plain-http"):
        applying.run(opts(profile, tmp_path / "j" / "venv", kit_index))
    assert_nothing_created(tmp_path / "j" / "venv")


# --------------------------------------------------------------------------- bad input


def test_unknown_schema(source_env, kit_index, tmp_path):
    _, profile = source_env
    profile.write_text(profile.read_text().replace("schema = 1", "schema = 7"))
    target = tmp_path / "s" / "venv"
    with pytest.raises(UserError, match="schema 7") as exc:
        applying.run(opts(profile, target, kit_index))
    assert exc.value.hint
    assert_nothing_created(target)


def _with_lock(profile: Path, tmp_path: Path, kit_index: Path) -> Path:
    """Apply once to get a generation's profile + lock, copied to a folder of their own."""
    env = tmp_path / "base" / "venv"
    applying.run(opts(profile, env, kit_index))
    gen = Store.open(env).generation_dir(1)
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copy(gen / "profile.toml", folder / "profile.toml")
    shutil.copy(gen / "pylock.toml", folder / "pylock.toml")
    return folder / "profile.toml"


@pytest.mark.slow
def test_truncated_lock(source_env, kit_index, tmp_path):
    _, profile = source_env
    locked = _with_lock(profile, tmp_path, kit_index)
    lock = locked.with_name("pylock.toml")
    text = lock.read_text()
    lock.write_text(text[: len(text) // 2])
    target = tmp_path / "t" / "venv"
    with pytest.raises(UserError) as exc:
        applying.run(opts(locked, target, kit_index))
    assert "lock" in exc.value.message and exc.value.hint
    assert_nothing_created(target)


@pytest.mark.slow
def test_edited_hash_is_refused_before_building(source_env, kit_index, tmp_path):
    _, profile = source_env
    locked = _with_lock(profile, tmp_path, kit_index)
    lock = locked.with_name("pylock.toml")
    data = tomllib.loads(lock.read_text())
    digest = data["packages"][0]["wheels"][0]["hashes"]["sha256"]
    lock.write_text(lock.read_text().replace(digest, digest[:-4] + "beef"))
    target = tmp_path / "h" / "venv"
    with pytest.raises(UserError, match="do not match the hashes") as exc:
        applying.run(opts(locked, target, kit_index))
    assert data["packages"][0]["name"] in exc.value.message and "expected" in exc.value.details
    assert_nothing_created(target)


@pytest.mark.slow
def test_edited_version_is_refused(source_env, kit_index, tmp_path):
    _, profile = source_env
    locked = _with_lock(profile, tmp_path, kit_index)
    lock = locked.with_name("pylock.toml")
    lock.write_text(lock.read_text().replace('version = "1.24.3"', 'version = "1.26.4"'))
    target = tmp_path / "v" / "venv"
    with pytest.raises(UserError, match="disagree") as exc:
        applying.run(opts(locked, target, kit_index))
    assert "numpy" in exc.value.message
    assert_nothing_created(target)


def test_profile_for_another_platform(source_env, kit_index, tmp_path):
    """A macOS arm64 profile whose lock has only a macOS wheel: clear error, nothing built."""
    _, profile = source_env
    p = prof.load(profile)
    p.platform = prof.Platform(system="Darwin", machine="arm64", mac_ver="14.4", sysconfig_platform="macosx-11.0-arm64")
    p.packages = [
        prof.Package(name="fakemac", version="1.0", requested=True),
        prof.Package(name="six", version="1.17.0"),
    ]
    p.lock = "pylock.toml"
    p.tensorflow = prof.TensorFlow()
    snapshot.write(p, profile)
    profile.with_name("pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "uv"\nrequires-python = ">=3.11"\n\n'
        '[[packages]]\nname = "fakemac"\nversion = "1.0"\nwheels = [{ url = "https://files.example/fakemac-1.0-cp311-'
        'cp311-macosx_11_0_arm64.whl", hashes = { sha256 = "' + "1" * 64 + '" } }]\n\n'
        '[[packages]]\nname = "six"\nversion = "1.17.0"\nwheels = [{ url = "https://files.example/six-1.17.0-py3-none-'
        'any.whl", hashes = { sha256 = "' + "2" * 64 + '" } }]\n'
    )
    target = tmp_path / "m" / "venv"
    with pytest.raises(UserError) as exc:
        applying.run(opts(profile, target, kit_index, offline=False, find_links=[]))
    e = exc.value
    assert "fakemac" in e.message and "six" not in e.details
    assert "OS Darwin → Linux" in e.message and "--resolve" in e.hint
    assert "fakemac-1.0-cp311-cp311-macosx_11_0_arm64.whl" in e.details
    assert_nothing_created(target)


@pytest.mark.slow
def test_other_python_minor_error_then_resolve(source_env, kit_index, tmp_path, require_python):
    require_python("3.12")
    src, profile = source_env
    locked = _with_lock(profile, tmp_path, kit_index)
    target = tmp_path / "py312" / "venv"
    with pytest.raises(UserError) as exc:
        applying.run(opts(locked, target, kit_index, python="3.12"))
    e = exc.value
    assert "Python 3.11 → 3.12" in e.message
    for name in ("tensorflow-cpu", "numpy"):
        assert name in e.message
    assert "six" not in e.message and "--resolve" in e.hint and "--python 3.11" in e.hint
    assert_nothing_created(target)
    r = applying.run(opts(locked, target, kit_index, python="3.12", resolve=True))
    assert r.changed and r.resolved and r.python.startswith("3.12")
    changes = {c.name: (c.old, c.new) for c in r.changes}
    assert changes["tensorflow-cpu"] == ("2.15.1", "2.16.1")  # the closest release with a 3.12 wheel
    assert freeze(target)["tensorflow-cpu"] == "2.16.1"
    assert freeze(target)["pandas"] == "2.1.4"  # kept: it has a 3.12 wheel


def test_snapshot_profile_for_other_python_without_resolve(source_env, kit_index, tmp_path, require_python):
    require_python("3.12")
    _, profile = source_env
    target = tmp_path / "p" / "venv"
    with pytest.raises(UserError) as exc:
        applying.run(opts(profile, target, kit_index, python="3.12"))
    assert "--resolve" in exc.value.hint and "3.12" in exc.value.message
    assert_nothing_created(target)


def test_failing_smoke_check_leaves_nothing(source_env, kit_index, tmp_path):
    _, profile = source_env
    edit_profile(profile, **{"smoke.imports": ["pandas", "tensorflow", "not_a_module_anywhere"]})
    target = tmp_path / "f" / "venv"
    with pytest.raises(UserError, match="failed its checks") as exc:
        applying.run(opts(profile, target, kit_index))
    assert "not_a_module_anywhere" in exc.value.details
    assert_nothing_created(target)


@pytest.mark.slow
def test_failing_smoke_check_keeps_existing_env(source_env, make_venv, kit_index, tmp_path):
    _, profile = source_env
    edit_profile(profile, **{"smoke.imports": ["not_a_module_anywhere"]})
    other = make_venv(tmp_path / "keep" / "venv", ["six==1.17.0"], python="3.11")
    before = tree_state(other)
    with pytest.raises(UserError, match="failed its checks"):
        applying.run(opts(profile, other, kit_index))
    assert tree_state(other) == before
    assert sibling_names(other) == ["venv"]


def test_bare_interpreter_target_is_refused(source_env, kit_index, tmp_path):
    _, profile = source_env
    with pytest.raises(UserError, match="interpreter, not an environment"):
        applying.run(opts(profile, sys.executable, kit_index))


# --------------------------------------------------------------------------- the CLI, crashes


def cli_run(tmp_path: Path, kit_env: dict, *args: str, fault: str | None = None, stdin: str | None = None):
    env = dict(kit_env)
    env.pop("TFREBUILD_FAULT", None)
    if fault:
        env["TFREBUILD_FAULT"] = fault
    return subprocess.run(
        [sys.executable, str(launcher(tmp_path)), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        input=stdin,
    )


@pytest.mark.slow
def test_cli_apply_json_and_errors(source_env, kit_env, kit_index, tmp_path):
    _, profile = source_env
    target = tmp_path / "cli" / "venv"
    res = cli_run(
        tmp_path, kit_env, "apply", str(profile), "--env", str(target), "--find-links", str(kit_index), "--offline"
    )
    assert res.returncode == 2 and "needs confirmation" in res.stderr and "hint:" in res.stderr
    res = cli_run(
        tmp_path,
        kit_env,
        "apply",
        str(profile),
        "--env",
        str(target),
        "--find-links",
        str(kit_index),
        "--offline",
        "--yes",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["changed"] and doc["generation"] == 1 and doc["portability"]["differences"] == []
    res = cli_run(
        tmp_path,
        kit_env,
        "apply",
        str(profile),
        "--env",
        str(target),
        "--find-links",
        str(kit_index),
        "--offline",
        "--yes",
    )
    assert res.returncode == 0 and "Nothing to do" in res.stdout, res.stdout + res.stderr
    res = cli_run(tmp_path, kit_env, "apply", str(tmp_path / "nope.toml"), "--env", str(target), "--yes")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "fault,exists_after", [("apply.built", False), ("apply.renamed", True), ("apply.recorded", True)]
)
@pytest.mark.slow
def test_crash_during_new_env_is_finished_or_undone(source_env, kit_env, kit_index, tmp_path, fault, exists_after):
    src, profile = source_env
    target = tmp_path / "crash" / "venv"
    args = ["apply", str(profile), "--env", str(target), "--find-links", str(kit_index), "--offline", "--yes"]
    res = cli_run(tmp_path, kit_env, *args, fault=fault)
    assert res.returncode == -9
    assert os.path.lexists(target) == exists_after
    res = cli_run(tmp_path, kit_env, *args)
    assert res.returncode == 0, res.stderr
    assert ("finished an interrupted apply" if exists_after else "undid an interrupted apply") in res.stdout
    store = Store.open(target)
    assert store.current_number == 1 and freeze(target) == freeze(src)
    assert store.journal() is None and not list(store.staging_root.iterdir())


def test_portability_libc_too_old_and_markers():
    """A manylinux_2_28 wheel does not load on glibc 2.17; a package whose marker excludes the target is skipped."""
    from rebuild.core import lockfile as locks
    from rebuild.env.probed import Probed

    lock = locks.parse_lock(
        'lock-version = "1.0"\n'
        '[[packages]]\nname = "numpy"\nversion = "2.0.2"\nwheels = [{ url = "https://x.example/numpy-2.0.2-cp311-cp311-'
        'manylinux_2_28_x86_64.whl", hashes = {} }]\n'
        '[[packages]]\nname = "pywin32"\nversion = "306"\nmarker = "sys_platform == \'win32\'"\n'
        'wheels = [{ url = "https://x.example/pywin32-306-cp311-cp311-win_amd64.whl", hashes = {} }]\n'
        '[[packages]]\nname = "six"\nversion = "1.17.0"\nwheels = [{ url = "https://x.example/six-1.17.0-py3-none-any.whl",'
        " hashes = {} }]\n"
        '[[packages]]\nname = "oldlib"\nversion = "1.0"\n'
        'sdist = { url = "https://x.example/oldlib-1.0.tar.gz", hashes = {} }\n',
        "test lock",
    )
    p = prof.Profile(
        interpreter=prof.Interpreter(version="3.11.7"),
        platform=prof.Platform(system="Linux", machine="x86_64", libc="glibc", libc_version="2.36"),
    )
    data = Probed(
        interpreter={"version": "3.11.4", "implementation": "cpython", "version_info": [3, 11, 4]},
        platform={"system": "Linux", "machine": "x86_64", "libc": "glibc", "libc_version": "2.17"},
    )
    r = portability.check_portability(lock, p, data)
    assert r.incompatible == ["numpy 2.0.2: numpy-2.0.2-cp311-cp311-manylinux_2_28_x86_64.whl"]
    assert r.differences == ["libc glibc 2.36 → glibc 2.17 (older here: wheels built for the newer one do not load)"]
    assert r.from_source == ["oldlib 1.0"]
    data.platform["libc_version"] = "2.36"
    r = portability.check_portability(lock, p, data)
    assert r.same and not r.incompatible
    data.platform["machine"] = "aarch64"
    r = portability.check_portability(lock, p, data)
    assert r.differences == ["architecture x86_64 → aarch64"]
    assert [i.split(":")[0] for i in r.incompatible] == ["numpy 2.0.2"]


@pytest.mark.slow
def test_cli_export_and_bundle(source_env, kit_env, kit_index, tmp_path):
    src, profile = source_env
    res = cli_run(tmp_path, kit_env, "export", "--env", str(src), "--format", "requirements")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("# Exported by tfrebuild") and "tensorflow-cpu==2.15.1 \\" in res.stdout
    out = tmp_path / "pylock.toml"
    res = cli_run(tmp_path, kit_env, "export", "--env", str(src), "-o", str(out))
    assert res.returncode == 0 and f"Wrote {out}" in res.stdout and "uv pip sync" in res.stdout, res.stderr
    res = cli_run(tmp_path, kit_env, "export", "--env", str(src), "-o", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr
    res = cli_run(
        tmp_path,
        kit_env,
        "bundle",
        str(profile),
        "-o",
        str(tmp_path / "b"),
        "--find-links",
        str(kit_index),
        "--offline",
    )
    assert res.returncode == 0, res.stderr
    assert "Bundled 11 files" in res.stdout and "every hash checked" in res.stdout
    res = cli_run(
        tmp_path,
        kit_env,
        "apply",
        str(tmp_path / "b" / "profile.toml"),
        "--env",
        str(tmp_path / "n"),
        "--find-links",
        str(tmp_path / "b"),
        "--offline",
        "--yes",
    )
    assert res.returncode == 0 and "Created" in res.stdout, res.stderr
