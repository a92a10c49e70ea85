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


class StageClock:
    """Passes every report on to ``inner`` and times each stage (from its start to the next one's):
    ``stages`` maps a stage's name to its seconds (summed when a stage comes back, as on a target search's tries)."""

    def __init__(self, inner: Progress):
        import time

        self._inner, self._now = inner, time.monotonic
        self.stages: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: str, detail: str = "") -> None:
        self._close()
        self._current = (name, self._now())
        self._inner.stage(name, detail)

    def note(self, text: str) -> None:
        self._inner.note(text)

    def _close(self) -> None:
        if self._current is not None:
            name, began = self._current
            self.stages[name] = self.stages.get(name, 0.0) + self._now() - began
            self._current = None

    def finish(self) -> dict[str, float]:
        """The stages' seconds, the last one closed now."""
        self._close()
        return {name: round(seconds, 3) for name, seconds in self.stages.items()}
