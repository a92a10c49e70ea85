"""The dependency graph of installed distributions, from their ``Requires-Dist``.

Markers are evaluated for the *target* interpreter (from the probe), not for
the interpreter tfrebuild runs on.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rebuild.util import versions


def marker_environment(interpreter: dict, platform: dict) -> dict[str, str]:
    """PEP 508 marker variables for the probed interpreter."""
    info = interpreter.get("version_info") or [0, 0, 0]
    system = platform.get("system", "")
    impl = interpreter.get("implementation", "cpython")
    full = ".".join(str(p) for p in info[:3])
    return {
        "implementation_name": impl,
        "implementation_version": full,
        "os_name": "nt" if system == "Windows" else "posix",
        "platform_machine": platform.get("machine", ""),
        "platform_release": platform.get("release", ""),
        "platform_system": system,
        "platform_version": "",
        "python_full_version": interpreter.get("version", ""),
        "platform_python_implementation": {"cpython": "CPython", "pypy": "PyPy"}.get(impl, impl),
        "python_version": versions.minor(full),
        "sys_platform": {"Linux": "linux", "Darwin": "darwin", "Windows": "win32"}.get(system, system.lower()),
    }


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    requirement: str
    via_extra: bool


#: The project name a requirement line starts with (PEP 508's, as packaging reads it), found without parsing.
_LEADING_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@functools.lru_cache(maxsize=8192)  # the same requirement lines are asked about again and again (plan notes)
def parse(requirement: str) -> Requirement | None:
    """``requirement`` parsed (``None`` when malformed); shared: callers never change it."""
    try:
        return Requirement(requirement)
    except InvalidRequirement:
        return None


#: ``extra == "name"``: how a marker asks for an extra (packaging writes markers with double quotes).
_EXTRA_EQUALS = re.compile(r'\bextra == "([^"]*)"')


@functools.lru_cache(maxsize=4096)
def _compared_extras(marker: str) -> frozenset[str] | None:
    """The extras (canonical) a marker compares ``extra`` with by ``==``; ``None`` when it uses ``extra`` any other
    way. A marker false with no extra stays false with an extra it does not name, so only those need evaluating."""
    named = _EXTRA_EQUALS.findall(marker)
    if marker.count("extra") != len(named):
        return None
    return frozenset(canonicalize_name(n) for n in named)


@functools.lru_cache(maxsize=4096)
def _marker(text: str) -> Marker | None:
    """The marker ``text`` parsed (``None`` when malformed); shared."""
    try:
        return Marker(text)
    except InvalidMarker:
        return None


@dataclass(frozen=True)
class Line:
    """What the graph reads of a requirement line: its name (canonical), its extras, its marker."""

    name: str
    extras: frozenset[str]
    marker: Marker | None


@functools.lru_cache(maxsize=8192)
def line(text: str) -> Line | None:
    """The requirement line ``text`` as :func:`parse` reads it (``None`` when malformed), its marker parsed once per
    distinct marker: a big env repeats a few hundred markers over a thousand lines. Before the first ``;`` of a line
    without a URL no ``;`` can stand (PEP 508), so such a line is read as its two halves."""
    head, semicolon, marker = text.partition(";")
    if "@" in head or not semicolon:
        req = parse(text)
        return None if req is None else Line(canonicalize_name(req.name), frozenset(req.extras), req.marker)
    req, parsed = parse(head), _marker(marker)
    return None if req is None or parsed is None else Line(canonicalize_name(req.name), frozenset(req.extras), parsed)


def applies(req: Requirement | Line, env: dict[str, str], extras: frozenset[str] = frozenset()) -> tuple[bool, bool]:
    """Whether ``req`` applies in ``env``: (applies, only through an extra)."""
    marker = req.marker
    if marker is None:
        return True, False
    try:
        if marker.evaluate({**env, "extra": ""}):
            return True, False
        named = _compared_extras(str(marker)) if extras else None
        if named is not None:
            extras = frozenset(e for e in extras if canonicalize_name(e) in named)
        for extra in extras:
            if marker.evaluate({**env, "extra": extra}):
                return True, True
        return False, False
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False, False


def edges(
    dists: dict[str, list[str]], env: dict[str, str], provides_extra: dict[str, list[str]] | None = None
) -> list[Edge]:
    """Edges parent → child among the installed distributions ``dists`` (name → requires).

    A requirement behind an extra counts when the child is installed: the
    extra was evidently asked for (pip and uv do not record which extras were).
    """
    provides_extra = provides_extra or {}
    out = []
    for parent, requires in dists.items():
        extras = frozenset(provides_extra.get(parent, []))
        for text in requires:
            named = _LEADING_NAME.match(text)
            if named is None or canonicalize_name(named.group(1)) not in dists:
                continue  # names nothing installed (most lines of a big env: test and doc extras), or is malformed
            req = line(text)
            if req is None or req.name == parent or req.name not in dists:
                continue
            ok, via_extra = applies(req, env, extras)
            if ok:
                out.append(Edge(parent, req.name, text, via_extra))
    return out


def without_extra(text: str, env: dict[str, str] | None = None) -> bool:
    """Whether the requirement ``text`` applies when no extra is asked for (``tomli-w; extra == "test"`` does not).

    ``env``: marker variables of the target interpreter (default: the running one's)."""
    req = parse(text)
    if req is None:
        return False
    if req.marker is None:
        return True
    try:
        return bool(req.marker.evaluate({**(env or {}), "extra": ""}))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False
