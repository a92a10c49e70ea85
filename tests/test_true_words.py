"""What tfrebuild says must be true and point the right way (issue 21), offline on the kit.

* failure output: a failed import shows the package's own innermost frame and the exception, in about 40
  lines; the log (0600, where the hint points) holds the whole traceback;
* doctor's "newest X that accepts TensorFlow T" searches every release of X and never proposes the current
  TensorFlow as the fix;
* one NumPy story: a compiled package built for NumPy 1 does not "accept" NumPy 2, and the plan's pre-flight
  says what the plan does;
* smoke imports are the requested packages' real top-level modules;
* each hint printed for a refusal is run, and gets past what it names.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from tests.kit.cli import run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


@pytest.fixture
def cli(kit_env, kit_index: Path, tmp_path: Path):
    def _run(command: str, env: Path | str | None, *args: str):
        where = ["--env", str(env)] if env is not None else []
        return run_cli(kit_env, command, *where, "--offline", "--find-links", kit_index, *args, cwd=tmp_path)

    return _run


def _hint_log(err: str) -> Path:
    found = re.findall(r"(/\S+\.log)\b", err)
    assert found, err
    return Path(found[-1])


# --------------------------------------------------------------------------- failure output


@pytest.mark.slow
def test_failed_import_shows_the_innermost_frame_and_logs_the_whole_traceback(make_venv, tmp_path: Path, cli) -> None:
    env = make_venv(tmp_path / "envs" / "deep", CLASSIC + ["fivedeep==1.0.0"])
    res = cli("upgrade", env, "--to", "2.21.0", "--yes")
    assert res.code == 1, (res.out, res.err)
    assert "failed its checks before the swap" in res.err
    # the failing module and its line, and the exception, are on screen ...
    assert re.search(r'fivedeep/d\.py", line 6, in <module>', res.err), res.err
    assert "ImportError: cannot import name 'base_layer_utils'" in res.err
    # ... not the import machinery's frames, and not more than about 40 lines of check output
    assert "<frozen importlib._bootstrap>" not in res.err
    details = res.err.split("error:", 1)[1]
    assert len(details.splitlines()) <= 48, details
    # the log the hint names holds the whole traceback (every module of the chain), readable by the user only
    log = _hint_log(res.err.split("hint:", 1)[1])
    text = log.read_text()
    for module in ("__init__.py", "a.py", "b.py", "c.py", "d.py"):
        assert f"fivedeep/{module}" in text, (module, text[-3000:])
    assert "<frozen importlib._bootstrap>" in text, "the log has the whole traceback"
    assert stat.S_IMODE(os.lstat(log).st_mode) == 0o600


def test_condense_keeps_the_innermost_frames_within_the_budget() -> None:
    from rebuild.util import failtext

    frames = "".join(
        f'  File "/site-packages/pkg/m{i}.py", line {i}, in <module>\n    from pkg import m{i + 1}\n' for i in range(60)
    )
    text = (
        "import pkg failed:\nTraceback (most recent call last):\n"
        + frames
        + '  File "/site-packages/pkg/m60.py", line 7, in <module>\n    raise ValueError("numpy.dtype size changed")\n'
        + "ValueError: numpy.dtype size changed\n"
    )
    shown = failtext.condense(text)
    lines = shown.splitlines()
    assert len(lines) <= 40, shown
    assert lines[0] == "import pkg failed:"
    assert lines[-1] == "ValueError: numpy.dtype size changed"
    assert 'pkg/m60.py", line 7' in shown and "outer frame(s) left out" in shown
    assert 'pkg/m0.py"' not in shown
    # a long line is cut at a space, never inside a word
    long = failtext.clip_line("word " * 200)
    assert long.endswith("word …") and len(long) <= failtext.LINE_CHARS + 2
    # plain output (a command's) keeps its last lines
    tail = failtext.condense("\n".join(f"line {i}" for i in range(100)), 10).splitlines()
    assert tail[-1] == "line 99" and "earlier line(s) left out" in tail[0] and len(tail) == 10


def _failing_sdist(folder: Path, metadata_version: str) -> Path:
    """``folder`` holding ``badpkg-1.0.tar.gz`` (its setup.py raises) and nothing else. With metadata 2.2 uv reads
    PKG-INFO without building (the resolution passes, the install builds); with 2.1 it builds to resolve."""
    import io
    import tarfile

    folder.mkdir()
    files = {
        "badpkg-1.0/setup.py": 'raise RuntimeError("this sdist cannot be built: cython_sources missing")\n',
        "badpkg-1.0/pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n',
        "badpkg-1.0/PKG-INFO": f"Metadata-Version: {metadata_version}\nName: badpkg\nVersion: 1.0\n",
    }
    with tarfile.open(folder / "badpkg-1.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


@pytest.fixture
def failing_sdist(tmp_path: Path) -> Path:
    return _failing_sdist(tmp_path / "sdists", "2.1")


@pytest.mark.slow
def test_build_failure_leads_with_the_package_and_uvs_first_error_line(
    make_venv, tmp_path: Path, kit_env, kit_index: Path, failing_sdist: Path
) -> None:
    from tests.kit import build_wheel

    wheels = tmp_path / "wheels"
    build_wheel(wheels, "badpkg", "1.0", modules={"badpkg/__init__.py": '__version__ = "1.0"\n'})
    env = make_venv(tmp_path / "envs" / "b", CLASSIC + ["badpkg==1.0"], extra_find_links=[wheels])
    # the index now has only badpkg's source, which does not build
    res = run_cli(
        kit_env,
        "plan",
        "--env",
        env,
        "--offline",
        "--find-links",
        kit_index,
        "--find-links",
        failing_sdist,
        "--to",
        "2.21.0",
        cwd=tmp_path,
    )
    assert res.code == 1, (res.out, res.err)
    message = res.err.split("error:", 1)[1]
    assert message.strip().startswith("uv could not build badpkg==1.0 from source"), res.err
    details = message.split("uv says:", 1)[1].strip().splitlines()
    assert details[0] == "error: Failed to build `badpkg==1.0`", details
    assert "RuntimeError: this sdist cannot be built: cython_sources missing" in message
    assert "cannot be installed together" not in res.err, "a build failure is not a version conflict"


def test_install_build_failure_leads_with_the_package(make_venv, tmp_path: Path, kit_env, kit_index: Path) -> None:
    from tests.kit import build_wheel

    wheels = tmp_path / "wheels"
    build_wheel(wheels, "badpkg", "1.0", modules={"badpkg/__init__.py": '__version__ = "1.0"\n'})
    env = make_venv(tmp_path / "envs" / "b", CLASSIC + ["badpkg==1.0"], extra_find_links=[wheels])
    sdists = _failing_sdist(tmp_path / "sdists", "2.2")  # resolves from PKG-INFO; the install must build it
    res = run_cli(
        kit_env,
        "upgrade",
        "--env",
        env,
        "--offline",
        "--find-links",
        kit_index,
        "--find-links",
        sdists,
        "--to",
        "2.21.0",
        "--yes",
        cwd=tmp_path,
    )
    assert res.code == 1, (res.out, res.err)
    message = res.err.split("error:", 1)[1]
    assert message.strip().startswith(
        "uv pip sync could not build the new environment: it failed to build "
        "badpkg==1.0; your environment was not changed."
    ), res.err
    details = message.split("uv says:", 1)[1].strip().splitlines()
    assert details[0] == "error: Failed to build `badpkg==1.0`", details
    assert "RuntimeError: this sdist cannot be built: cython_sources missing" in message
    assert not re.search(r"^\S*le \"", message, re.M), "no line starts cut mid-word"


# --------------------------------------------------------------------------- doctor's facts


def _fix_command(fix: str) -> list[str]:
    """The first `tfrebuild ...` command a fix names, as arguments (without the program name)."""
    import shlex

    found = re.search(r"`tfrebuild ([^`]+)`", fix)
    assert found, fix
    return shlex.split(found.group(1))


@pytest.mark.slow
def test_doctor_names_the_companion_release_that_moves_and_its_hint_works(
    make_venv, tmp_path: Path, cli, venv_run
) -> None:
    env = make_venv(tmp_path / "envs" / "forests", ["tensorflow==2.18.0", "tensorflow-forests==1.11.0"])
    res = cli("doctor", env, "--json")
    doc = json.loads(res.out)
    (f,) = [f for f in doc["findings"] if f["id"] == "target-blocked"]
    assert f["title"] == "tensorflow-forests 1.11.0 does not allow tensorflow 2.21.0"
    assert (
        "no release of tensorflow-forests on the index accepts 2.21.0; the newest tensorflow a release of it "
        "accepts is 2.20.0: tensorflow-forests 1.12.0 (tensorflow==2.20.0)"
    ) in f["evidence"], f["evidence"]
    args = _fix_command(f["fix"])
    assert args[:1] == ["upgrade"] and "--to" in args and args[args.index("--to") + 1] == "2.20.0", f["fix"]
    assert "2.18.0" not in f["fix"], "the installed TensorFlow is never the fix"
    # the hint, run as printed, gets past the block: TensorFlow and the companion move together
    done = cli(args[0], None, *args[1:], "--yes")
    assert done.code == 0, (done.out, done.err)
    got = venv_run(
        env, "import tensorflow, tensorflow_forests; print(tensorflow.__version__, tensorflow_forests.__version__)"
    )
    assert got.stdout.split() == ["2.20.0", "1.12.0"], got


def test_doctor_never_proposes_the_installed_tensorflow(make_venv, tmp_path: Path, cli) -> None:
    # tensorflow-forests has no release for anything above 2.20.0: on 2.20.0 there is no move to offer
    env = make_venv(tmp_path / "envs" / "stuck", ["tensorflow==2.20.0", "tensorflow-forests==1.12.0"])
    doc = json.loads(cli("doctor", env, "--json").out)
    (f,) = [f for f in doc["findings"] if f["id"] == "target-blocked"]
    assert any(
        "no release of tensorflow-forests on the index accepts 2.21.0 or any tensorflow newer than the "
        "installed 2.20.0" in e
        for e in f["evidence"]
    ), f["evidence"]
    assert "--to" not in f["fix"] and "uv pip uninstall" in f["fix"], f["fix"]


# --------------------------------------------------------------------------- one NumPy story


@pytest.mark.slow
def test_a_numpy1_build_does_not_accept_numpy2_and_doctor_agrees_with_the_plan(make_venv, tmp_path: Path, cli) -> None:
    # opencv-python 4.8.1.78 requires numpy>=... with no upper bound (three requirement lines, one per Python
    # range), but was built for NumPy 1 (the kit's cv2 dies under NumPy 2, as the real one does)
    env = make_venv(tmp_path / "envs" / "cv", ["tensorflow-cpu==2.15.1", "opencv-python==4.8.1.78", "numpy==1.24.3"])
    doc = json.loads(cli("doctor", env, "--to", "2.21.0", "--json").out)
    (f,) = [f for f in doc["findings"] if f["id"] == "dependency-moves"]
    assert f["title"] == (
        "numpy must move 1.24.3 → 1.26.4 for tensorflow-cpu 2.21.0; opencv-python (built for NumPy 1) keeps it below 2"
    ), f
    assert any("opencv-python 4.8.1.78 was built for NumPy 1" in e and "4.10.0.84" in e for e in f["evidence"])
    assert f["title"].count("opencv-python") == 1, "names are not repeated"
    # the plan takes what doctor said, and its pre-flight says the same
    plan = json.loads(cli("plan", env, "--to", "2.21.0", "--json").out)["plan"]
    pins = {c["name"]: c["new"] for c in plan["changes"]}
    assert pins["numpy"] == "1.26.4", plan["changes"]
    moves = [p for p in plan["preflight"] if p["id"] == "dependency-moves"]
    assert [p["title"].split(" for ")[0] for p in moves] == ["numpy must move 1.24.3 → 1.26.4"], plan["preflight"]
    assert not any("2.4.0" in p["title"] for p in plan["preflight"])
    # human output: an info line is not "(fixed by this upgrade)"
    human = cli("plan", env, "--to", "2.21.0").out
    assert "pre-flight (info) dependency-moves: numpy must move 1.24.3 → 1.26.4" in human, human
    assert "fixed by this upgrade) dependency-moves" not in human


def test_numpy1_build_from_the_table_and_from_the_upload_date() -> None:
    from rebuild.doctor import numpyabi
    from rebuild.index.simple import FileInfo
    from packaging.tags import Tag
    from packaging.version import Version

    compiled = {"version": "2.0.3", "wheel_tags": ["cp311-cp311-manylinux_2_17_x86_64"]}
    assert numpyabi.built_for(None, "pandas", compiled)[0] == 1  # below pandas 2.2.2 (the table)
    assert numpyabi.built_for(None, "pandas", {**compiled, "version": "2.2.3"})[0] == 2
    assert numpyabi.built_for(None, "pandas", {**compiled, "wheel_tags": ["py3-none-any"]})[0] is None

    class Ctx:  # the index's files of one release, with their PEP 700 upload times
        def __init__(self, when: str):
            self.when = when

        def files(self, name):
            return [
                FileInfo(
                    "x.whl",
                    "https://i/x.whl",
                    Version("1.0"),
                    None,
                    False,
                    True,
                    frozenset({Tag("cp311", "cp311", "manylinux_2_17_x86_64")}),
                    upload_time=self.when,
                )
            ]

    release = {"version": "1.0", "wheel_tags": ["cp311-cp311-manylinux_2_17_x86_64"]}
    major, why = numpyabi.built_for(Ctx("2023-06-01T10:00:00Z"), "notlisted", release)
    assert major == 1 and "2023-06-01" in why
    assert numpyabi.built_for(Ctx("2024-08-01T10:00:00Z"), "notlisted", release) == (None, "")


def test_upload_date_rule_needs_an_extension_that_imports_numpys_c_api(tmp_path: Path) -> None:
    """A compiled wheel whose shared library numpy's C API never reaches (ctypes, as xgboost's) is not judged by
    its upload date: NumPy 2 does not break it."""
    from packaging.tags import Tag
    from packaging.version import Version

    from rebuild.doctor import numpyabi
    from rebuild.index.simple import FileInfo

    class Ctx:
        def files(self, name):
            return [
                FileInfo(
                    "x.whl",
                    "https://i/x.whl",
                    Version("1.0"),
                    None,
                    False,
                    True,
                    frozenset({Tag("cp311", "cp311", "manylinux_2_17_x86_64")}),
                    upload_time="2023-06-01Z",
                )
            ]

    site = tmp_path / "site-packages"
    info = site / "pkg-1.0.dist-info"
    (site / "pkg").mkdir(parents=True)
    info.mkdir()
    (info / "RECORD").write_text("pkg/__init__.py,,\npkg/lib/libpkg.so,,\npkg-1.0.dist-info/RECORD,,\n")
    (site / "pkg" / "lib").mkdir()
    lib = site / "pkg" / "lib" / "libpkg.so"
    lib.write_bytes(b"\x7fELF" + b"\0" * 64 + b"XGBoosterCreate\0")  # a ctypes library: no NumPy C API
    release = {
        "version": "1.0",
        "wheel_tags": ["cp311-cp311-manylinux_2_17_x86_64"],
        "path": str(info),
        "site_dir": str(site),
    }
    assert numpyabi.uses_numpy_c_api(release) is False
    assert numpyabi.built_for(Ctx(), "notlisted", release) == (None, "")
    lib.write_bytes(b"\x7fELF" + b"\0" * 64 + b"_ARRAY_API\0PyArray_Type\0")  # an extension built on the C API
    assert numpyabi.uses_numpy_c_api(release) is True
    assert numpyabi.built_for(Ctx(), "notlisted", release)[0] == 1
    assert numpyabi.uses_numpy_c_api({"version": "1.0"}) is None  # no files to read: the date rule as before


# --------------------------------------------------------------------------- what is checked


def test_smoke_imports_are_the_real_top_level_modules_and_extras_are_dependencies(
    make_venv, tmp_path: Path, kit_env
) -> None:
    import tomllib

    from tests.kit import build_wheel

    wheels = tmp_path / "wheels"
    # tf-models-official ships two top-level packages, `official` (its main one) and `orbit`; it pulls in etils with
    # its `epath` extra, which brings fsspec and zipp: those are dependencies, not packages the user asked for
    build_wheel(
        wheels,
        "tf-models-official",
        "2.15.0",
        requires=["tensorflow-cpu>=2.15", "etils[epath]"],
        modules={"official/__init__.py": "", "orbit/__init__.py": ""},
    )
    build_wheel(
        wheels,
        "etils",
        "1.5.2",
        requires=['fsspec; extra == "epath"', 'zipp; extra == "epath"'],
        extras={"epath": ("fsspec", "zipp")},
        modules={"etils/__init__.py": ""},
    )
    build_wheel(wheels, "fsspec", "2024.2.0", modules={"fsspec/__init__.py": ""})
    build_wheel(wheels, "zipp", "3.17.0", modules={"zipp/__init__.py": ""})
    env = make_venv(
        tmp_path / "envs" / "models",
        ["tensorflow-cpu==2.15.1", "tf-models-official==2.15.0"],
        extra_find_links=[wheels],
    )
    out = tmp_path / "p.toml"
    res = run_cli(kit_env, "snapshot", "--env", env, "-o", out, cwd=tmp_path)
    assert res.code == 0, res.err
    profile = tomllib.loads(out.read_text())
    # (tensorflow-cpu too is a dependency here: tf-models-official requires it)
    assert profile["requested"] == ["tf-models-official"], profile["requested"]
    assert profile["smoke"]["imports"] == ["official", "orbit"], profile["smoke"]


# --------------------------------------------------------------------------- smaller items


def test_a_huge_to_is_not_echoed_whole(cli, tmp_path: Path) -> None:
    huge = "9" * 100_000
    res = cli("plan", tmp_path / "nowhere", "--to", huge)
    assert res.code == 2, res.err
    assert "is not a TensorFlow version" in res.err and "(100000 characters)" in res.err
    assert len(res.err) < 2000, len(res.err)


@pytest.mark.slow
def test_plan_on_a_mount_point_reports_upgrades_refusal(make_venv, tmp_path: Path, cli) -> None:
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a bind mount needs root and mount(8)")
    source = make_venv(tmp_path / "real" / "tf", CLASSIC)
    point = tmp_path / "envs" / "tf"
    point.mkdir(parents=True)
    res = subprocess.run(["mount", "--bind", str(source), str(point)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        planned, upgraded = cli("plan", point), cli("upgrade", point, "--yes")
        assert planned.code == upgraded.code == 1, (planned.out, planned.err)
        first = [line for line in planned.err.splitlines() if line.startswith("error:")]
        assert first and "is a mount point" in first[0], planned.err
        assert first == [line for line in upgraded.err.splitlines() if line.startswith("error:")]
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_doctor_lists_each_interpreter_once(tmp_path: Path) -> None:
    from rebuild.doctor import checks_target

    # a pyenv layout: the shim is a script, the version's interpreter the real file
    root = tmp_path / "pyenv"
    real = root / "versions" / "3.11.7" / "bin" / "python3.11"
    real.parent.mkdir(parents=True)
    real.write_text("")
    (root / "shims").mkdir()
    for shim in ("python", "python3", "python3.11"):
        (root / "shims" / shim).write_text("#!/bin/sh\n")
    keys = {
        checks_target._real_interpreter(str(root / "shims" / s), "3.11.7") for s in ("python", "python3", "python3.11")
    }
    assert keys == {os.path.realpath(real)}
    assert checks_target._real_interpreter(str(real), "3.11.7") == os.path.realpath(real)

    class Ctx:
        environ = dict(os.environ)

    found = checks_target._other_interpreters(Ctx(), ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"])
    reals = [checks_target._real_interpreter(p, v) for v, p in found]
    assert len(reals) == len(set(reals)), found
    assert not [p for _, p in found if "/shims/" in p], found


def test_pre_flight_statements_agree_with_the_plan() -> None:
    from rebuild.doctor import judge
    from rebuild.doctor.findings import FindingId as F
    from packaging.version import Version

    from rebuild.doctor.findings import Move

    def moves():
        return F.DEPENDENCY_MOVES.make(
            "numpy must move 1.24.3 → 2.4.0 for tensorflow-cpu 2.21.0; scipy accepts it",
            ["newest numpy every requirement accepts: 2.4.0"],
            "moves it",
            fixed_by_rebuild=True,
            move=Move("numpy", "1.24.3", str(Version("2.4.0"))),
        )

    conflict = F.DEPENDENCY_CONFLICT.make(
        "capnum 1.0 and tensorflow-cpu 2.21.0 need incompatible versions of numpy",
        [],
        "upgrade capnum too: `tfrebuild upgrade --env e --to 2.21.0 --strategy eager`, or choose an older --to",
    )
    # the plan took numpy 1.26.4: the statement says so (not the 2.4.0 doctor would have guessed)
    (f,) = judge.agree([moves()], {"numpy": "1.26.4"})
    assert (
        f.title.startswith("numpy must move 1.24.3 → 1.26.4 for") and "the resolution takes numpy 1.26.4" in f.evidence
    )
    # the plan took what doctor said: the statement stands as doctor made it (its evidence not rewritten)
    (same,) = judge.agree([moves()], {"numpy": "2.4.0"})
    assert same.evidence == ["newest numpy every requirement accepts: 2.4.0"], same.evidence
    # the plan kept numpy 1.24.3: nothing moves, nothing is said
    assert judge.agree([moves()], {"numpy": "1.24.3"}) == []
    # under --strategy eager no fix proposes --strategy eager again
    (g,) = judge.agree([conflict], {}, "eager")
    assert "--strategy eager" not in g.fix and g.fix == "choose an older --to"


def test_apply_keeps_the_log_its_failure_names(make_venv, tmp_path: Path, kit_env, kit_index: Path) -> None:
    import tomllib

    import tomli_w

    source = make_venv(tmp_path / "envs" / "src", ["tensorflow-cpu==2.15.1", "six==1.17.0"])
    profile = tmp_path / "p.toml"
    assert run_cli(kit_env, "snapshot", "--env", source, "-o", profile, cwd=tmp_path).code == 0
    data = tomllib.loads(profile.read_text())
    data.setdefault("smoke", {})["imports"] = ["six", "not_a_module_anywhere"]
    profile.write_text(tomli_w.dumps(data))
    target = tmp_path / "new" / "venv"
    res = run_cli(
        kit_env, "apply", profile, "--env", target, "--offline", "--find-links", kit_index, "--yes", cwd=tmp_path
    )
    assert res.code == 1 and "failed its checks" in res.err, res.err
    assert "No module named 'not_a_module_anywhere'" in res.err
    assert not target.exists() and not (target.parent / ".venv.tfrebuild").exists()
    log = _hint_log(res.err.rsplit("hint:", 1)[1])
    assert log.is_file(), f"the hint names {log}, which must exist"
    assert "not_a_module_anywhere" in log.read_text()
    assert stat.S_IMODE(os.lstat(log).st_mode) == 0o600
