"""The generation store of one managed environment.

For an environment at ``E`` the store lives in a hidden sibling folder (same parent,
hence same filesystem, so every move below is a rename)::

    <state> = E.parent / ".<E.name>.tfrebuild"
    <state>/store.toml                  env = "/abs/E", current = 2, previous = 1, schema = 1
    <state>/lock                        flock'd; JSON {"pid", "command", "started"} of the holder
    <state>/journal.json                intent journal of the operation in progress (absent when idle)
    <state>/generations/<N>/meta.toml   number, created, command, tensorflow, python, inode, device, note
    <state>/generations/<N>/profile.toml written by callers (opaque here)
    <state>/generations/<N>/env/        generation N's tree while it is NOT current (the current one is E)
    <state>/staging/<id>/               builds in progress (callers build into <id>/env)
    <state>/trash/<id>/                 a generation being deleted (renamed here first)
    <state>/logs/

A generation's tree is identified by the inode + device of its top directory: they
survive renames, so after a crash :meth:`Store.recover` can tell which tree sits at
``E`` without ever writing anything into the user's environment.

Every change follows the same pattern: take the lock, write the intent journal
(atomically, fsync'd), do the renames, record the result in the TOML files (atomic,
fsync'd), remove the journal.  A crash at any point leaves either the old or the new
state recoverable from the journal plus the inodes.

Typical use by a command::

    store = Store.open(env)
    with store.lock("tfrebuild upgrade --to 2.16"):
        store.recover()                       # finish/undo anything interrupted
        op = new_op_id("upgrade")
        tree = store.staging_dir(op) / "env"
        store.begin({"op": "upgrade", "id": op, "step": "building",
                     "staging": str(store.staging_dir(op))})
        ...build tree, write generations/<N>/profile.toml...
        store.switch_to(tree, Generation.new(store.next_number(), command=...))
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import sys
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import tomli_w

from rebuild.store import swap
from rebuild.errors import UserError
from rebuild.util import fs

try:  # POSIX only; the store refuses to lock without it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA = 1
FAULT_ENV = "TFREBUILD_FAULT"
_INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------- helpers


def fault_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process when ``$TFREBUILD_FAULT`` equals ``name``."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now_iso() -> str:
    """Current UTC time as ``2024-05-01T12:00:00Z``."""
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_op_id(op: str) -> str:
    """A unique, filesystem-safe operation id such as ``upgrade-20240501T120000-4242-a1b2``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{op}-{stamp}-{os.getpid()}-{secrets.token_hex(2)}"


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


def _abs(path: Path | str) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def state_dir(env: Path) -> Path:
    """The state folder of the environment at ``env``: ``E.parent/.<name>.tfrebuild``."""
    env = _abs(env)
    return env.parent / f".{env.name.lstrip('.')}.tfrebuild"


def atomic_write(path: Path, data: bytes) -> None:
    """Store files are written whole, mode 0644 (see :func:`rebuild.util.fs.atomic_write`)."""
    fs.atomic_write(path, data, mode=0o644)


def _toml_int(value: int) -> int | str:
    # TOML integers are signed 64-bit; a (rare) larger inode is kept as a string.
    return value if -_INT64_MAX <= value <= _INT64_MAX else str(value)


