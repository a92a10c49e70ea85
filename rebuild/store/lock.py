"""The store's exclusive lock: ``<state>/lock``, flock'd, naming its holder.

The lock file holds JSON ``{"pid", "command", "started"}`` of the holder.  ``flock`` is
the authority: when it can be taken, whatever the file says is stale (its process
died) and is taken over.  A second locker is refused at once, never made to wait.
"""

from __future__ import annotations

import errno
import json
import os
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


def _holder_info(fd: int, *, wait: bool) -> dict | None:
    """Parse the lock file; with ``wait``, give a holder that just took the flock ~0.2 s to write it."""
    deadline = time.monotonic() + (0.2 if wait else 0)
    while True:
        try:
            raw = os.pread(fd, 4096, 0)
            info = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
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
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_info(fd, wait=True)
            os.close(fd)
            raise self._busy_error(holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            info = {"pid": os.getpid(), "command": command, "started": now_iso()}
            try:  # who holds it is a courtesy; the flock is the authority (a full or read-only disk skips it)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError:
                pass
            self._fd, self._depth = fd, 1
            on_acquire()
            yield
        finally:
            self._fd, self._depth = None, 0
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _open(self) -> int:
        if fcntl is None:  # pragma: no cover
            raise UserError("tfrebuild needs a POSIX system (fcntl) to lock environments")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            # A read-only (or full) filesystem: flock works on a read-only descriptor too, so the
            # commands that only read still run there; a write fails later, worded by the CLI.
            if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT) and self.path.is_file():
                return os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            if not isinstance(exc, PermissionError):
                raise
            raise UserError(
                f"Cannot lock {self.env}: permission denied on {self.path}",
                hint="Run tfrebuild as the user who owns the environment.",
            ) from exc

    def _busy_error(self, holder: dict | None) -> UserError:
        pid = holder.get("pid") if holder else None
        command = holder.get("command") if holder else None
        if pid and pid_alive(pid):
            who = f"pid {pid}: {command}" if command else f"pid {pid}"
            return UserError(
                f"Another tfrebuild ({who}) is working on {self.env}",
                hint=f"Wait for it to finish. If it is stuck, stop it (kill {pid}); the next tfrebuild run "
                "finishes or undoes whatever it was doing.",
            )
        detail = f" (the lock file names pid {pid}: {command}, which is gone; a process it started may hold it)" if pid else ""
        return UserError(
            f"Another process holds the tfrebuild lock on {self.env}{detail}",
            hint=f"Find it with `fuser {self.path}` and wait for it or stop it.",
        )

    def holder(self) -> dict | None:
        """``{"pid", "command", "started"}`` of a live holder, else ``None`` (never waits or locks)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            holder = _holder_info(fd, wait=False)
        finally:
            os.close(fd)
        if holder and pid_alive(holder.get("pid")):
            return holder
        return None
