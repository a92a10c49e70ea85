"""What moves between two package sets: the one diff that plan, apply and generations show."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from rebuild.util import versions


@dataclass
class Change:
    name: str
    old: str | None
    new: str | None
    kind: str  # upgrade | downgrade | add | remove
    requested: bool
    reason: str = ""
    replaces: str = ""  # another distribution this one takes the place of (tensorflow-cpu → tensorflow)


def kind(old: str | None, new: str | None) -> str:
    """``add``, ``remove``, ``upgrade`` or ``downgrade`` (an unparsable version counts as an upgrade)."""
    if old is None:
        return "add"
    if new is None:
        return "remove"
    try:
        return "upgrade" if Version(new) > Version(old) else "downgrade"
    except InvalidVersion:
        return "upgrade"


def diff(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None, str]]:
    """``(name, old, new, kind)`` for every name whose version differs, sorted by name."""
    return [(name, a, b, kind(a, b)) for name, a, b in versions.moves(old, new)]
