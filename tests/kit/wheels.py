"""Write tiny, valid, installable wheels with nothing but the standard library.

:func:`build_wheel` produces a ``py3-none-any`` (by default) wheel holding the
given modules plus a complete ``.dist-info`` directory (``METADATA``,
``WHEEL``, ``top_level.txt``, optional ``entry_points.txt`` and a ``RECORD``
with sha256 hashes).  The bytes are deterministic: building the same wheel
twice gives the same file, hence the same hash, so uv's cache and any lock
files that record hashes stay valid across test sessions.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["build_wheel", "normalize_name", "wheel_filename", "record_rows"]

#: Fixed timestamp for every zip member (the earliest a zip can express).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_GENERATOR = "tfrebuild-test-kit (1.0)"


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name (``Tensorflow_CPU`` -> ``tensorflow-cpu``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _escape(name: str) -> str:
    """Wheel-filename form of a project name: runs of ``-_.`` become ``_``, lower case."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    """The file name :func:`build_wheel` gives a wheel, e.g. ``tensorflow_cpu-2.15.1-py3-none-any.whl``."""
    return f"{_escape(name)}-{version.replace('-', '_')}-{tag}.whl"


def _hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_extra(requirement: str, extra: str) -> str:
    """Append ``extra == "<extra>"`` to a requirement, keeping any marker it already has."""
    if ";" in requirement:
        req, marker = requirement.split(";", 1)
        return f'{req.strip()} ; ({marker.strip()}) and extra == "{extra}"'
    return f'{requirement.strip()} ; extra == "{extra}"'


def _metadata(
    name: str,
    version: str,
    requires: Iterable[str],
    requires_python: str | None,
    extras: Mapping[str, Iterable[str]],
) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Fake {name} {version} for the tfrebuild test kit",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    for req in requires:
        lines.append(f"Requires-Dist: {req}")
    for extra, reqs in extras.items():
        lines.append(f"Provides-Extra: {extra}")
        for req in reqs:
            lines.append(f"Requires-Dist: {_with_extra(req, extra)}")
    return "\n".join(lines) + "\n"


def _wheel_file(tag: str) -> str:
    lines = [
        "Wheel-Version: 1.0",
        f"Generator: {_GENERATOR}",
        "Root-Is-Purelib: " + ("true" if tag.endswith("-none-any") else "false"),
    ]
    lines += [f"Tag: {t}" for t in _expand_tag(tag)]
    return "\n".join(lines) + "\n"


def _expand_tag(tag: str) -> list[str]:
    """``py2.py3-none-any`` -> ``["py2-none-any", "py3-none-any"]`` (compressed tag sets)."""
    py, abi, plat = tag.split("-")
    return [f"{p}-{a}-{pl}" for p in py.split(".") for a in abi.split(".") for pl in plat.split(".")]


def _entry_points(entry_points: Mapping[str, str]) -> str:
    lines = ["[console_scripts]"]
    lines += [f"{script} = {target}" for script, target in entry_points.items()]
    return "\n".join(lines) + "\n"


def _top_level(modules: Mapping[str, str]) -> str:
    tops: list[str] = []
    for rel in modules:
        first = rel.split("/", 1)[0]
        top = first[:-3] if first.endswith(".py") and "/" not in rel else first
        if top not in tops:
            tops.append(top)
    return "".join(f"{t}\n" for t in tops)


def _zipinfo(arcname: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # no zlib involved: identical bytes on every machine
    info.external_attr = (0o100644 & 0xFFFF) << 16  # regular file, rw-r--r--
    info.create_system = 3  # unix, so external_attr is honoured everywhere
    return info


def build_wheel(
    dest_dir: str | Path,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    extras: Mapping[str, Iterable[str]] | None = None,
    modules: Mapping[str, str] | None = None,
    entry_points: Mapping[str, str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """Write ``<dest_dir>/<name>-<version>-<tag>.whl`` and return its path.

    ``requires`` are PEP 508 strings (markers allowed); ``extras`` maps an extra
    name to its requirements, each of which gets an ``extra == "<name>"``
    marker.  ``modules`` maps a path inside the wheel (``pkg/__init__.py``) to
    its source text; without it the wheel holds one package named after the
    project (``-`` -> ``_``) whose ``__init__.py`` sets ``__version__``.
    ``entry_points`` maps a console-script name to ``"module:function"``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    if modules is None:
        pkg = _escape(name)
        modules = {f"{pkg}/__init__.py": f'"""Fake {name}."""\n__version__ = "{version}"\n'}
    extras = dict(extras or {})
    dist_info = f"{_escape(name)}-{version.replace('-', '_')}.dist-info"

    files: list[tuple[str, bytes]] = [(rel, src.encode("utf-8")) for rel, src in modules.items()]
    files.append((f"{dist_info}/METADATA", _metadata(name, version, requires, requires_python, extras).encode()))
    files.append((f"{dist_info}/WHEEL", _wheel_file(tag).encode()))
    if entry_points:
        files.append((f"{dist_info}/entry_points.txt", _entry_points(entry_points).encode()))
    files.append((f"{dist_info}/top_level.txt", _top_level(modules).encode()))

    record_path = f"{dist_info}/RECORD"
    record = "".join(f"{path},{_hash(data)},{len(data)}\n" for path, data in files)
    record += f"{record_path},,\n"
    files.append((record_path, record.encode()))

    out = dest / wheel_filename(name, version, tag)
    tmp = out.with_suffix(".whl.part")
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, data in files:
            zf.writestr(_zipinfo(arcname), data)
    tmp.replace(out)
    return out


def record_rows(wheel: str | Path) -> list[tuple[str, str, str]]:
    """The ``(path, hash, size)`` rows of a wheel's RECORD (for checking a wheel)."""
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        text = zf.read(record).decode("utf-8")
    return [tuple(line.rsplit(",", 2)) for line in text.splitlines() if line]  # type: ignore[misc]
