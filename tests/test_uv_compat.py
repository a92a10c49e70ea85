"""The real uv against what tfrebuild reads from it: its version and the output it parses.

tfrebuild runs uv as a program and reads its words: the ``name==version`` lines and the
``# via`` annotations of ``uv pip compile`` (core/resolve.py), the package names in an
unsatisfiable explanation (core/plan.py ``conflict_error``) and the pylock it writes
(core/lockfile.py). pyproject.toml bounds uv to the versions this was tested with; when
a newer uv words things differently, these tests say which part to look at before the
bound is widened. Offline: two tiny wheels in a --find-links folder, no index.
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from rebuild.core import lockfile, resolve
from rebuild.util import uv as uvcmd
from rebuild.env.profile import Index

ROOT = Path(__file__).resolve().parent.parent


def _declared_uv() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "uv")


def _wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> None:
    dist = f"{name}-{version}.dist-info"
    meta = "".join(
        [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", *(f"Requires-Dist: {r}\n" for r in requires)]
    )
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{dist}/METADATA", meta)
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


def _inputs(folder: Path, tmp_path: Path) -> resolve.Inputs:
    return resolve.Inputs(
        python=Path(sys.executable),
        tf_distribution="alpha",
        requested=[],
        pins={},
        index=Index(no_index=True, find_links=[str(folder)]),
        offline=True,
        log=tmp_path / "uv.log",
    )


def _advice(what: str) -> str:
    return (
        f"\nuv at {uvcmd.uv_bin()} ({uvcmd.version()}) {what}. tfrebuild is tested with "
        f"{_declared_uv()}: adapt the parsing named above, then widen the bound in pyproject.toml."
    )


def test_uv_version_is_in_the_declared_range():
    declared = _declared_uv()
    assert declared.specifier, "pyproject.toml must bound uv to the versions tfrebuild was tested with"
    assert not declared.specifier.contains("999"), "the uv bound needs an upper limit"
    text = uvcmd.version()  # "uv 0.13.9 (x86_64-unknown-linux-gnu)"
    assert text.startswith("uv "), f"`uv --version` printed {text!r}, not 'uv X.Y.Z ...'"
    found = Version(text.split()[1])
    assert declared.specifier.contains(found, prereleases=True), (
        f"uv {found} at {uvcmd.uv_bin()} is outside the tested range {declared}; run tests/test_uv_compat.py "
        "and the plan/apply tests with it, then move the bound in pyproject.toml"
    )


def test_uv_compile_output_is_what_resolve_parses(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "alpha", "1.0", ["beta>=2"])
    _wheel(folder, "beta", "1.0")
    _wheel(folder, "beta", "2.0")
    inputs = _inputs(folder, tmp_path)
    assert resolve.find_target(inputs, resolve.parse_target("latest")) == "1.0", _advice(
        "printed no `alpha==1.0` line for resolve.find_target"
    )
    got = resolve.resolve(inputs, "1.0")
    assert got.pins == {"alpha": "1.0", "beta": "2.0"}, _advice(
        "wrote `name==version` lines resolve._parse_requirements_output does not read"
    )
    assert got.via == {"alpha": ["(requested)"], "beta": ["alpha"]}, _advice(
        "annotated `# via` (--annotation-style split) differently from what resolve._parse_requirements_output reads"
    )
    lock = lockfile.parse_lock(got.pylock, "uv's pylock")
    assert lock.pins() == got.pins and lock.all_hashed, _advice("wrote a pylock lockfile.parse_lock reads otherwise")


def test_uv_unsatisfiable_explanation_names_the_packages(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder, "alpha", "1.0", ["beta>=2"])
    _wheel(folder, "beta", "1.0")
    with pytest.raises(resolve.ResolutionFailed) as failed:
        resolve.resolve(_inputs(folder, tmp_path), "1.0")
    text = failed.value.explanation.lower()
    assert "alpha" in text and "beta" in text, _advice(
        f"explained a conflict without naming its packages (plan.conflict_error looks for them): {text!r}"
    )
    assert "no solution found" in text, _advice(f"words an unsatisfiable resolution differently: {text!r}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(resolve.ResolutionFailed) as missing:
        resolve.find_target(_inputs(empty, tmp_path), resolve.parse_target("2.18"))
    assert "alpha" in missing.value.explanation.lower(), _advice(
        f"explained a missing package without naming it: {missing.value.explanation!r}"
    )