def _read_toml(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(
            f"The tfrebuild {what} {path} is damaged: {exc}",
            hint="Restore it from a backup, or move the state folder away to stop managing this environment.",
        ) from exc


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _walk_lstat(root: Path) -> Iterator[os.stat_result]:
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


def _size(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def disk_usage(paths: list[Path]) -> dict[Path, int]:
    """Bytes on disk per tree, each inode counted once overall.

    A file hard-linked into several trees (uv links packages from its cache; successive
    generations share files) is counted in the first tree of ``paths`` that has it.
    Symlinks are counted as themselves, never followed.  Sizes are allocated blocks
    (like ``du``), falling back to ``st_size`` where blocks are unknown.
    """
    seen: set[tuple[int, int]] = set()
    usage: dict[Path, int] = {}
    for path in paths:
        total = 0
        for st in _walk_lstat(Path(path)):
            key = _key(st)
            if key in seen:
                continue
            seen.add(key)
            total += _size(st)
        usage[Path(path)] = usage.get(Path(path), 0) + total
    return usage


def exclusive_usage(paths: list[Path]) -> tuple[dict[Path, int], int]:
    """Per tree, the bytes only that tree holds (freed if it is deleted); and the total counted once.

    A file hard-linked between generations, or into uv's cache, is shared: it is in
    no tree's exclusive figure but counts once in the total.
    """
    owners: dict[tuple[int, int], set[int]] = {}
    sizes: dict[tuple[int, int], int] = {}
    seen_links: dict[tuple[int, int], int] = {}
    nlinks: dict[tuple[int, int], int] = {}
    for i, path in enumerate(paths):
        for st in _walk_lstat(Path(path)):
            key = _key(st)
            owners.setdefault(key, set()).add(i)
            sizes[key] = _size(st)
            seen_links[key] = seen_links.get(key, 0) + 1
            nlinks[key] = st.st_nlink if not stat.S_ISDIR(st.st_mode) else 1
    alone = {Path(p): 0 for p in paths}
    for key, who in owners.items():
        # Only in one tree, and no hard link outside the trees (uv's cache): deleting it frees the space.
        if len(who) == 1 and seen_links[key] >= nlinks[key]:
            alone[Path(paths[next(iter(who))])] += sizes[key]
    return alone, sum(sizes.values())


def _freeable_bytes(root: Path) -> int:
    """Bytes that deleting ``root`` would free: files whose every hard link is inside it."""
    found: dict[tuple[int, int], list] = {}
    for st in _walk_lstat(root):
        entry = found.setdefault(_key(st), [st, 0])
        entry[1] += 1
    total = 0
    for st, links in found.values():
        if stat.S_ISDIR(st.st_mode) or links >= st.st_nlink:
            total += _size(st)
    return total


def _is_inside(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(base.rstrip(os.sep) + os.sep)


def _rmtree_onerror(func, path, exc_info):  # noqa: ARG001
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
    path = _abs(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    # The entry's folder must resolve inside ``inside``; the entry itself is not a link
    # when it is a directory (lstat), so its contents are inside too.
    if not (_is_inside(path.parent, inside) or os.path.realpath(path.parent) == os.path.realpath(inside)):
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


# --------------------------------------------------------------------------- generations


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

    @classmethod
    def new(cls, number: int, *, command: str, tensorflow: str = "", python: str = "", note: str = "") -> Generation:
        """A generation record stamped now; the store fills in ``inode``/``device``."""
        return cls(number=number, created=now_iso(), command=command, tensorflow=tensorflow, python=python, note=note)

    def path(self, store: Store) -> Path:
        """Where this generation's tree is now: ``E`` if current, else ``generations/<n>/env``."""
        if self.number == store.current_number:
            return store.env
        return store.generation_dir(self.number) / "env"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inode"] = _toml_int(self.inode)
        data["device"] = _toml_int(self.device)
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


# --------------------------------------------------------------------------- the store


class Store:
    """The generation store of the environment at ``env`` (see the module docstring)."""

    def __init__(self, env: Path, data: dict):
        self.env = _abs(env)
        self.state = state_dir(self.env)
        self._data = dict(data)
        self._lock_fd: int | None = None
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"Store(env={str(self.env)!r}, current={self.current_number}, previous={self.previous_number})"

    # ---- paths
    @property
    def store_file(self) -> Path:
        return self.state / "store.toml"

    @property
    def lock_path(self) -> Path:
        return self.state / "lock"

    @property
    def journal_path(self) -> Path:
        return self.state / "journal.json"

    @property
    def generations_dir(self) -> Path:
        return self.state / "generations"

    @property
    def staging_root(self) -> Path:
        return self.state / "staging"

    @property
    def trash_root(self) -> Path:
        return self.state / "trash"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    def generation_dir(self, n: int) -> Path:
        return self.generations_dir / str(int(n))

    # ---- opening
    @classmethod
    def open(cls, env: Path) -> Store | None:
        """The store of ``env``, or ``None`` when tfrebuild does not manage it."""
        env = _abs(env)
        store_file = state_dir(env) / "store.toml"
        if not store_file.is_file():
            return None
        store = cls(env, {})
        store.reload()
        return store

    def reload(self) -> None:
        """Re-read ``store.toml`` (done automatically when the lock is taken)."""
        if not self.store_file.is_file():
            return
        data = _read_toml(self.store_file, "state file")
        schema = data.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise UserError(
                f"{self.store_file} was written by a newer tfrebuild (schema {schema})",
                hint="Upgrade tfrebuild to manage this environment.",
            )
        if not isinstance(data.get("current"), int):
            raise UserError(f"The tfrebuild state file {self.store_file} has no current generation",
                            hint="Restore it from a backup, or move the state folder away.")
        self._data = data

    @classmethod
    def unmanaged(cls, env: Path) -> Store:
        """A store object for an env tfrebuild does not manage yet: it can be locked, then :meth:`adopt` it."""
        return cls(_abs(env), {})

    @property
    def managed(self) -> bool:
        return self.store_file.is_file()

    @classmethod
    def create(cls, env: Path, first: Generation | Mapping[str, Any] | None = None) -> Store:
        """Start managing ``env``: adopt the tree at ``E`` as generation 1 (see :meth:`adopt`)."""
        store = cls.unmanaged(env)
        store.adopt(first)
        return store

    def adopt(self, first: Generation | Mapping[str, Any] | None = None) -> Generation:
        """Adopt the tree at ``E`` as generation 1 (under the lock, taken here if not held).

        ``first`` supplies created/command/tensorflow/python/note (a :class:`Generation`
        or a mapping); the number is always 1 and inode/device are read from ``E``.
        """
        env = self.env
        st = _lstat_env(env)
        state = self.state
        if os.path.islink(state) or (state.exists() and not state.is_dir()):
            raise UserError(f"Cannot create the tfrebuild state folder {state}: something else is there",
                            hint="Move it away and try again.")
        if self.managed:
            raise UserError(f"{env} is already managed by tfrebuild", hint=f"Its state lives in {state}.")
        try:
            state.mkdir(exist_ok=True)
        except PermissionError as exc:
            raise UserError(f"Cannot create {state}: permission denied",
                            hint=f"tfrebuild keeps its state beside the environment; you need write access to {env.parent}.") from exc
        if os.lstat(state).st_dev != st.st_dev:
            raise UserError(
                f"{env} is on a different filesystem than its parent folder (a mount point?)",
                hint="tfrebuild swaps environments by renaming beside them, which needs one filesystem. "
                "Use an environment folder that is not itself a mount point.",
            )
        with self.lock("tfrebuild adopt"):
            if self.managed:
                raise UserError(f"{env} is already managed by tfrebuild", hint=f"Its state lives in {state}.")
            self._data = {"schema": SCHEMA, "env": str(env), "current": 1}
            for folder in (self.generations_dir, self.staging_root, self.logs_dir):
                folder.mkdir(exist_ok=True)
            base = asdict(first) if isinstance(first, Generation) else dict(first or {})
            base.setdefault("created", now_iso())
            base.setdefault("command", "adopted")
            base.update(number=1, inode=st.st_ino, device=st.st_dev)
            gen = Generation.from_dict(base)
            self.generation_dir(1).mkdir(exist_ok=True)
            self.write_meta(gen)
            self.write_state(1, None)
        return gen

    # ---- generations
    @property
    def current_number(self) -> int:
        return int(self._data["current"])

    @property
    def previous_number(self) -> int | None:
        prev = self._data.get("previous")
        return int(prev) if isinstance(prev, int) else None

    @property
    def current(self) -> Generation:
        return self.generation(self.current_number)

    @property
    def previous(self) -> Generation | None:
        n = self.previous_number
        return self.generation(n) if n is not None else None

    def generations(self) -> list[Generation]:
        """All recorded generations, oldest first (folders without ``meta.toml`` are skipped)."""
        result = []
        try:
            entries = list(os.scandir(self.generations_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.isdigit() and os.path.isfile(os.path.join(entry.path, "meta.toml")):
                result.append(self._load_meta(int(entry.name)))
        return sorted(result, key=lambda g: g.number)

    def generation(self, n: int) -> Generation:
        """Generation ``n``; :class:`UserError` if there is none."""
        if not (self.generation_dir(n) / "meta.toml").is_file():
            have = ", ".join(str(g.number) for g in self.generations()) or "none"
            raise UserError(f"{self.env} has no generation {n}", hint=f"Existing generations: {have}.")
        return self._load_meta(n)

    def _load_meta(self, n: int) -> Generation:
        path = self.generation_dir(n) / "meta.toml"
        data = _read_toml(path, "generation record")
        data["number"] = n
        try:
            gen = Generation.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise UserError(f"The tfrebuild generation record {path} is damaged: {exc}",
                            hint="Restore it from a backup, or delete that generation's folder by hand.") from exc
        for name in ("created", "command", "tensorflow", "python", "note"):
            if not isinstance(getattr(gen, name), str):
                raise UserError(f"The tfrebuild generation record {path} is damaged: {name} is not a string",
                                hint="Restore it from a backup, or delete that generation's folder by hand.")
        return gen

    def next_number(self) -> int:
        """One more than any generation number seen (recorded or with a folder)."""
        numbers = [self.current_number]
        if self.previous_number is not None:
            numbers.append(self.previous_number)
        try:
            numbers += [int(e.name) for e in os.scandir(self.generations_dir) if e.name.isdigit()]
        except FileNotFoundError:
            pass
        return max(numbers) + 1

    def write_meta(self, gen: Generation) -> None:
        """Atomically write ``generations/<n>/meta.toml``."""
        folder = self.generation_dir(gen.number)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "meta.toml", tomli_w.dumps(gen.to_dict()).encode())

    def write_state(self, current: int, previous: int | None) -> None:
        """Atomically write ``store.toml`` with the given current/previous generations."""
        data: dict[str, Any] = {"schema": SCHEMA, "env": str(self.env), "current": int(current)}
        if previous is not None:
            data["previous"] = int(previous)
        atomic_write(self.store_file, tomli_w.dumps(data).encode())
        self._data = data

    def check_current(self) -> os.stat_result:
        """``lstat`` of ``E``; :class:`UserError` unless it is the tree recorded as current."""
        st = _lstat_env(self.env)
        cur = self.current
        if _key(st) != (cur.device, cur.inode):
            raise UserError(
                f"{self.env} is not the environment tfrebuild recorded as generation {cur.number}: "
                "it was replaced or recreated outside tfrebuild",
                hint="tfrebuild will not move a tree it did not record. Move the state folder "
                f"{self.state} away to start over, or re-adopt the environment as it is now.",
            )
        return st

    def adopt_current(self) -> Generation:
        """Re-record the tree now at ``E`` as the current generation (after a manual rebuild)."""
        with self._hold("tfrebuild adopt"):
            st = _lstat_env(self.env)
            gen = replace(self.current, inode=st.st_ino, device=st.st_dev)
            self.write_meta(gen)
            return gen

    # ---- staging and logs
    def staging_dir(self, op_id: str) -> Path:
        """``<state>/staging/<op_id>`` (created)."""
        path = self.staging_root / _check_id(op_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def discard_staging(self, op_id: str) -> None:
        """Delete ``<state>/staging/<op_id>`` (a failed build)."""
        safe_rmtree(self.staging_root / _check_id(op_id), self.state)

    def log_path(self, op_id: str) -> Path:
        """``<state>/logs/<op_id>.log`` (the folder is created)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return self.logs_dir / f"{_check_id(op_id)}.log"

    def leftover_staging(self) -> list[Path]:
        """Staging folders no live operation refers to (an interrupted build's remains)."""
        try:
            entries = sorted(e.path for e in os.scandir(self.staging_root))
        except FileNotFoundError:
            return []
        live: set[str] = set()
        journal = self.journal()
        if journal and pid_alive(journal.get("pid")) and journal.get("staging"):
            live.add(os.path.abspath(journal["staging"]))
        return [Path(p) for p in entries if os.path.abspath(p) not in live]

    # ---- lock
    @contextmanager
    def lock(self, command: str) -> Iterator[Store]:
        """Hold the store's exclusive lock (non-blocking; re-entrant for this object).

        A second locker gets :class:`UserError` at once, naming the holder's pid and
        command.  ``flock`` is the authority: when it can be taken, whatever the lock
        file says is stale (its process died) and is taken over.
        """
        if self._lock_fd is not None:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        if fcntl is None:  # pragma: no cover
            raise UserError("tfrebuild needs a POSIX system (fcntl) to lock environments")
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except PermissionError as exc:
            raise UserError(
                f"Cannot lock {self.env}: permission denied on {self.lock_path}",
                hint="Run tfrebuild as the user who owns the environment.",
            ) from exc
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
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            self._lock_fd, self._lock_depth = fd, 1
            self.reload()
            yield self
        finally:
            self._lock_fd, self._lock_depth = None, 0
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

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
            hint=f"Find it with `fuser {self.lock_path}` and wait for it or stop it.",
        )

    def _hold(self, command: str):
        """The lock, taken if this object does not hold it yet."""
        return self.lock(command)

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock_fd is not None

    def lock_holder(self) -> dict | None:
        """``{"pid", "command", "started"}`` of a live lock holder, else ``None`` (never waits or locks)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            holder = _holder_info(fd, wait=False)
        finally:
            os.close(fd)
        if holder and pid_alive(holder.get("pid")):
            return holder
        return None

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("hold store.lock(...) before changing the store")

    # ---- journal
    def journal(self) -> dict | None:
        """The intent journal of the operation in progress, or ``None``."""
        try:
            with open(self.journal_path, "rb") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise UserError(f"The tfrebuild journal {self.journal_path} is damaged: {exc}",
                            hint="Check the environment by hand, then delete the journal file.") from exc
        return data if isinstance(data, dict) else None

    def begin(self, op: Mapping[str, Any]) -> dict:
        """Write the journal for a new operation (needs the lock; no journal may exist).

        ``op`` must name ``"op"``; ``id``, ``pid``, ``step`` and ``started`` are filled in.
        """
        self._require_lock()
        if self.journal_path.exists():
            raise RuntimeError(f"an operation is already journaled in {self.journal_path}; call recover() first")
        data = dict(op)
        if data.get("op") not in ("upgrade", "rollback", "gc"):
            raise ValueError(f"unknown operation {data.get('op')!r}")
        data.setdefault("id", new_op_id(data["op"]))
        data.setdefault("pid", os.getpid())
        data.setdefault("step", "started")
        data.setdefault("started", now_iso())
        data.setdefault("env", str(self.env))
        self._write_journal(data)
        return data

    def update_journal(self, **changes: Any) -> dict:
        """Merge ``changes`` into the journal (atomically)."""
        self._require_lock()
        data = self.journal()
        if data is None:
            raise RuntimeError("no journal to update")
        data.update(changes)
        self._write_journal(data)
        return data

    def commit(self) -> None:
        """Remove the journal: the operation is complete (or nothing happened)."""
        self._require_lock()
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            return
        fs.fsync_dir(self.state)

    def _write_journal(self, data: dict) -> None:
        atomic_write(self.journal_path, json.dumps(data, indent=2, sort_keys=True).encode())

    # ---- operations
    def _free_dest(self, dest: Path) -> None:
        """Make sure ``dest`` (where an old tree will be parked) is free."""
        if not os.path.lexists(dest):
            return
        if dest.is_dir() and not dest.is_symlink() and not any(os.scandir(dest)):
            os.rmdir(dest)
            return
        raise UserError(f"Cannot park the old environment at {dest}: something is already there",
                        hint="The tfrebuild state folder is inconsistent; inspect that folder by hand.")

    def _staging_of(self, tree: Path) -> Path:
        """``<state>/staging/<id>`` that holds ``tree`` (which must be inside it)."""
        root = self.staging_root
        try:
            rel = tree.relative_to(root)
        except ValueError:
            rel = None
        if rel is None or len(rel.parts) < 2 or not _is_inside(tree, root):
            raise UserError(f"{tree} is not inside the staging folder {root}",
                            hint="Build new environments in store.staging_dir(<id>)/env.")
        return root / rel.parts[0]

    def switch_to(self, new_tree: Path, new_gen: Generation) -> Generation:
        """Make the tree at ``new_tree`` (in staging) the current environment at ``E``.

        Steps (each followed by a fault point ``upgrade.<step>``): journal-written,
        swapped (``exchange(E, new_tree)``), old-moved (old tree to
        ``generations/<old>/env``), recorded (meta + store.toml); then the staging
        folder and the journal are removed.  Returns the recorded generation.

        A journal this process began for the build (``begin({"op": "upgrade", ...})``)
        is taken over.  If the exchange itself fails, nothing changed: the journal is
        removed and the staging tree is left for the caller to discard.
        """
        with self._hold(f"tfrebuild upgrade to generation {new_gen.number}"):
            new_tree = _abs(new_tree)
            staging = self._staging_of(new_tree)
            st_new = os.lstat(new_tree) if os.path.lexists(new_tree) else None
            if st_new is None or not stat.S_ISDIR(st_new.st_mode):
                raise UserError(f"The new environment {new_tree} is missing or not a directory",
                                hint="The build did not produce it; see the build log.")
            old = self.current
            st_old = self.check_current()
            number = new_gen.number
            if number in (old.number, self.previous_number) or (self.generation_dir(number) / "meta.toml").exists():
                raise UserError(f"Generation {number} already exists for {self.env}",
                                hint=f"Use store.next_number() ({self.next_number()}).")
            if not swap.same_filesystem(self.env, new_tree):
                raise swap.cross_device_error(self.env, new_tree)
            old_dest = self.generation_dir(old.number) / "env"
            self._free_dest(old_dest)
            gen = replace(new_gen, inode=st_new.st_ino, device=st_new.st_dev)
            fields_ = {
                "op": "upgrade", "id": staging.name, "step": "journal-written", "pid": os.getpid(),
                "new": number, "old": old.number, "previous": self.previous_number,
                "staging": str(staging), "new_tree": str(new_tree), "old_dest": str(old_dest),
                "new_inode": st_new.st_ino, "new_device": st_new.st_dev,
                "old_inode": st_old.st_ino, "old_device": st_old.st_dev,
                "generation": asdict(gen),
            }
            journal = self.journal()
            if journal is not None:
                if journal.get("op") != "upgrade" or journal.get("pid") != os.getpid():
                    raise RuntimeError("another operation is journaled; call recover() first")
                self.update_journal(**fields_)
            else:
                self.begin(fields_)
            fault_point("upgrade.journal-written")

            try:
                method = swap.exchange(self.env, new_tree)
            except BaseException:
                if _key_or_none(self.env) == _key(st_old):
                    self.commit()  # nothing changed; the caller still owns the staging tree
                raise
            self.update_journal(step="swapped", method=method)
            fault_point("upgrade.swapped")

            old_dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(new_tree, old_dest)
            fs.fsync_dir(new_tree.parent)
            fs.fsync_dir(old_dest.parent)
            self.update_journal(step="old-moved")
            fault_point("upgrade.old-moved")

            self.write_meta(gen)
            self.write_state(number, old.number)
            self.update_journal(step="recorded")
            fault_point("upgrade.recorded")

            safe_rmtree(staging, self.state)
            self.commit()
            return gen

    def rollback_to(self, n: int | None = None) -> Generation:
        """Make generation ``n`` (default: the previous one) current again.

        The generation rolled away from becomes ``previous``, so a second plain
        rollback undoes the first (like ``cd -``).  Fault points ``rollback.<step>``
        as in :meth:`switch_to`.  Returns the now-current generation.
        """
        with self._hold(f"tfrebuild rollback to generation {n if n is not None else 'previous'}"):
            old = self.current
            if n is None:
                if self.previous_number is None:
                    raise UserError(f"{self.env} has no previous generation to roll back to",
                                    hint="Generations are created by upgrades.")
                n = self.previous_number
            if n == old.number:
                raise UserError(f"Generation {n} is already the current environment at {self.env}")
            target = self.generation(n)
            source = self.generation_dir(n) / "env"
            try:
                st_src = os.lstat(source)
            except FileNotFoundError:
                raise UserError(f"Generation {n} has no environment tree any more (it was deleted)",
                                hint="Pick another generation, see the history.") from None
            if not stat.S_ISDIR(st_src.st_mode):
                raise UserError(f"{source} is not a directory", hint="The state folder was changed by hand.")
            if _key(st_src) != (target.device, target.inode):
                target = replace(target, inode=st_src.st_ino, device=st_src.st_dev)
                self.write_meta(target)
            st_old = self.check_current()
            old_dest = self.generation_dir(old.number) / "env"
            self._free_dest(old_dest)
            self.begin({
                "op": "rollback", "id": new_op_id("rollback"), "step": "journal-written",
                "from": old.number, "to": n, "previous": self.previous_number,
                "source": str(source), "old_dest": str(old_dest),
                "new_inode": st_src.st_ino, "new_device": st_src.st_dev,
                "old_inode": st_old.st_ino, "old_device": st_old.st_dev,
            })
            fault_point("rollback.journal-written")

            try:
                method = swap.exchange(self.env, source)
            except BaseException:
                if _key_or_none(self.env) == _key(st_old):
                    self.commit()
                raise
            self.update_journal(step="swapped", method=method)
            fault_point("rollback.swapped")

            os.rename(source, old_dest)
            fs.fsync_dir(source.parent)
            fs.fsync_dir(old_dest.parent)
            self.update_journal(step="old-moved")
            fault_point("rollback.old-moved")

            self.write_state(n, old.number)
            self.update_journal(step="recorded")
            fault_point("rollback.recorded")

            self.commit()
            return self.current

    def delete_generation(self, n: int) -> int:
        """Delete ``generations/<n>`` (never the current or previous one); return bytes freed.

        Symlinks inside are removed as links, never followed; the folder must resolve
        inside the state folder.  Files hard-linked elsewhere are not counted as freed.
        """
        with self._hold(f"tfrebuild gc generation {n}"):
            if n == self.current_number:
                raise UserError(f"Generation {n} is the current environment; it cannot be deleted",
                                hint="Roll back or upgrade first.")
            if n == self.previous_number:
                raise UserError(f"Generation {n} is the previous generation (the rollback target); it is kept",
                                hint="It can be deleted after another upgrade or rollback.")
            folder = self.generation_dir(n)
            if not os.path.lexists(folder):
                raise UserError(f"{self.env} has no generation {n}")
            if os.path.islink(folder) or not _is_inside(folder, self.generations_dir):
                raise UserError(f"Refusing to delete {folder}: it points outside {self.state}",
                                hint="Someone replaced it with a link; remove the link by hand.")
            freed = _freeable_bytes(folder)
            op_id = new_op_id("gc")
            trash = self.trash_root / op_id
            self.begin({"op": "gc", "id": op_id, "step": "journal-written", "generation": n, "trash": str(trash)})
            fault_point("gc.journal-written")
            self.trash_root.mkdir(exist_ok=True)
            os.rename(folder, trash)
            fs.fsync_dir(self.generations_dir)
            self.update_journal(step="moved")
            fault_point("gc.moved")
            safe_rmtree(trash, self.state)
            self.commit()
            return freed

    # ---- recovery
    def recover(self) -> str | None:
        """Finish or undo an interrupted operation and remove leftovers.

        Takes the lock (re-entrant): while it is held no other tfrebuild runs, so any
        journal found is stale (its process died, or it is this process's own from a
        failed call).  The tree at ``E`` is identified by inode: if it is the new tree
        the operation is finished, otherwise undone.  Returns what was done, or ``None``.
        """
        with self._hold("tfrebuild recover"):
            done: list[str] = []
            journal = self.journal()
            if journal is not None:
                op = journal.get("op")
                if op == "upgrade":
                    done.append(self._recover_upgrade(journal))
                elif op == "rollback":
                    done.append(self._recover_rollback(journal))
                elif op == "gc":
                    done.append(self._recover_gc(journal))
                else:
                    raise UserError(f"Unknown operation {op!r} in {self.journal_path}",
                                    hint="It was written by another tfrebuild version; check the environment and delete the journal.")
            for path in self.leftover_staging():
                safe_rmtree(path, self.state)
                done.append(f"removed leftover staging folder {path}")
            if self.trash_root.is_dir():
                for entry in os.scandir(self.trash_root):
                    safe_rmtree(Path(entry.path), self.state)
                    done.append(f"removed leftover {entry.path}")
            return "; ".join(done) or None

    def _env_key(self, *others: Path) -> tuple[int, int] | None:
        key = _key_or_none(self.env)
        if key is None:
            for other in others:  # a fallback exchange interrupted between its renames
                swap.repair(self.env, other)
            key = _key_or_none(self.env)
        return key

    def _owned(self, value: Any, root: Path) -> Path | None:
        """``value`` from the journal as a path, only if it is a direct child of ``root``."""
        if not value:
            return None
        path = _abs(value)
        if path.parent != root:
            raise UserError(f"The journal {self.journal_path} names {path}, outside {root}",
                            hint="It was edited or damaged; check the environment and delete the journal.")
        return path

    def _recover_upgrade(self, j: dict) -> str:
        staging = self._owned(j.get("staging"), self.staging_root)
        if "new_inode" not in j:  # interrupted while building or checking: nothing was swapped
            if staging is not None:
                safe_rmtree(staging, self.state)
            number = j.get("new")
            if isinstance(number, int) and number not in (self.current_number, self.previous_number):
                folder = self.generation_dir(number)
                if folder.is_dir() and not (folder / "meta.toml").exists():
                    safe_rmtree(folder, self.state)
            self.commit()
            return f"rolled back interrupted upgrade: removed staging {staging}"
        new_key = (j["new_device"], j["new_inode"])
        old_key = (j["old_device"], j["old_inode"])
        number, old_number = int(j["new"]), int(j["old"])
        new_tree = _abs(j["new_tree"])
        if staging is None or staging not in new_tree.parents:
            raise UserError(f"The journal {self.journal_path} names a new tree outside staging: {new_tree}",
                            hint="It was edited or damaged; check the environment and delete the journal.")
        old_dest = self.generation_dir(old_number) / "env"
        env_key = self._env_key(new_tree)
        if env_key == new_key:
            if _key_or_none(new_tree) == old_key:
                self._free_dest(old_dest)
                os.rename(new_tree, old_dest)
                fs.fsync_dir(new_tree.parent)
                fs.fsync_dir(old_dest.parent)
            gen = Generation.from_dict({**j["generation"], "inode": j["new_inode"], "device": j["new_device"]})
            self.write_meta(gen)
            self.write_state(number, old_number)
            if staging is not None:
                safe_rmtree(staging, self.state)
            self.commit()
            return f"finished interrupted upgrade to generation {number}"
        if env_key == old_key:
            if staging is not None:
                safe_rmtree(staging, self.state)
            folder = self.generation_dir(number)
            if (folder.is_dir() and not (folder / "meta.toml").exists()
                    and number not in (self.current_number, self.previous_number)):
                safe_rmtree(folder, self.state)
            self.commit()
            return f"rolled back interrupted upgrade to generation {number}: removed staging {staging}"
        raise UserError(
            f"Cannot recover the interrupted upgrade of {self.env}: it holds neither the old nor the new environment",
            hint=f"Inspect {self.env} and {self.state} by hand, then delete {self.journal_path}.",
        )

    def _recover_rollback(self, j: dict) -> str:
        new_key = (j["new_device"], j["new_inode"])
        old_key = (j["old_device"], j["old_inode"])
        to, frm = int(j["to"]), int(j["from"])
        source, old_dest = self.generation_dir(to) / "env", self.generation_dir(frm) / "env"
        env_key = self._env_key(source)
        if env_key == new_key:
            if _key_or_none(source) == old_key:
                self._free_dest(old_dest)
                os.rename(source, old_dest)
                fs.fsync_dir(source.parent)
                fs.fsync_dir(old_dest.parent)
            self.write_state(to, frm)
            self.commit()
            return f"finished interrupted rollback to generation {to}"
        if env_key == old_key:
            self.commit()
            return f"undid interrupted rollback to generation {to}: generation {frm} is still current"
        raise UserError(
            f"Cannot recover the interrupted rollback of {self.env}: it holds neither generation {frm} nor {to}",
            hint=f"Inspect {self.env} and {self.state} by hand, then delete {self.journal_path}.",
        )

    def _recover_gc(self, j: dict) -> str:
        n = int(j["generation"])
        trash = self._owned(j.get("trash"), self.trash_root)
        folder = self.generation_dir(n)
        if os.path.lexists(folder) and n not in (self.current_number, self.previous_number) \
                and not os.path.islink(folder):
            safe_rmtree(folder, self.state)
        if trash is not None:
            safe_rmtree(trash, self.state)
        self.commit()
        return f"finished interrupted deletion of generation {n}"


# --------------------------------------------------------------------------- private


def _lstat_env(env: Path) -> os.stat_result:
    try:
        st = os.lstat(env)
    except FileNotFoundError:
        raise UserError(f"The environment {env} does not exist",
                        hint="Check the path (or --env).") from None
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"{env} is a symbolic link",
                        hint=f"tfrebuild manages real directories. Use the real path: {os.path.realpath(env)}")
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{env} is not a directory", hint="Point tfrebuild at an environment folder.")
    return st


def _key_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return _key(os.lstat(path))
    except OSError:
        return None


def _check_id(op_id: str) -> str:
    if not op_id or op_id in (".", "..") or "/" in op_id or os.sep in op_id or "\0" in op_id:
        raise ValueError(f"invalid operation id {op_id!r}")
    return op_id


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
