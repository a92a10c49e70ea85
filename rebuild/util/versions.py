"""Version strings as tfrebuild shows and compares them, and what ``--to`` asks for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from rebuild.errors import UserError


def minor(version: str) -> str:
    """``"2.15.1"`` → ``"2.15"``; ``"3.11"`` stays; ``""`` stays ``""``."""
    return ".".join(str(version).split(".")[:2])


def moves(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str | None, str | None]]:
    """``(name, old version, new version)`` for every name whose version differs (``None``: absent), by name."""
    return [
        (name, old.get(name), new.get(name)) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)
    ]


_TARGET = re.compile(r"^(latest|\d+\.\d+|\d+\.\d+\.\d+(?:(?:a|b|rc|\.dev|\.post)\d+)?)$")


@dataclass(frozen=True)
class TargetSpec:
    raw: str
    kind: str  # latest | minor | exact
    specifier: str  # "", "==2.18.*", "==2.18.0"


def parse_target(text: str) -> TargetSpec:
    """``latest``, ``X.Y`` (newest X.Y.*) or ``X.Y.Z`` (exactly)."""
    text = (text or "latest").strip()
    if not _TARGET.match(text):
        shown = text if len(text) <= 40 else f"{text[:40]}… ({len(text)} characters)"  # never echo a huge value
        raise UserError(
            f"'{shown}' is not a TensorFlow version tfrebuild understands.",
            "Use --to latest, --to X.Y (e.g. 2.18) or --to X.Y.Z (e.g. 2.18.1).",
        )
    if text == "latest":
        return TargetSpec(text, "latest", "")
    if text.count(".") == 1:
        return TargetSpec(text, "minor", f"=={text}.*")
    return TargetSpec(text, "exact", f"=={text}")
