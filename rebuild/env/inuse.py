"""Which processes are running from an environment (Linux ``/proc``).

A Jupyter kernel or a training job started from the env keeps its modules
loaded; swapping the tree under it would leave it half old, half new.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class User:
    pid: int
    command: str
    why: str  # executable | mapped file | open file


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _argv0_inside(entry: Path, root: str) -> bool:
    """A venv's bin/python is a symlink to the base interpreter, so /proc/<pid>/exe points outside the env;
    the path the process was started by (argv[0], relative to its cwd) still names the env."""
    try:
        argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    if not argv0 or os.sep not in argv0:
        return False
    if not os.path.isabs(argv0):
        try:
            argv0 = os.path.join(os.readlink(entry / "cwd"), argv0)
        except OSError:
            return False
    folder = os.path.realpath(os.path.dirname(argv0))  # resolve the folder, not the interpreter symlink
    return _inside(folder, root)


def _cmdline(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"


def processes_using(env: Path) -> list[User]:
    """Processes (other than this one and its parent) with their executable, a mapped file
    or an open file under ``env``. Empty where ``/proc`` is missing."""
    root = os.path.realpath(env)
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    skip = {os.getpid(), os.getppid()}
    found: list[User] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        why = ""
        try:
            if _inside(os.path.realpath(entry / "exe"), root) or _argv0_inside(entry, root):
                why = "executable"
        except OSError:
            pass
        if not why:
            try:
                with open(entry / "maps", encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        parts = line.split(None, 5)
                        if len(parts) == 6 and _inside(parts[5].strip(), root):
                            why = "mapped file"
                            break
            except OSError:
                pass
        if not why:
            try:
                for fd in os.scandir(entry / "fd"):
                    try:
                        if _inside(os.readlink(fd.path), root):
                            why = "open file"
                            break
                    except OSError:
                        continue
            except OSError:
                pass
        if why:
            found.append(User(int(entry.name), _cmdline(entry.name), why))
    return sorted(found, key=lambda u: u.pid)
