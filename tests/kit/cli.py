"""Helpers for tests that run the tfrebuild CLI as a subprocess and compare trees on disk.

:func:`run_cli` is the one way a test runs ``python -m rebuild``; it returns a
:class:`CliRun` (which also answers ``returncode``/``stdout``/``stderr`` like a
``subprocess.CompletedProcess``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from .venvs import with_overrides


@dataclasses.dataclass
class CliRun:
    """One finished CLI run."""

    proc: subprocess.CompletedProcess
    seconds: float
    args: list[str] = dataclasses.field(default_factory=list)

    @property
    def code(self) -> int:
        return self.proc.returncode

    # CompletedProcess names, so a run can stand in where a test reads ``res.returncode``.
    returncode = code

    @property
    def out(self) -> str:
        return self.proc.stdout

    stdout = out

    @property
    def err(self) -> str:
        return self.proc.stderr

    stderr = err

    @property
    def text(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def json(self) -> dict:
        try:
            return json.loads(self.proc.stdout)
        except ValueError as exc:  # shown on failure only
            raise AssertionError(f"not one JSON document: {exc}\n{self}") from None

    def __str__(self) -> str:
        return (
            f"$ tfrebuild {' '.join(map(str, self.args))}  -> exit {self.code} in {self.seconds:.2f}s\n"
            f"--- stdout ---\n{self.out[-4000:]}\n--- stderr ---\n{self.err[-4000:]}"
        )


def run_cli(
    env: Mapping[str, str],
    *args: object,
    overrides: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 300,
) -> CliRun:
    """Run ``python -m rebuild *args`` (each ``str()``-ed) under a copy of ``env``; never raises on exit codes.

    ``overrides`` are set on that copy; a value of ``None`` removes the variable
    (``{"TFREBUILD_FAULT": None}``).  stdin is ``/dev/null`` so a prompt can
    never hang a test; output is decoded as UTF-8 (undecodable bytes replaced).
    """
    environ = with_overrides(env, overrides)
    argv = [str(a) for a in args]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rebuild", *argv],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliRun(proc, time.monotonic() - start, argv)


def tree_state(root: Path) -> dict[str, tuple]:
    """(size, mtime_ns, is_symlink) of every entry under ``root`` (links not followed), plus root's inode."""
    state: dict[str, tuple] = {}
    st = os.lstat(root)
    state["."] = (st.st_ino, st.st_mtime_ns, False)
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, os.path.islink(path))
    return state
