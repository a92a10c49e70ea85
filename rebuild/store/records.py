"""The store's records: ``generations/<N>/meta.toml`` (:class:`Generation`) and how store TOML is read.

``store.toml`` itself is written by :meth:`rebuild.store.store.Store.write_state`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rebuild.errors import UserError
from rebuild.store.journal import now_iso
from rebuild.util import fs

if TYPE_CHECKING:
    from rebuild.store.store import Store

_INT64_MAX = 2**63 - 1


def toml_int(value: int) -> int | str:
    """TOML integers are signed 64-bit; a (rare) larger inode is kept as a string."""
    return value if -_INT64_MAX <= value <= _INT64_MAX else str(value)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A store TOML file; :class:`UserError` naming ``what`` when it is damaged, or is not a regular file
    (read with :func:`rebuild.util.fs.read_document`: no link followed, size and nesting capped)."""
    hint = "Restore it from a backup, or move the state folder away to stop managing this environment."
    try:
        return fs.toml_document(fs.read_document(path))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"The tfrebuild {what} {path} is damaged: {exc}", hint=hint, exit_code=1) from exc
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(
            f"The tfrebuild {what} {path} cannot be read: {exc.strerror or exc}", hint=hint, exit_code=1
        ) from exc


@dataclass
class Generation:
    """One recorded environment tree (``generations/<number>/meta.toml``)."""

    number: int
    created: str
    command: str
    tensorflow: str
    python: str
    inode: int = 0
    device: int = 0
    note: str = ""
    venv: str = ""  # trees.venv_stamp of the tree when recorded ("" in records made before it was kept)

    @classmethod
    def new(cls, number: int, *, command: str, tensorflow: str = "", python: str = "", note: str = "") -> Generation:
        """A generation record stamped now; the store fills in ``inode``/``device``/``venv``."""
        return cls(number=number, created=now_iso(), command=command, tensorflow=tensorflow, python=python, note=note)

    def path(self, store: Store) -> Path:
        """Where this generation's tree is now: ``E`` if current, else ``generations/<n>/env``."""
        if self.number == store.current_number:
            return store.env
        return store.generation_dir(self.number) / "env"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inode"] = toml_int(self.inode)
        data["device"] = toml_int(self.device)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("created", "")
        values.setdefault("command", "")
        values.setdefault("tensorflow", "")
        values.setdefault("python", "")
        for name in ("number", "inode", "device"):
            values[name] = int(values.get(name, 0))
        return cls(**values)
