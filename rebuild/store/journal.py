"""The intent journal: ``<state>/journal.json`` names the operation in progress and its step.

An operation writes the journal (atomically, fsync'd) before it renames anything,
updates its ``step`` after each rename, and removes it when done; a journal found
later belongs to an operation that was interrupted (see :mod:`rebuild.store.recovery`).
The journal's folder is the store's state folder; the store checks the lock.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from rebuild.errors import UserError
from rebuild.util import fs

OPS = ("upgrade", "rollback", "gc")


def now_iso() -> str:
    """Current UTC time as ``2024-05-01T12:00:00Z``."""
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_op_id(op: str) -> str:
    """A unique, filesystem-safe operation id such as ``upgrade-20240501T120000-4242-a1b2``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{op}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}"


def check_id(op_id: str) -> str:
    """``op_id`` if it is usable as one folder name; ``ValueError`` otherwise."""
    if not op_id or op_id in (".", "..") or "/" in op_id or os.sep in op_id or "\0" in op_id:
        raise ValueError(f"invalid operation id {op_id!r}")
    return op_id


class DamagedJournal(UserError):
    """The journal at ``path`` cannot be read as an operation (damaged, edited, truncated)."""

    def __init__(self, path: Path, problem: str, why: str = ""):
        self.path, self.problem = path, problem
        super().__init__(
            f"The tfrebuild journal {path} is damaged: {problem}.",
            f"tfrebuild sets a damaged journal aside by itself when the environment is the generation its records "
            f"name as current{'; ' + why if why else ''}. Check the environment and its state folder by hand, then "
            f"move {path} away (e.g. to {path.name}.damaged) and run `tfrebuild status` again.",
            exit_code=1,
        )


class Journal:
    """The journal file at ``path`` of the environment ``env``."""

    def __init__(self, path: Path, env: Path):
        self.path = path
        self.env = env

    def read(self) -> dict[str, Any] | None:
        """The journal of the operation in progress, or ``None``."""
        try:
            data = fs.json_document(fs.read_document(self.path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DamagedJournal(self.path, f"it cannot be read ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise DamagedJournal(self.path, f"it is not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DamagedJournal(self.path, f"it holds {type(data).__name__} {json.dumps(data)[:80]}, not an operation")
        return data

    def begin(self, op: Mapping[str, Any]) -> dict[str, Any]:
        """Write the journal of a new operation (none may exist); fills in ``id``, ``pid``, ``step``, ``started``."""
        if self.path.exists():
            raise RuntimeError(f"an operation is already journaled in {self.path}; call recover() first")
        data = dict(op)
        if data.get("op") not in OPS:
            raise ValueError(f"unknown operation {data.get('op')!r}")
        data.setdefault("id", new_op_id(data["op"]))
        data.setdefault("pid", os.getpid())
        data.setdefault("step", "started")
        data.setdefault("started", now_iso())
        data.setdefault("env", str(self.env))
        self._write(data)
        return data

    def update(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the journal (atomically)."""
        data = self.read()
        if data is None:
            raise RuntimeError("no journal to update")
        data.update(changes)
        self._write(data)
        return data

    def set_aside(self) -> Path:
        """Rename a damaged journal to ``journal.json.damaged`` (kept for inspection); returns the new path."""
        dest = self.path.with_name(self.path.name + ".damaged")
        os.replace(self.path, dest)
        fs.fsync_dir(self.path.parent)
        return dest

    def remove(self) -> None:
        """Remove the journal: the operation is complete (or nothing happened)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fs.fsync_dir(self.path.parent)

    def _write(self, data: dict[str, Any]) -> None:
        fs.atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode(), mode=0o644)
