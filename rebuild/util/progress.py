"""How core reports progress without knowing who listens.

Core functions take a ``progress`` argument that follows :class:`Progress`; the CLI passes
its renderer (a live status on a terminal, one line per stage when piped), tests and
``--json`` pass nothing and get :data:`NULL`. Core never imports the renderer.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str, detail: str = "") -> None: ...

    def note(self, text: str) -> None: ...


class NullProgress:
    """Reports nothing (quiet runs, ``--json``, library use)."""

    def stage(self, name: str, detail: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


NULL = NullProgress()
