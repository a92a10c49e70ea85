"""The work folder beside a project, where its tool re-locks (or recompiles) a copy before anything changes.

``.<project>.tfrebuild-<op>`` is a sibling of the project folder, so relative paths (``../lib``,
``-r ../common.txt``) mean the same there. The files being changed are copies; every other top-level
entry is a symlink to the project's own (``.git`` too: version plugins read it), except envs and caches.
:func:`sweep` removes the folders a killed tfrebuild left (their process is gone).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rebuild.errors import UserError
from rebuild.store.lock import pid_alive

#: Entries of the project folder never linked into the work folder.
SKIP = {".venv", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox"}
_NAME = re.compile(r"\.(?P<root>.+)\.tfrebuild-(?P<kind>[a-z]+)-\d{8}T\d{6}-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass
class Locked:
    """What a project's tool made in the work folder: the files a new generation gets, and its changes."""

    workdir: Path
    files: dict[str, bytes]
    old_requirement: str
    new_requirement: str
    changes: list[str] = field(default_factory=list)


def path_for(root: Path, op: str) -> Path:
    return root.parent / f".{root.name}.tfrebuild-{op}"


def create(root: Path, op: str, copies: dict[str, bytes], *, skip: set[str], doing: str) -> Path:
    """The work folder for ``op`` with ``copies`` (name -> content) and links to the rest of ``root``."""
    work = path_for(root, op)
    if os.path.lexists(work):
        shutil.rmtree(work)
    try:
        work.mkdir(mode=0o755)
    except OSError as exc:
        raise UserError(
            f"Cannot create the work folder {work} beside the project: {exc.strerror or exc}.",
            f"tfrebuild {doing} a copy of the project next to it; make {root.parent} writable.",
        ) from None
    with removed_on_error(work):
        for name, data in copies.items():
            (work / name).write_bytes(data)
        for entry in root.iterdir():
            if entry.name in copies or entry.name in SKIP or entry.name in skip:
                continue
            if (entry / "pyvenv.cfg").is_file():  # an env in the project folder: not an input
                continue
            os.symlink(entry, work / entry.name)
    return work


@contextmanager
def removed_on_error(work: Path) -> Iterator[None]:
    """Remove the work folder when the block fails or is interrupted (the project itself was not touched)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def expect_locked(tool: str, distribution: str, version: str, locked: set[str], root: Path, settings: str) -> None:
    """Refuse a re-lock in which ``tool`` chose another ``distribution`` than the planned ``version``."""
    if locked != {version}:
        raise UserError(
            f"{tool} locked {distribution} {', '.join(sorted(locked)) or '(none)'} for the project "
            f"{root}, not the planned {version}.",
            f"The project's own settings ({settings}) choose another version than the env's; plan with "
            "--to that version, or change the setting. Nothing was changed.",
            exit_code=1,
        )


def sweep(root: Path) -> list[Path]:
    """Remove work folders beside ``root`` whose tfrebuild process is gone (a kill left them)."""
    gone: list[Path] = []
    try:
        entries = list(root.parent.iterdir())
    except OSError:
        return gone
    for entry in entries:
        m = _NAME.match(entry.name)
        if m is None or m.group("root") != root.name or entry.is_symlink() or not entry.is_dir():
            continue
        if int(m.group("pid")) != os.getpid() and not pid_alive(int(m.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry)
    return gone
