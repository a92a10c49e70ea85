"""Version strings as tfrebuild shows and compares them."""

from __future__ import annotations


def minor(version: str) -> str:
    """``"2.15.1"`` → ``"2.15"``; ``"3.11"`` stays; ``""`` stays ``""``."""
    return ".".join(str(version).split(".")[:2])
