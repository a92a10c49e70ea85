"""Where output goes: the :class:`Terminal` (stdout and stderr consoles, ``NO_COLOR``, plain lines when piped) and the
live :class:`Progress` of a command. Split from :mod:`rebuild.cli.render` (same code), which re-exports both."""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def _console(stderr: bool, no_color: bool) -> Console:
    from rich.console import Console  # on first output: a --json or --version run never loads rich

    console = Console(stderr=stderr, highlight=False, soft_wrap=True, no_color=no_color or None)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 200  # piped: don't squeeze tables into 80 columns
    return console


class Terminal:
    """Where output goes: ``out`` (results, stdout) and ``err`` (progress, errors, stderr)."""

    def __init__(self, no_color: bool | None = None):
        self.no_color = bool(os.environ.get("NO_COLOR")) if no_color is None else no_color

    @cached_property
    def out(self) -> Console:
        return _console(stderr=False, no_color=self.no_color)

    @cached_property
    def err(self) -> Console:
        return _console(stderr=True, no_color=self.no_color)

    def progress(self, enabled: bool = True) -> "Progress":
        return Progress(enabled, terminal=self)


# --- progress -----------------------------------------------------------------


class _Elapsed:
    """The live status line: what is happening and, re-rendered at every refresh, how long it has taken."""

    def __init__(self, text: str, since: float):
        self.text, self.since = text, since

    def __rich__(self) -> str:
        from rich.text import Text

        return Text(f"{self.text}  {time.monotonic() - self.since:4.0f}s")


class Progress:
    """Stage reporting: a live status with elapsed time on a terminal, one line per stage otherwise."""

    def __init__(self, enabled: bool = True, terminal: Terminal | None = None):
        self._terminal = terminal or Terminal()
        self.enabled = enabled
        self.live = enabled and self.err.is_terminal
        self._status = None
        self._stage = ""
        self._start = time.monotonic()
        self._stage_start = self._start
        self.timings: list[tuple[str, float]] = []

    @property
    def err(self) -> Console:
        return self._terminal.err

    def stage(self, name: str, detail: str = "") -> None:
        self._finish_stage()
        self._stage, self._stage_start = name, time.monotonic()
        if not self.enabled:
            return
        text = f"{name}: {detail}" if detail else name
        if self.live:  # the stage's own elapsed time, ticking (never while a prompt is open: see pause)
            line = _Elapsed(text, self._stage_start)
            if self._status is None:
                self._status = self.err.status(line)
                self._status.start()
            else:
                self._status.update(line)
        else:
            self.err.print(f"[{time.monotonic() - self._start:6.1f}s] {text}", markup=False, highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            if self._status is not None:
                self._status.console.print(f"  {text}", markup=False)
            else:
                self.err.print(f"  {text}", markup=False)

    def pause(self) -> None:
        """Stop the live status (before a prompt); the next stage starts it again."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _finish_stage(self) -> None:
        if self._stage:
            self.timings.append((self._stage, time.monotonic() - self._stage_start))
            self._stage = ""

    def close(self) -> None:
        self._finish_stage()
        self.pause()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
