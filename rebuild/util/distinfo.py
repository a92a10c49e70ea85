"""Installed distributions' ``<name>-<version>.dist-info`` folder names: the one parser.

The folder's name is the distribution's name and version joined by a hyphen, the name escaped (every run of
``-_.`` written as ``_``: the binary distribution format and the recording-installed-projects specification),
so the name ends at the *first* hyphen and everything after it is the version (a legacy version may hold
hyphens). This is ``importlib.metadata``'s rule. A wheel's own ``.dist-info`` folder follows the same rule.
"""

from __future__ import annotations

from pathlib import Path

from packaging.utils import canonicalize_name

SUFFIX = ".dist-info"


def parse(folder: str) -> tuple[str, str] | None:
    """``(canonical name, version)`` of a ``.dist-info`` folder name; ``None`` for another name."""
    if not folder.lower().endswith(SUFFIX):
        return None
    name, _, version = folder[: -len(SUFFIX)].partition("-")
    if not name or not version:
        return None
    return canonicalize_name(name), version


def name_of(stem: str) -> str:
    """The canonical name in the stem of a ``.dist-info`` or ``.egg-info`` folder (``name-version[-pyX.Y]``)."""
    return canonicalize_name(stem.partition("-")[0])


def site_dirs(env: Path) -> list[Path]:
    """``env``'s site-packages folders (``lib`` and ``lib64``, every ``pythonX.Y``)."""
    return [site for site in env.glob("lib*/python*/site-packages") if site.is_dir()]


def installed(env: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the distributions in ``env``'s site-packages, from the folder names."""
    out: dict[str, str] = {}
    for folder in env.glob("lib*/python*/site-packages/*.dist-info"):
        parsed = parse(folder.name)
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out
