"""The store's exclusive lock: ``<state>/lock``, flock'd, naming its holder.

The lock file holds JSON ``{"pid", "command", "started"}`` of the holder.  ``flock`` is
the authority: when it can be taken, whatever the file says is stale (its process
died) and is taken over.  A second locker is refused at once (exit 1), never made to wait.

The state folder itself is flock'd first (where the filesystem can lock folders), so
deleting the lock file does not let a second writer in; the lock file is opened with
``O_NOFOLLOW`` and must be a regular file (a planted symlink is refused, never truncated),
and after its flock the path must still name the locked inode.  Readers
(:meth:`Lock.holder`) open it read-only.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rebuild.errors import UserError
from rebuild.store.journal import now_iso

try:  # POSIX only; the store refuses to lock without it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def _holder_info(fd: int, *, wait: bool) -> dict[str, Any] | None:
    """Parse the lock file; with ``wait``, give a holder that just took the flock ~0.2 s to write it."""
    deadline = time.monotonic() + (0.2 if wait else 0)
    while True:
        try:
            raw = os.pread(fd, 4096, 0)
            info = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError, RecursionError):  # a damaged lock file is no holder
            info = None
        if not isinstance(info, dict):
            info = None
        if info is not None and pid_alive(info.get("pid")) or time.monotonic() >= deadline:
            return info
        time.sleep(0.02)


class Lock:
    """The lock file at ``path`` guarding the environment ``env`` (re-entrant for this object)."""

    def __init__(self, path: Path, env: Path):
        self.path = path
        self.env = env
        self._fd: int | None = None
        self._folder_fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    @contextmanager
    def hold(self, command: str, on_acquire: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold the lock as ``command``; ``on_acquire`` runs once it is first taken."""
        if self._fd is not None:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        folder_fd, fd = self._acquire()
        try:
            info = {"pid": os.getpid(), "command": command, "started": now_iso()}
            try:  # who holds it is a courtesy; the flock is the authority (a full or read-only disk skips it)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError:
                pass
            self._fd, self._folder_fd, self._depth = fd, folder_fd, 1
            on_acquire()
            yield
        finally:
            self._fd, self._folder_fd, self._depth = None, None, 0
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            finally:
                _release(fd)
                if folder_fd is not None:
                    _release(folder_fd)

    def _acquire(self) -> tuple[int | None, int]:
        """Take the state folder's flock (where the filesystem has it), then the lock file's.

        The folder's lock cannot be stolen by deleting the lock file; the file's inode is checked
        after its flock (``fstat`` of the descriptor against ``lstat`` of the path), so a file
        deleted or replaced meanwhile is never trusted.
        """
        for _ in range(5):
            folder_fd = self._lock_folder()
            try:
                fd = self._open()
            except BaseException:
                if folder_fd is not None:
                    _release(folder_fd)
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_info(fd, wait=True)
                _release(fd)
                if folder_fd is not None:
                    _release(folder_fd)
                raise self._busy_error(holder) from None
            except BaseException:
                _release(fd)
                if folder_fd is not None:
                    _release(folder_fd)
                raise
            if self._names(fd):
                return folder_fd, fd
            _release(fd)  # the file was deleted or replaced between open and flock: again
            if folder_fd is not None:
                _release(folder_fd)
        raise UserError(
            f"The tfrebuild lock file {self.path} keeps being deleted or replaced",
            hint="Another program is removing it; stop that program and run tfrebuild again.",
            exit_code=1,
        )

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` still names the open lock file (a regular file, not a link)."""
        try:
            here, held = os.lstat(self.path), os.fstat(fd)
        except OSError:
            return False
        return stat.S_ISREG(here.st_mode) and (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def verify(self) -> None:
        """:class:`UserError` unless the lock is still ours: its file was not deleted or replaced while held
        (only the file's flock guards the store where the filesystem cannot lock folders)."""
        if self._fd is not None and self._folder_fd is None and not self._names(self._fd):
            raise UserError(
                f"The tfrebuild lock file {self.path} was deleted or replaced while this command held it",
                hint="Another program may be working on the environment; nothing more was changed. "
                "Run tfrebuild again once it is done.",
                exit_code=1,
            )

    def _lock_folder(self) -> int | None:
        """flock the state folder itself; ``None`` where the filesystem cannot (NFS: the lock file alone)."""
        if fcntl is None:  # pragma: no cover
            raise UserError("tfrebuild needs a POSIX system (fcntl) to lock environments")
        from rebuild.store import trust

        try:
            trust.make_state_dir(self.path.parent, self.env)  # a folder already there must be trusted
            fd = os.open(self.path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        except PermissionError as exc:
            raise UserError(
                f"Cannot lock {self.env}: permission denied on {self.path.parent}",
                hint="Run tfrebuild as the user who owns the environment.",
            ) from exc
        except OSError as exc:
            raise UserError(
                f"Cannot lock {self.env}: {self.path.parent} is not a folder ({exc.strerror or exc})",
                hint="tfrebuild never follows links in its state folder; move that entry away.",
                exit_code=1,
            ) from exc
        try:
            trust.check_fd(fd, self.path.parent, self.env)  # the folder locked is the folder checked
        except BaseException:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder(wait=True)
            os.close(fd)
            raise self._busy_error(holder) from None
        except OSError:  # folders cannot be flock'd here: the lock file is the lock
            _ignore_in_git(fd)
            os.close(fd)
            return None
        _ignore_in_git(fd)
        return fd

    def _open(self) -> int:
        if fcntl is None:  # pragma: no cover
            raise UserError("tfrebuild needs a POSIX system (fcntl) to lock environments")
        flags = _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o644)
        except PermissionError as exc:
            raise UserError(
                f"Cannot lock {self.env}: permission denied on {self.path}",
                hint="Run tfrebuild as the user who owns the environment.",
            ) from exc
        except OSError as exc:
            # A read-only (or full) filesystem: flock works on a read-only descriptor too, so the
            # commands that only read still run there; a write fails later, worded by the CLI.
            if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                raise _not_a_lock_file(self.path, exc.strerror or str(exc)) from exc
            try:
                fd = os.open(self.path, os.O_RDONLY | flags)
            except OSError as inner:
                raise _not_a_lock_file(self.path, inner.strerror or str(inner)) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _not_a_lock_file(self.path, "not a regular file")
        return fd

    def _busy_error(self, holder: dict[str, Any] | None) -> UserError:
        pid = holder.get("pid") if holder else None
        command = holder.get("command") if holder else None
        if pid and pid_alive(pid):
            who = f"pid {pid}: {command}" if command else f"pid {pid}"
            return UserError(
                f"Another tfrebuild ({who}) is working on {self.env}",
                hint=f"Wait for it to finish. If it is stuck, stop it (kill {pid}); the next tfrebuild run "
                "finishes or undoes whatever it was doing.",
                exit_code=1,
            )
        detail = (
            f" (the lock file names pid {pid}: {command}, which is gone; a process it started may hold it)"
            if pid
            else ""
        )
        return UserError(
            f"Another process holds the tfrebuild lock on {self.env}{detail}",
            hint=f"Find it with `fuser {self.path}` and wait for it or stop it.",
            exit_code=1,
        )

    def holder(self, *, wait: bool = False) -> dict[str, Any] | None:
        """``{"pid", "command", "started"}`` of a live holder, else ``None`` (never waits or locks; opened
        read-only, never through a symlink)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            holder = _holder_info(fd, wait=wait)
        finally:
            os.close(fd)
        if holder and pid_alive(holder.get("pid")):
            return holder
        return None


def _release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _not_a_lock_file(path: Path, why: str) -> UserError:
    return UserError(
        f"The tfrebuild lock {path} is not a plain file ({why}): tfrebuild will not open it, "
        "since writing it could change whatever a link there points at",
        hint=f"Check what it is, remove it (rm {path}) and run tfrebuild again; a new lock file is made.",
        exit_code=1,
    )


GITIGNORE = "# Written by tfrebuild: its state folder (generations, logs) is never part of a project.\n*\n"


def _ignore_in_git(folder_fd: int) -> None:
    """Give the state folder a ``.gitignore`` of ``*`` (as uv does inside ``.venv``), so a project's
    ``git status`` does not list it; created once, never through a link, never an error."""
    try:
        fd = os.open(".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=folder_fd)
    except OSError:  # already there (or a link planted there, or a read-only disk): leave it
        return
    try:
        os.write(fd, GITIGNORE.encode())
    finally:
        os.close(fd)
