"""Exchange two directories in one step, so an environment's path is never missing.

tfrebuild builds the replacement environment beside the old one and then *exchanges*
the two directory entries.  On Linux this is ``renameat2(..., RENAME_EXCHANGE)``: the
kernel swaps both names in a single atomic operation, so the environment path (say
``~/venvs/tf``) is a real directory at every instant, before, during and after the
upgrade.  A process that starts ``~/venvs/tf/bin/python`` at any moment gets either
the complete old environment or the complete new one, never "no such file".

Why not a symlink flip (``tf -> tf.gen3``, replaced with ``os.replace``)?  That is
atomic too, but it changes what users see: the environment path becomes a symlink,
``sys.prefix`` and ``VIRTUAL_ENV`` resolve to generation-specific paths that then
show up in shell prompts, IDE settings, Jupyter kernel specs and shebangs, and tools
that ``realpath`` the interpreter pin the *old* generation forever.  Exchanging real
directories keeps the path exactly what the user created.

Elsewhere (not Linux, glibc/kernel without ``renameat2``, or a filesystem that refuses
``RENAME_EXCHANGE`` with ``EINVAL``, such as some network filesystems) we fall back to
three ordinary renames through a temporary name in the same parent directory.  That
fallback is **not** atomic: see :func:`exchange` for the window, and :func:`repair`
for putting things back after a crash inside it.

Both paths must be on the same filesystem: a rename never copies data, which is what
makes a swap (and a rollback) take milliseconds.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from pathlib import Path
from typing import Callable, Literal

from rebuild.errors import UserError
from rebuild.store.trees import lstat_dir
from rebuild.util.fs import fsync_dir

AT_FDCWD = -100
RENAME_EXCHANGE = 2
# renameat2's syscall number, for glibc < 2.28 whose libc has no wrapper.
SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}

TMP_SUFFIX = ".tfrebuild-swap-tmp"
METHODS = ("auto", "renameat2", "rename")

# errnos meaning "this kernel/filesystem cannot exchange": use the fallback.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}

_Exchange = Callable[[bytes, bytes], tuple[int, int]]
_renameat2_fn: _Exchange | Literal[False] | None = (
    None  # cached callable (a, b) -> (rc, errno), or False when unavailable
)


def _make_renameat2(prefer_wrapper: bool = True) -> _Exchange | None:
    """Build a callable ``(a_bytes, b_bytes) -> (rc, errno)`` doing RENAME_EXCHANGE, or ``None``.

    Uses glibc's ``renameat2`` wrapper (glibc >= 2.28) and otherwise the raw
    ``syscall(SYS_renameat2, ...)`` (x86_64: 316, aarch64: 276).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    wrapper = getattr(libc, "renameat2", None) if prefer_wrapper else None
    if wrapper is not None:
        wrapper.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        wrapper.restype = ctypes.c_int

        def call_wrapper(a: bytes, b: bytes) -> tuple[int, int]:
            ctypes.set_errno(0)
            rc = wrapper(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
            return rc, ctypes.get_errno()

        return call_wrapper
    number = SYS_RENAMEAT2.get(platform.machine().lower())
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long

    def call_syscall(a: bytes, b: bytes) -> tuple[int, int]:
        ctypes.set_errno(0)
        rc = syscall(
            ctypes.c_long(number),
            ctypes.c_long(AT_FDCWD),
            ctypes.c_char_p(a),
            ctypes.c_long(AT_FDCWD),
            ctypes.c_char_p(b),
            ctypes.c_long(RENAME_EXCHANGE),
        )
        return rc, ctypes.get_errno()

    return call_syscall


def _load_renameat2() -> _Exchange | None:
    """The cached :func:`_make_renameat2` result."""
    global _renameat2_fn
    if _renameat2_fn is None:
        _renameat2_fn = _make_renameat2() or False
    return _renameat2_fn or None


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or ``b``'s nearest existing parent) share a device.

    ``a`` must exist.  Symlinks are not followed for ``a`` or ``b`` themselves.
    """
    dev_a = os.lstat(a).st_dev
    dev_b = os.lstat(_nearest_existing(Path(b))).st_dev
    return dev_a == dev_b


def tmp_name(a: Path) -> Path:
    """The temporary name the non-atomic fallback parks ``a`` under."""
    a = Path(os.path.abspath(a))
    return a.with_name(a.name + TMP_SUFFIX)


def cross_device_error(a: Path, b: Path) -> UserError:
    return UserError(
        f"Cannot swap {a} and {b}: they are on different filesystems",
        hint="tfrebuild swaps by renaming, which only works within one filesystem. "
        "Build the new environment next to the old one (same parent folder or mount).",
    )


def _check_dir(path: Path, role: str) -> os.stat_result:
    return lstat_dir(
        path,
        missing=(
            f"Cannot swap: {role} {path} does not exist",
            "Check the path; if a previous tfrebuild run was interrupted, run tfrebuild again to let it recover.",
        ),
        link=(
            f"Cannot swap: {role} {path} is a symbolic link",
            "tfrebuild swaps real directories. Point it at the real folder",
        ),
        not_dir=(f"Cannot swap: {role} {path} is not a directory", "Both paths must be directories."),
    )


def _oserror_to_user(exc: OSError, a: Path, b: Path) -> Exception:
    if exc.errno == errno.EXDEV:
        return cross_device_error(a, b)
    if exc.errno == errno.ENOENT:
        return UserError(f"Cannot swap {a} and {b}: one of them disappeared", hint="Another program may have moved it.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"Cannot swap {a} and {b}: {os.strerror(exc.errno)}",
            hint="You need write permission on both parent folders (and the filesystem must be writable).",
        )
    return exc


def exchange(a: Path, b: Path, *, method: str = "auto", durable: bool = True) -> str:
    """Exchange directories ``a`` and ``b``; return the method used: ``"renameat2"`` or ``"rename"``.

    ``method``: ``"auto"`` (renameat2, else the fallback), ``"renameat2"`` (no fallback:
    raises ``OSError`` if unsupported) or ``"rename"`` (force the fallback).
    With ``durable`` the parent directories are fsync'd afterwards.

    The ``renameat2(RENAME_EXCHANGE)`` path is atomic: at every instant both names
    exist, each naming one complete tree.

    The fallback is three renames: ``a -> a.tfrebuild-swap-tmp``, ``b -> a``,
    ``tmp -> b``.  It is **not atomic**: between the first and second rename ``a``
    does not exist (a process starting ``a/bin/python`` then fails with ENOENT), and
    between the second and third ``b`` does not exist.  The window is two rename
    syscalls long (microseconds), but a crash inside it leaves the tree parked at the
    temporary name; :func:`repair` finishes or undoes such an interrupted exchange.

    Raises :class:`UserError` when a path is missing, is a symlink or not a directory,
    when the two are on different filesystems (EXDEV), or one contains the other.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    a = Path(os.path.abspath(a))
    b = Path(os.path.abspath(b))
    st_a = _check_dir(a, "path")
    st_b = _check_dir(b, "path")
    if (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino):
        raise UserError(f"Cannot swap {a} with itself", hint="Give two different directories.")
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    if rb.startswith(ra + os.sep) or ra.startswith(rb + os.sep):
        raise UserError(f"Cannot swap {a} and {b}: one is inside the other", hint="Give two sibling directories.")
    if st_a.st_dev != st_b.st_dev:
        raise cross_device_error(a, b)

    used = None
    if method in ("auto", "renameat2"):
        fn = _load_renameat2()
        if fn is None:
            if method == "renameat2":
                raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
        else:
            rc, err = fn(os.fsencode(a), os.fsencode(b))
            if rc == 0:
                used = "renameat2"
            elif err in _UNSUPPORTED and method == "auto":
                pass  # kernel or filesystem refuses RENAME_EXCHANGE: fall back
            else:
                raise _oserror_to_user(OSError(err, os.strerror(err), str(a), None, str(b)), a, b)
    if used is None:
        _exchange_by_renames(a, b)
        used = "rename"
    if durable:
        fsync_dir(a.parent)
        if b.parent != a.parent:
            fsync_dir(b.parent)
    return used


def _exchange_by_renames(a: Path, b: Path) -> None:
    tmp = tmp_name(a)
    if os.path.lexists(tmp):
        raise UserError(
            f"Cannot swap {a}: {tmp} already exists (left by an interrupted swap?)",
            hint="Run tfrebuild again to let it recover, or move that folder away after checking what it holds.",
        )
    try:
        os.rename(a, tmp)
    except OSError as exc:
        raise _oserror_to_user(exc, a, b) from exc
    try:
        os.rename(b, a)
    except OSError as exc:
        os.rename(tmp, a)  # undo step 1
        raise _oserror_to_user(exc, a, b) from exc
    try:
        os.rename(tmp, b)
    except OSError as exc:
        try:  # undo steps 2 and 1
            os.rename(a, b)
            os.rename(tmp, a)
        except OSError:
            pass
        raise _oserror_to_user(exc, a, b) from exc


def repair(a: Path, b: Path) -> str | None:
    """Finish or undo a fallback :func:`exchange` of ``a`` and ``b`` interrupted by a crash.

    * tmp exists, ``a`` missing, ``b`` present (crash after step 1): move tmp back to
      ``a``; nothing was exchanged.
    * tmp exists, ``a`` present, ``b`` missing (crash after step 2): move tmp to ``b``;
      the exchange is complete.

    Returns a sentence describing what was done, or ``None`` if there was nothing to do.
    """
    a = Path(os.path.abspath(a))
    b = Path(os.path.abspath(b))
    tmp = tmp_name(a)
    if not os.path.lexists(tmp):
        return None
    has_a, has_b = os.path.lexists(a), os.path.lexists(b)
    if not has_a and has_b:
        os.rename(tmp, a)
        fsync_dir(a.parent)
        return f"undid an interrupted swap: moved {tmp} back to {a}"
    if has_a and not has_b:
        os.rename(tmp, b)
        fsync_dir(b.parent)
        return f"finished an interrupted swap: moved {tmp} to {b}"
    return None
