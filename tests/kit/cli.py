"""Helpers for tests that run the tfrebuild CLI as a subprocess and compare trees on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path


@dataclasses.dataclass
class CliRun:
    """One finished CLI run."""

    proc: subprocess.CompletedProcess
    seconds: float
    args: list[str] = dataclasses.field(default_factory=list)

    @property
    def code(self) -> int:
        return self.proc.returncode

    @property
    def out(self) -> str:
        return self.proc.stdout

    @property
    def err(self) -> str:
        return self.proc.stderr

    @property
    def text(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def json(self) -> dict:
        try:
            return json.loads(self.proc.stdout)
        except ValueError as exc:  # shown on failure only
            raise AssertionError(f"not one JSON document: {exc}\n{self}") from None

    def __str__(self) -> str:
        return (f"$ tfrebuild {' '.join(map(str, self.args))}  -> exit {self.code} in {self.seconds:.2f}s\n"
                f"--- stdout ---\n{self.out[-4000:]}\n--- stderr ---\n{self.err[-4000:]}")


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
