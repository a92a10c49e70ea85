"""Which release of a compiled package was first built for NumPy 2 (data/numpy2.toml, with sources)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class FirstBuild:
    name: str
    first: str  # the first release built for NumPy 2
    source: str


@functools.cache
def _table() -> tuple[str, dict[str, FirstBuild]]:
    text = resources.files("rebuild").joinpath("knowledge/data/numpy2.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    rows = {
        str(canonicalize_name(r["name"])): FirstBuild(canonicalize_name(r["name"]), r["first"], r["source"])
        for r in data["package"]
    }
    return str(data["numpy2_abi_from"]), rows


def abi_from() -> str:
    """The date (YYYY-MM-DD) before which no wheel can have been built for NumPy 2."""
    return _table()[0]


def first_build(name: str) -> FirstBuild | None:
    """The table's row for ``name`` (None when the package is not listed)."""
    return _table()[1].get(canonicalize_name(name))


def built_for_numpy2(name: str, version: str) -> bool | None:
    """Whether release ``version`` of ``name`` was built for NumPy 2 per the table (None: not listed)."""
    row = first_build(name)
    if row is None:
        return None
    try:
        return Version(version) >= Version(row.first)
    except InvalidVersion:
        return None
