"""Directory trees inside the state folder: identity (inode keys), walks and safe deletion.

Nothing here follows a symlink: a link inside a generation is counted and deleted as
the link itself, never as what it points at.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from rebuild.errors import UserError


def abs_path(path: Path | str) -> Path:
    """``path`` made absolute without resolving symlinks."""
    return Path(os.path.abspath(os.fspath(path)))


def key(st: os.stat_result) -> tuple[int, int]:
    """The identity of a tree: ``(device, inode)`` of its top directory (survives renames)."""
    return (st.st_dev, st.st_ino)


def key_or_none(path: Path) -> tuple[int, int] | None:
    """:func:`key` of the entry at ``path`` (not followed), or ``None`` when there is none."""
    try:
        return key(os.lstat(path))
    except OSError:
        return None


def venv_stamp(tree: Path) -> str:
    """The identity of the venv made at ``tree``: ``"<inode>:<mtime in ns>"`` of its ``pyvenv.cfg`` (not followed),
    or ``""`` when there is none. The file is written when a venv is made (again) and never by installs, so it tells
    a venv made again at the same path, even in a directory with the old inode, from the recorded one."""
    try:
        st = os.lstat(Path(tree) / "pyvenv.cfg")
    except OSError:
        return ""
    return f"{st.st_ino}:{st.st_mtime_ns}" if stat.S_ISREG(st.st_mode) else ""


def venv_identity(tree: Path) -> tuple[int, str]:
    """The directory's inode and its :func:`venv_stamp` (``(-1, "")`` when it is gone): a venv made again at the
    path changes one of them, even when the kernel hands the new directory the old inode."""
    try:
        inode = os.lstat(tree).st_ino
    except OSError:
        return -1, ""
    return inode, venv_stamp(tree)


def lstat_dir(
    path: Path, missing: tuple[str, str], not_dir: tuple[str, str], link: tuple[str, str] | None = None
) -> os.stat_result:
    """``lstat`` of ``path``, a real directory, else ``UserError`` with the (message, hint) of what it is instead:
    ``missing``, ``link`` (the hint gets ": <the real path>"; without ``link`` a link is ``not_dir``), ``not_dir``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UserError(*missing) from None
    if link is not None and stat.S_ISLNK(st.st_mode):
        raise UserError(link[0], hint=f"{link[1]}: {os.path.realpath(path)}")
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(*not_dir)
    return st


def walk_lstat(root: Path) -> Iterator[os.stat_result]:
    """``lstat`` of ``root`` and everything under it; never follows symlinks."""
    try:
        st = os.lstat(root)
    except OSError:
        return
    yield st
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [os.fspath(root)]
    while stack:
        top = stack.pop()
        try:
            it = os.scandir(top)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield est
                if stat.S_ISDIR(est.st_mode):
                    stack.append(entry.path)


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves strictly inside ``folder``."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(base.rstrip(os.sep) + os.sep)


def _rmtree_onerror(func: Callable[..., object], path: str, exc_info: Any) -> None:  # noqa: ARG001
    # A read-only folder (some wheels ship them): make the parent writable and retry once.
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(exc, PermissionError):
        parent = os.path.dirname(path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
            func(path)
            return
        except OSError:
            pass
    if isinstance(exc, FileNotFoundError):
        return
    raise exc


def _walk_delete(path: str) -> None:
    """Delete ``path`` without ever following a symlink (used when rmtree is not fd-based)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    with os.scandir(path) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _walk_delete(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(path)


def safe_rmtree(path: Path, inside: Path) -> None:
    """Delete the tree at ``path``, which must lie inside ``inside``; symlinks are unlinked, never followed."""
    path = abs_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    # The entry's folder must resolve inside ``inside``; the entry itself is not a link
    # when it is a directory (lstat), so its contents are inside too.
    if not (is_inside(path.parent, inside) or os.path.realpath(path.parent) == os.path.realpath(inside)):
        raise UserError(
            f"Refusing to delete {path}: it resolves outside {inside}",
            hint="Something replaced part of the tfrebuild state folder with a link; inspect it by hand.",
        )
    if not stat.S_ISDIR(st.st_mode):  # a file or a symlink: remove the entry itself, never its target
        os.unlink(path)
        return
    if shutil.rmtree.avoids_symlink_attacks:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=_rmtree_onerror)
        else:
            shutil.rmtree(path, onerror=_rmtree_onerror)
    else:  # pragma: no cover - platforms without fd-based rmtree
        _walk_delete(os.fspath(path))
