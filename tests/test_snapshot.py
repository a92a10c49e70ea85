"""End-to-end tests of ``tfrebuild snapshot`` against real venvs made from the kit's fake wheels.

Every snapshot runs the real CLI in a subprocess (``python -m rebuild snapshot``)
with ``cwd=tmp_path`` and an environment derived from ``kit_env`` (so the
user's pip/uv configuration is not read); the tests check exit codes, what is
printed and what is (or is not) written to disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from tests.kit.cli import CliRun as Snap, run_cli, tree_state
from tests.kit.nvidia import fake_nvidia_smi

from rebuild.env import profile as prof
from tests.kit import create_venv, venv_python

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

TF_ENV = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas"]
SECRET = "s3cr3t-Pa55word"
TOKEN = "tok3n-ABCDEF0123"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def snapshot_cli(kit_env: dict[str, str], tmp_path: Path) -> Callable[..., Snap]:
    """``snapshot_cli(*args, cwd=tmp_path, env={...}, drop=[...])`` runs ``python -m rebuild snapshot``."""

    def _run(
        *args,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        drop=(),
        timeout: float = 120,
        command: str | None = "snapshot",
    ) -> Snap:
        overrides = {**(env or {}), **{key: None for key in drop}}
        return run_cli(
            kit_env, *([command] if command else []), *args, overrides=overrides, cwd=cwd or tmp_path, timeout=timeout
        )

    return _run


def take_json(snapshot_cli, venv: Path, out: Path, **kw) -> tuple[dict, prof.Profile]:
    """Snapshot ``venv`` with ``--json -o out``; return the printed profile and the one written to disk."""
    res = snapshot_cli("--env", venv, "-o", out, "--json", **kw)
    assert res.code == 0, res.err
    doc = res.json()
    on_disk = prof.load(out)
    assert doc["profile"] == dataclasses.asdict(on_disk), "--json and the written TOML disagree"
    return doc["profile"], on_disk


def site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3.*/site-packages")
    return sp


def python_version(venv_or_python: Path) -> str:
    py = venv_python(venv_or_python) if venv_or_python.is_dir() else venv_or_python
    out = subprocess.run(
        [str(py), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def assert_clean_failure(res: Snap, *fragments: str, one_paragraph: bool = True) -> None:
    """Non-zero exit; one paragraph starting ``error:`` with a ``hint:``; no traceback; nothing on stdout."""
    assert res.code != 0, f"expected a failure, got exit 0:\n{res.out}"
    assert res.code == 2, res.err
    assert "Traceback" not in res.err, res.err
    text = res.err.strip()
    lines = text.splitlines()
    assert lines[0].startswith("error: "), res.err
    assert any(line.startswith("hint: ") for line in lines[1:]), res.err
    if one_paragraph:
        assert "\n\n" not in text, f"not one paragraph:\n{res.err}"
    assert res.out == "", res.out
    for fragment in fragments:
        assert fragment in res.err, (fragment, res.err)


def dir_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """A cheap listing of ``root`` (names, sizes, mtimes), skipping top-level entries in ``skip``."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip:
            continue
        st = path.lstat()
        state[str(rel)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def tf_venv(tmp_path_factory, kit_index: Path, kit_env: dict[str, str]) -> Callable[..., Path]:
    """``tf_venv(creator, extra=())``: a TF 2.15 venv shared by the module (tests must not modify it)."""
    made: dict[tuple, Path] = {}

    def _get(creator: str, extra: tuple[str, ...] = ()) -> Path:
        key = (creator, tuple(extra))
        if key not in made:
            path = tmp_path_factory.mktemp(f"tf-{creator}") / "tfenv"
            made[key] = create_venv(
                path, TF_ENV + list(extra), find_links=kit_index, creator=creator, env=dict(kit_env)
            )
        return made[key]

    return _get


# --------------------------------------------------------------------------- env kinds and Pythons


@pytest.mark.parametrize("creator", ["uv", "venv", "virtualenv"])
@pytest.mark.slow
def test_probe_works_on_each_kind_of_venv(creator: str, make_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = make_venv(f"kind-{creator}", ["python-dateutil"], creator=creator)
    data, p = take_json(snapshot_cli, venv, tmp_path / "p.toml")
    assert p.env_kind == creator
    assert p.source == str(venv)
    assert p.interpreter.version == python_version(venv)
    assert p.interpreter.executable == str(venv / "bin" / "python")
    assert p.package("six").required_by == ["python-dateutil"]
    assert p.package("python-dateutil").requested is True
    if creator == "uv":
        # Exact "requested" for uv-made envs: see test_requested_are_exactly_what_was_installed_by_name.
        assert p.package("pip") is None
        assert p.package("six").installer == "uv"
    else:
        assert p.requested == ["python-dateutil"]
        assert p.package("six").requested is False
        # pip-made: pip is in the env, pinned, but never "requested".
        assert p.package("pip") is not None and p.package("pip").requested is False
        assert p.package("six").installer == "pip"
    assert data["env_kind"] == creator


@pytest.mark.parametrize("minor", ["3.8", "3.9", "3.12", "3.13"])
def test_probe_works_on_other_pythons(minor: str, make_venv, require_python, snapshot_cli, tmp_path: Path) -> None:
    python = require_python(minor)
    venv = make_venv(f"py{minor}", ["python-dateutil"], python=python, creator="uv")
    _, p = take_json(snapshot_cli, venv, tmp_path / "p.toml")
    assert p.interpreter.version == python_version(python)
    assert p.interpreter.minor == minor
    assert p.interpreter.soabi.startswith(f"cpython-{minor.replace('.', '')}")
    assert p.env_kind == "uv"
    assert p.platform.system == "Linux" or sys.platform != "linux"
    assert "python-dateutil" in p.requested
    assert p.package("six").required_by == ["python-dateutil"]
    assert p.package("six").installer == "uv"
    sp = site_packages(venv)
    assert sp.parent.name == f"python{minor}"


# --------------------------------------------------------------------------- requested vs dependency


def _assert_tf_dependency_facts(p: prof.Profile) -> None:
    for dep in ("numpy", "keras", "protobuf"):
        pkg = p.package(dep)
        assert pkg is not None, dep
        assert pkg.required_by, f"{dep} has no required_by"
    assert "tensorflow-cpu" in p.package("keras").required_by
    assert set(p.package("numpy").required_by) >= {"pandas", "scipy", "tensorflow-cpu"}
    assert p.package("tensorflow-cpu").required_by == []
    assert p.tensorflow.distribution == "tensorflow-cpu"
    assert p.tensorflow.version == "2.15.1"
    assert p.tensorflow.keras_version == "2.15.0"
    assert p.tensorflow.installed_variants == ["tensorflow-cpu"]
    assert p.package("scipy").version == "1.11.4"
    assert not [w for w in p.warnings if w.kind != "probe"], p.warnings


@pytest.mark.parametrize("creator", ["uv", "venv"])
@pytest.mark.slow
def test_dependency_graph_and_tensorflow_facts(creator: str, tf_venv, snapshot_cli, tmp_path: Path) -> None:
    _, p = take_json(snapshot_cli, tf_venv(creator), tmp_path / "p.toml")
    _assert_tf_dependency_facts(p)
    assert p.env_kind == creator


@pytest.mark.parametrize("creator", ["uv", "venv"])
def test_requested_are_exactly_what_was_installed_by_name(creator: str, tf_venv, snapshot_cli, tmp_path: Path) -> None:
    _, p = take_json(snapshot_cli, tf_venv(creator), tmp_path / "p.toml")
    assert p.requested == ["pandas", "scipy", "tensorflow-cpu"]
    for dep in ("numpy", "keras", "protobuf"):
        assert p.package(dep).requested is False, dep
    assert [pkg.name for pkg in p.packages if pkg.requested] == ["pandas", "scipy", "tensorflow-cpu"]
    assert p.smoke.imports == ["pandas", "scipy", "tensorflow"]
    assert "pip" not in p.requested and "setuptools" not in p.requested


def test_pip_made_env_has_pip_pinned_but_not_requested(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = tf_venv("venv")
    # pip installed itself by name, so it carries a REQUESTED marker: still not "requested".
    (pip_info,) = site_packages(venv).glob("pip-*.dist-info")
    assert (pip_info / "REQUESTED").exists()
    _, p = take_json(snapshot_cli, venv, tmp_path / "p.toml")
    assert p.package("pip") is not None and p.package("pip").requested is False
    assert "pip" not in p.requested


def test_uv_marks_dependencies_as_requested(tf_venv) -> None:
    """uv marks every package it installs REQUESTED (astral-sh/uv#13278): the snapshot must not trust
    those markers when all uv-installed distributions carry one. If uv stops doing this, revisit."""
    assert (next(site_packages(tf_venv("uv")).glob("keras-*.dist-info")) / "REQUESTED").exists()
    assert not (next(site_packages(tf_venv("venv")).glob("keras-*.dist-info")) / "REQUESTED").exists()


@pytest.mark.slow
def test_requested_marker_makes_a_dependency_requested(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    # uv marks every package REQUESTED (see above), so only pip tells explicit numpy from numpy-as-dependency.
    venv = tf_venv("venv", ("numpy==1.26.4",))
    numpy_info = next(site_packages(venv).glob("numpy-*.dist-info"))
    keras_info = next(site_packages(venv).glob("keras-*.dist-info"))
    assert (numpy_info / "REQUESTED").exists() and not (keras_info / "REQUESTED").exists()
    _, p = take_json(snapshot_cli, venv, tmp_path / "p.toml")
    numpy = p.package("numpy")
    assert numpy.requested is True
    assert numpy.version == "1.26.4"
    assert numpy.required_by, "an explicitly requested numpy is still a dependency of others"
    assert p.requested == ["numpy", "pandas", "scipy", "tensorflow-cpu"]
    assert p.package("keras").requested is False
    assert p.smoke.imports == ["numpy", "pandas", "scipy", "tensorflow"]


# --------------------------------------------------------------------------- warnings (damaged envs)


def test_damage_is_reported_as_warnings_and_snapshot_succeeds(make_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = make_venv("damaged", ["tensorflow==2.15.1", "tensorflow-cpu==2.15.1"], creator="uv")
    sp = site_packages(venv)
    tilde = sp / "~ensorflow"
    tilde.mkdir()
    (tilde / "__init__.py").write_text("")
    half = sp / "halfdone-1.0.dist-info"
    half.mkdir()
    (half / "RECORD").write_text("halfdone/__init__.py,,\n")
    nameless = sp / "nameless-2.0.dist-info"
    nameless.mkdir()
    (nameless / "METADATA").write_text("Metadata-Version: 2.1\nSummary: no name, no version\n")
    numpy_info = next(sp.glob("numpy-1.26.4.dist-info"))
    stale = sp / "numpy-1.24.3.dist-info"
    shutil.copytree(numpy_info, stale)
    meta = (stale / "METADATA").read_text()
    assert "Version: 1.26.4" in meta
    (stale / "METADATA").write_text(meta.replace("Version: 1.26.4", "Version: 1.24.3"))

    out = tmp_path / "damaged.toml"
    res = snapshot_cli("--env", venv, "-o", out)
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    p = prof.load(out)
    by_kind: dict[str, list[prof.Warning]] = {}
    for w in p.warnings:
        by_kind.setdefault(w.kind, []).append(w)

    assert [w.path for w in by_kind["tilde-folder"]] == [str(tilde)]
    assert [w.path for w in by_kind["no-metadata"]] == [str(half)]
    assert [w.path for w in by_kind["bad-metadata"]] == [str(nameless)]
    (dup,) = by_kind["duplicate-dist-info"]
    assert dup.path in (str(stale), str(numpy_info))
    assert str(stale) in dup.message and str(numpy_info) in dup.message
    assert "1.24.3" in dup.message and "1.26.4" in dup.message
    (variants,) = by_kind["tensorflow-variants"]
    assert variants.path == str(next(sp.glob("tensorflow-2.15.1.dist-info")))
    assert "tensorflow" in variants.message and "tensorflow-cpu" in variants.message
    assert p.tensorflow.installed_variants == ["tensorflow", "tensorflow-cpu"]
    assert p.tensorflow.version == "2.15.1"
    # The damaged entries are not mistaken for packages.
    assert p.package("halfdone") is None and p.package("nameless") is None
    assert p.package("numpy").version in ("1.24.3", "1.26.4")
    # The human summary shows each warning with its path.
    for w in p.warnings:
        assert f"warning {w.kind}" in res.out
        assert w.path in res.out


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A cwd for snapshots whose contents are compared before/after failing runs."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("unrelated\n")
    return work


def test_nonexistent_env(snapshot_cli, workdir: Path) -> None:
    before = dir_state(workdir)
    res = snapshot_cli("--env", workdir / "no-such-env", "-o", "out.toml", cwd=workdir)
    assert_clean_failure(res, str(workdir / "no-such-env"), "does not exist", "--env")
    assert dir_state(workdir) == before
    # Default output: no profiles/ folder either.
    res = snapshot_cli("--env", workdir / "no-such-env", cwd=workdir)
    assert_clean_failure(res, "does not exist")
    assert dir_state(workdir) == before
    assert not (workdir / "profiles").exists()


def test_nonexistent_env_with_json(snapshot_cli, workdir: Path) -> None:
    res = snapshot_cli("--env", workdir / "no-such-env", "--json", cwd=workdir)
    assert res.code == 2
    doc = res.json()
    assert doc["ok"] is False
    assert "does not exist" in doc["error"] and doc["hint"]
    assert "Traceback" not in res.err
    assert not (workdir / "profiles").exists()


def test_folder_that_is_not_a_python_env(snapshot_cli, workdir: Path) -> None:
    plain = workdir / "just-a-folder"
    plain.mkdir()
    (plain / "README").write_text("hello\n")
    before = dir_state(workdir)
    res = snapshot_cli("--env", plain, cwd=workdir)
    assert_clean_failure(res, str(plain), "not a Python environment", "bin/python")
    assert dir_state(workdir) == before
    assert not (workdir / "profiles").exists()


def test_file_that_is_not_an_interpreter(snapshot_cli, workdir: Path) -> None:
    before = dir_state(workdir)
    res = snapshot_cli("--env", workdir / "keep.txt", "-o", "out.toml", cwd=workdir)
    assert_clean_failure(res, "not an executable interpreter")
    assert dir_state(workdir) == before


def _replace_python(venv: Path, script: str) -> None:
    py = venv / "bin" / "python"
    py.unlink()
    py.write_text("#!/bin/sh\n" + script + "\n")
    py.chmod(0o755)


def test_interpreter_that_crashes(make_venv, snapshot_cli, workdir: Path) -> None:
    venv = make_venv("crashing")
    _replace_python(venv, 'echo "Fatal Python error: init_fs_encoding: failed to get the Python codec" >&2\nexit 3')
    before = dir_state(workdir)
    res = snapshot_cli("--env", venv, cwd=workdir)
    assert_clean_failure(res, "exit 3", str(venv / "bin" / "python"), "Fatal Python error")
    assert dir_state(workdir) == before
    assert not (workdir / "profiles").exists()


def _garbage_run(make_venv, snapshot_cli, workdir: Path) -> Snap:
    venv = make_venv("chatty")
    _replace_python(venv, 'echo "Welcome to my shell profile!"\nexit 0')
    return snapshot_cli("--env", venv, "-o", "out.toml", cwd=workdir)


def test_interpreter_that_prints_garbage(make_venv, snapshot_cli, workdir: Path) -> None:
    before = dir_state(workdir)
    res = _garbage_run(make_venv, snapshot_cli, workdir)
    assert_clean_failure(res, "not the probe's report", "Welcome to my shell profile!", one_paragraph=False)
    assert dir_state(workdir) == before


def test_interpreter_that_prints_garbage_gives_one_paragraph(make_venv, snapshot_cli, workdir: Path) -> None:
    res = _garbage_run(make_venv, snapshot_cli, workdir)
    assert_clean_failure(res, "not the probe's report")


def test_interpreter_that_hangs_times_out(make_venv, snapshot_cli, workdir: Path) -> None:
    venv = make_venv("hanging")
    _replace_python(venv, "exec sleep 60")
    before = dir_state(workdir)
    res = snapshot_cli("--env", venv, "-o", "out.toml", cwd=workdir, env={"TFREBUILD_PROBE_TIMEOUT": "2"}, timeout=50)
    assert_clean_failure(res, "did not answer within 2 s", "TFREBUILD_PROBE_TIMEOUT")
    assert res.seconds < 10, f"took {res.seconds:.1f}s for a 2 s timeout"
    assert dir_state(workdir) == before


def test_output_under_a_regular_file_is_refused(tf_venv, snapshot_cli, workdir: Path) -> None:
    venv = tf_venv("uv")
    blocker = workdir / "keep.txt"
    before = dir_state(workdir)
    for target in (blocker / "out.toml", blocker / "sub" / "out.toml"):
        res = snapshot_cli("--env", venv, "-o", target, cwd=workdir)
        assert_clean_failure(res, "Cannot write", str(target))
        assert dir_state(workdir) == before
        assert blocker.read_text() == "unrelated\n"
    assert not (workdir / "profiles").exists()


def test_output_in_an_immutable_folder_is_refused(tf_venv, snapshot_cli, workdir: Path) -> None:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not available")
    locked = workdir / "locked"
    locked.mkdir()
    if subprocess.run([chattr, "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("this file system does not support the immutable attribute")
    try:
        probe_file = locked / "probe"
        try:
            probe_file.write_text("x")
        except OSError:
            pass
        else:  # pragma: no cover - immutable flag ignored
            probe_file.unlink()
            pytest.skip("the immutable attribute does not stop writes here")
        before = dir_state(workdir)
        for target in (locked / "out.toml", locked / "sub" / "out.toml"):
            res = snapshot_cli("--env", tf_venv("uv"), "-o", target, cwd=workdir)
            assert_clean_failure(res, str(target))
            assert "writ" in res.err  # "not writable" / "Cannot write"
            assert dir_state(workdir) == before
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run([chattr, "-i", str(locked)], capture_output=True)


def test_existing_output_needs_force(tf_venv, snapshot_cli, workdir: Path) -> None:
    venv = tf_venv("uv")
    out = workdir / "profile.toml"
    out.write_text("# my precious notes\n")
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    before = dir_state(workdir)
    res = snapshot_cli("--env", venv, "-o", out, cwd=workdir)
    assert_clean_failure(res, str(out), "already exists", "--force")
    assert out.read_text() == "# my precious notes\n"
    assert dir_state(workdir) == before

    res = snapshot_cli("--env", venv, "-o", out, "--force", cwd=workdir)
    assert res.code == 0, res.err
    p = prof.load(out)
    assert p.tensorflow.distribution == "tensorflow-cpu"
    assert f"Wrote {out}" in res.out
    # Written atomically: no temporary file left beside it.
    assert sorted(x.name for x in workdir.iterdir()) == ["keep.txt", "profile.toml"]


def test_existing_folder_as_output_is_refused_even_with_force(tf_venv, snapshot_cli, workdir: Path) -> None:
    folder = workdir / "a-folder.toml"
    folder.mkdir()
    before = dir_state(workdir)
    res = snapshot_cli("--env", tf_venv("uv"), "-o", folder, "--force", cwd=workdir)
    assert_clean_failure(res, "is a folder")
    assert dir_state(workdir) == before


# --------------------------------------------------------------------------- never modifies the env


@pytest.mark.parametrize("creator", ["uv", "venv"])
def test_snapshot_never_modifies_the_env(creator: str, tf_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = tf_venv(creator)
    before = tree_state(venv)
    assert len(before) > 50
    time.sleep(0.01)  # so that any rewrite would show in mtime_ns
    res = snapshot_cli("--env", venv, "-o", tmp_path / "a.toml")
    assert res.code == 0, res.err
    res = snapshot_cli("--env", venv / "bin" / "python", "-o", tmp_path / "b.toml", "--json")
    assert res.code == 0, res.err
    after = tree_state(venv)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == []


# --------------------------------------------------------------------------- default env and output


def test_default_env_from_virtual_env(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = tf_venv("uv")
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = snapshot_cli(cwd=work, env={"VIRTUAL_ENV": str(venv)})
    assert res.code == 0, res.err
    expected = work / "profiles" / f"{venv.name}.toml"
    assert expected.is_file()
    assert f"Wrote {expected}" in res.out
    assert prof.load(expected).source == str(venv)


def test_default_env_is_dot_venv_in_cwd(make_venv, snapshot_cli, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    venv = make_venv(project / ".venv", ["python-dateutil"])
    res = snapshot_cli(cwd=project)  # kit_env has no VIRTUAL_ENV
    assert res.code == 0, res.err
    expected = project / "profiles" / "proj-venv.toml"
    assert expected.is_file(), sorted(str(p) for p in project.rglob("*.toml"))
    p = prof.load(expected)
    assert p.source == str(venv)
    assert p.package("six").required_by == ["python-dateutil"]
    # A second run refuses to overwrite the default output.
    res = snapshot_cli(cwd=project)
    assert_clean_failure(res, "already exists")


def test_virtual_env_wins_over_dot_venv(make_venv, tf_venv, snapshot_cli, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    make_venv(project / ".venv", ["six"])
    active = tf_venv("uv")
    res = snapshot_cli("--json", cwd=project, env={"VIRTUAL_ENV": str(active)})
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["profile"]["source"] == str(active)
    assert doc["written_to"] == str(project / "profiles" / f"{active.name}.toml")


def test_default_output_for_an_interpreter_path(make_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = make_venv("named-env", ["six"])
    work = tmp_path / "w"
    work.mkdir()
    res = snapshot_cli("--env", venv / "bin" / "python", "--json", cwd=work)
    assert res.code == 0, res.err
    assert res.json()["written_to"] == str(work / "profiles" / "named-env-python.toml")


def test_no_env_anywhere(snapshot_cli, workdir: Path) -> None:
    before = dir_state(workdir)
    res = snapshot_cli(cwd=workdir)
    assert_clean_failure(res, "No environment given", str(workdir / ".venv"), "--env")
    assert dir_state(workdir) == before


# --------------------------------------------------------------------------- --json


def test_json_output_is_one_document(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    out = tmp_path / "j.toml"
    res = snapshot_cli("--env", tf_venv("uv"), "-o", out, "--json")
    assert res.code == 0, res.err
    assert res.err == ""
    doc = json.loads(res.out)  # the whole of stdout, nothing else
    assert isinstance(doc, dict)
    assert {"profile", "written_to"} <= set(doc)
    assert doc["ok"] is True
    assert doc["written_to"] == str(out)
    assert doc["profile"] == dataclasses.asdict(prof.load(out))
    assert doc["profile"]["tensorflow"]["version"] == "2.15.1"
    assert not res.out.lstrip().startswith("Snapshot of")


def test_human_output_summary(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = tf_venv("venv")
    out = tmp_path / "h.toml"
    res = snapshot_cli("--env", venv, "-o", out)
    assert res.code == 0, res.err
    p = prof.load(out)
    assert f"Snapshot of {venv} (venv, Python {p.interpreter.version}" in res.out
    assert f"{len(p.packages)} distributions, 3 requested: pandas, scipy, tensorflow-cpu" in res.out
    assert "TensorFlow: tensorflow-cpu 2.15.1, keras 2.15.0" in res.out
    assert f"Wrote {out}" in res.out


# --------------------------------------------------------------------------- index settings


def test_index_settings_are_recorded_and_redacted(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    out = tmp_path / "idx.toml"
    env = {
        "PIP_INDEX_URL": f"https://user:{SECRET}@mirror.example/simple",
        "PIP_EXTRA_INDEX_URL": f"https://{TOKEN}@tokens.example/simple https://pypi.org/simple",
    }
    res = snapshot_cli("--env", tf_venv("uv"), "-o", out, "--json", env=env)
    assert res.code == 0, res.err
    p = prof.load(out)
    assert p.index.index_url == "https://user:****@mirror.example/simple"
    assert p.index.extra_index_urls == ["https://****@tokens.example/simple", "https://pypi.org/simple"]
    assert p.index.index_strategy == "unsafe-best-match"
    origins = {(s.origin, s.key) for s in p.index.settings}
    assert ("environment (PIP_*)", "index_url") in origins
    assert ("environment (PIP_*)", "extra_index_urls") in origins
    text = out.read_text()
    for secret in (SECRET, TOKEN):
        assert secret not in text
        assert secret not in res.out
        assert secret not in res.err
    # Human output too.
    res = snapshot_cli("--env", tf_venv("uv"), "-o", out, "--force", env=env)
    assert res.code == 0 and SECRET not in res.out and TOKEN not in res.out


def test_pip_conf_inside_the_env_is_recorded_and_redacted(make_venv, snapshot_cli, tmp_path: Path) -> None:
    venv = make_venv("conf", ["six"])
    (venv / "pip.conf").write_text(f"[global]\nindex-url = https://alice:{SECRET}@corp.example/simple\n")
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "conf.toml"
    res = snapshot_cli(
        "--env",
        venv,
        "-o",
        out,
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CONFIG_DIRS": str(home / "xdg")},
        drop=("PIP_CONFIG_FILE",),
    )
    assert res.code == 0, res.err
    p = prof.load(out)
    assert p.index.index_url == "https://alice:****@corp.example/simple"
    assert any(s.origin == f"pip config {venv / 'pip.conf'}" and s.key == "index_url" for s in p.index.settings)
    assert SECRET not in out.read_text()


def test_named_uv_index_is_redacted(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    out = tmp_path / "uvidx.toml"
    res = snapshot_cli(
        "--env", tf_venv("uv"), "-o", out, env={"UV_INDEX": f"corp=https://bob:{SECRET}@corp.example/simple"}
    )
    assert res.code == 0, res.err
    assert "corp.example" in out.read_text()
    assert SECRET not in out.read_text()


# --------------------------------------------------------------------------- GPU facts


def test_gpu_facts_from_nvidia_smi(tf_venv, snapshot_cli, tmp_path: Path, kit_env: dict[str, str]) -> None:
    bindir = tmp_path / "fakebin"
    smi = fake_nvidia_smi(bindir, "h100-590")
    out = tmp_path / "gpu.toml"
    cuda_vars = (
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDNN_PATH",
        "CUDA_VISIBLE_DEVICES",
        "LD_LIBRARY_PATH",
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "XLA_FLAGS",
    )
    env = {
        "PATH": f"{bindir}{os.pathsep}{kit_env.get('PATH', '')}",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    res = snapshot_cli("--env", tf_venv("uv"), "-o", out, env=env, drop=[v for v in cuda_vars if v not in env])
    assert res.code == 0, res.err
    g = prof.load(out).gpu
    assert g.nvidia_smi == str(smi)
    assert g.gpus == ["NVIDIA H100 80GB HBM3"]
    assert g.driver_version == "590.48.01"
    assert g.cuda_version == "13.1"
    assert g.environ == {"CUDA_VISIBLE_DEVICES": "0", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}
    assert "GPU: NVIDIA H100 80GB HBM3 (driver 590.48.01, CUDA 13.1)" in res.out


def test_no_gpu_facts_without_nvidia_smi(tf_venv, snapshot_cli, tmp_path: Path) -> None:
    bare_path = os.pathsep.join(["/usr/bin", "/bin"])
    if shutil.which("nvidia-smi", path=bare_path):
        pytest.skip("this machine has a real nvidia-smi in /usr/bin or /bin")
    out = tmp_path / "nogpu.toml"
    res = snapshot_cli("--env", tf_venv("uv"), "-o", out, env={"PATH": bare_path})
    assert res.code == 0, res.err
    g = prof.load(out).gpu
    assert (g.nvidia_smi, g.driver_version, g.cuda_version, g.gpus) == ("", "", "", [])
    assert "GPU:" not in res.out


# --------------------------------------------------------------------------- --version / --help


def test_version_and_help(snapshot_cli, tmp_path: Path) -> None:
    from rebuild import __version__

    res = snapshot_cli("--version", command=None)
    assert res.code == 0 and res.out.strip() == f"tfrebuild {__version__}"
    res = snapshot_cli("--help", command=None)
    assert res.code == 0 and "snapshot" in res.out and "Usage" in res.out
    res = snapshot_cli("--help")
    assert res.code == 0
    assert "Example" in res.out and "--env" in res.out and "--force" in res.out and "--json" in res.out


def test_console_script_runs(kit_env: dict[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("tfrebuild")
    if not script.exists():
        found = shutil.which("tfrebuild", path=kit_env.get("PATH"))
        if not found:
            pytest.skip("the tfrebuild console script is not installed")
        script = Path(found)
    from rebuild import __version__

    proc = subprocess.run(
        [str(script), "--version"], cwd=tmp_path, env=dict(kit_env), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tfrebuild {__version__}"
    proc = subprocess.run(
        [str(script), "snapshot", "--help"], cwd=tmp_path, env=dict(kit_env), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "Example" in proc.stdout


def test_nothing_installed_is_left_out_of_what_the_new_env_is_resolved_from() -> None:
    """What resolving the requested packages would not bring back is requested too, the fewest names: a package
    named only through another's extra, and a dependency cycle that nothing requested reaches (as when the
    REQUESTED marks are overruled by the graph: a pinned `pip install -r`, every mark of uv). TensorFlow's own
    extras stay the plan's (its GPU route); pip and tfrebuild's own dependencies are never named."""
    from rebuild.env import graph, snapshot

    def dist(*requires: str, extras: tuple[str, ...] = ()) -> dict:
        return {"requires": list(requires), "provides_extra": list(extras), "location": "env", "version": "1"}

    chosen = {
        "app": dist("lib"),
        "lib": dist(),
        "etils": dist('fsspec ; extra == "epath"', extras=("epath",)),
        "fsspec": dist(),
        "jupyterlab": dist("notebook-shim"),
        "notebook-shim": dist("jupyter-server"),
        "jupyter-server": dist("jupyterlab"),
        "server-dep": dist(),
        "tensorflow": dist('nvidia-cudnn-cu12 ; extra == "and-cuda"', extras=("and-cuda",)),
        "nvidia-cudnn-cu12": dist(),
        "pip": dist(),
    }
    chosen["jupyter-server"]["requires"].append("server-dep")
    edges = graph.edges(
        {n: d["requires"] for n, d in chosen.items()},
        graph.marker_environment({"version_info": [3, 11, 7]}, {"system": "Linux"}),
        {n: d["provides_extra"] for n, d in chosen.items()},
    )
    kept = snapshot.unreached(chosen, ["app", "etils", "tensorflow"], edges)
    assert kept == {"fsspec", "jupyter-server"}, kept  # one of the cycle brings the other two back
    assert snapshot.unreached(chosen, ["app", "etils", "tensorflow", *sorted(kept)], edges) == set()
    # an extra a reached requirement asks for brings its packages back: nothing more to keep
    chosen["datasets"] = dist("etils[epath]")
    edges = graph.edges(
        {n: d["requires"] for n, d in chosen.items()},
        graph.marker_environment({"version_info": [3, 11, 7]}, {"system": "Linux"}),
        {n: d["provides_extra"] for n, d in chosen.items()},
    )
    assert snapshot.unreached(chosen, ["app", "datasets", "tensorflow", "jupyter-server"], edges) == set()
