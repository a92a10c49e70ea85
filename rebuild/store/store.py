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

The concerns live in their own modules: :mod:`~rebuild.store.trees` (inode keys, walks,
safe deletion), :mod:`~rebuild.store.disk` (bytes a generation frees),
:mod:`~rebuild.store.faults` (crash-test points), :mod:`~rebuild.store.lock`,
:mod:`~rebuild.store.journal`, :mod:`~rebuild.store.records` (:class:`Generation`,
``meta.toml``), :mod:`~rebuild.store.swap` (the exchange) and
:mod:`~rebuild.store.recovery` (finishing or undoing an interrupted operation).
This module holds :class:`Store`: the paths, ``store.toml`` and the operations.

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
        store.last_swap_method                # "renameat2" or "rename": what the exchange ran
"""

from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import tomli_w

from rebuild.errors import UserError
from rebuild.store import disk, swap
from rebuild.store.faults import fault_point
from rebuild.store.journal import Journal, check_id, new_op_id, now_iso
from rebuild.store.lock import Lock, pid_alive
from rebuild.store.records import Generation, read_toml, toml_int
from rebuild.store.trees import abs_path, is_inside, key, key_or_none, safe_rmtree
from rebuild.util import fs, signals

SCHEMA = 1


def env_path(env: Path | str) -> Path:
    """The environment's path as the store knows it: absolute, every symlink resolved.

    An env reached through a symlink is the env its real path names: one state folder, one history.
    """
    return Path(os.path.realpath(abs_path(env)))


def state_dir(env: Path) -> Path:
    """The state folder of the environment at ``env``: ``E.parent/.<name>.tfrebuild``, ``E`` resolved.

    The name is kept whole (``.venv`` → ``..venv.tfrebuild``), so two envs of one folder never share one.
    """
    env = env_path(env)
    return env.parent / f".{env.name}.tfrebuild"


def legacy_state_dir(env: Path) -> Path:
    """Where tfrebuild before issue 14 kept the state: leading dots stripped (``.venv`` and ``venv`` collided)."""
    env = env_path(env)
    return env.parent / f".{env.name.lstrip('.')}.tfrebuild"


KEEP_LOGS = 20  # logs kept per state folder, the newest (the one being written included)


def prune_logs(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``*.log`` files of ``folder`` (plain files only, never followed)."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".log") and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    entries.sort(key=lambda e: (e.stat(follow_symlinks=False).st_mtime_ns, e.name), reverse=True)
    removed = []
    for entry in entries[max(keep, 0):]:
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _parent_key(env: Path) -> tuple[int, int] | None:
    try:
        return key(os.stat(env.parent))
    except OSError:
        return None


def _recorded_env(state: Path) -> str | None:
    """``env`` of ``state/store.toml`` (``None`` when unreadable); never follows a symlinked state folder."""
    if os.path.islink(state) or not os.path.isfile(state / "store.toml"):
        return None
    try:
        recorded = read_toml(state / "store.toml", "state file").get("env")
    except (UserError, OSError):
        return None
    return recorded if isinstance(recorded, str) else None


def _move_state(old: Path, new: Path) -> None:
    """Rename a state folder of the old naming to its own name (not while an older tfrebuild holds its lock)."""
    try:
        fd = os.open(old / "lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        raise UserError(f"Cannot move the tfrebuild state folder {old} to {new}: {exc.strerror or exc}",
                        hint=f"Rename it by hand (mv {old} {new}) when no tfrebuild runs.") from exc
    try:
        if fd is not None:
            try:
                _try_flock(fd)
            except BlockingIOError:
                raise UserError(f"Another tfrebuild is working with the state folder {old}",
                                hint=f"Wait for it to finish; tfrebuild then moves it to {new}.", exit_code=1) from None
        try:
            os.rename(old, new)
        except OSError as exc:
            raise UserError(f"Cannot move the tfrebuild state folder {old} to {new}: {exc.strerror or exc}",
                            hint=f"Rename it by hand (mv {old} {new}) when no tfrebuild runs.") from exc
        fs.fsync_dir(new.parent)
        _rebase_journal(new / "journal.json", old, new)
    finally:
        if fd is not None:
            os.close(fd)


def _rebase_journal(path: Path, old: Path, new: Path) -> None:
    """An interrupted operation's journal names paths in the folder that moved: point them at its new name."""
    if os.path.islink(path) or not path.is_file():
        return
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return  # damaged: recovery words it

    def rebase(value: Any) -> Any:
        if isinstance(value, str) and (value == str(old) or value.startswith(str(old) + os.sep)):
            return str(new) + value[len(str(old)):]
        if isinstance(value, dict):
            return {k: rebase(v) for k, v in value.items()}
        return value

    fs.atomic_write(path, json.dumps(rebase(data), indent=2, sort_keys=True).encode(), mode=0o644)


def _try_flock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _migrate_legacy(env: Path) -> None:
    """State folders of the old naming move to their own names when their ``store.toml`` says whose they are.

    ``.venv``'s state used to be ``.venv.tfrebuild``, which is now ``venv``'s: it moves to ``..venv.tfrebuild``
    when opened for either env (its record names ``.venv``). A folder whose record names neither is left alone
    (the owner check refuses it).
    """
    env = env_path(env)
    for candidate in {state_dir(env), legacy_state_dir(env)}:
        recorded = _recorded_env(candidate)
        if recorded is None or os.path.realpath(recorded) == str(env) and candidate == state_dir(env):
            continue
        owner = env_path(recorded)
        if owner.parent == env.parent and legacy_state_dir(owner) == candidate and candidate != state_dir(owner) \
                and not os.path.lexists(state_dir(owner)):
            _move_state(candidate, state_dir(owner))


def _write_file(path: Path, data: bytes) -> None:
    """Store files are written whole, mode 0644 (see :func:`rebuild.util.fs.atomic_write`)."""
    fs.atomic_write(path, data, mode=0o644)


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


# --------------------------------------------------------------------------- the store


def _folder(name: str) -> property:
    """A folder of the state folder, as a read-only attribute of the :class:`Store`."""
    return property(lambda self: self.state / name, doc=f"``<state>/{name}``")


class Store:
    """The generation store of the environment at ``env`` (see the module docstring)."""

    def __init__(self, env: Path, data: dict):
        self.env = env_path(env)
        self.state = state_dir(self.env)
        self._data = dict(data)
        self._lock = Lock(self.state / "lock", self.env)
        self._journal = Journal(self.state / "journal.json", self.env)
        self.last_swap_method: str | None = None
        """What the last exchange of this object actually ran: ``"renameat2"`` or ``"rename"``
        (set by :meth:`switch_to` and :meth:`rollback_to`, for callers to report)."""

    def __repr__(self) -> str:
        return f"Store(env={str(self.env)!r}, current={self.current_number}, previous={self.previous_number})"

    # ---- paths
    @property
    def store_file(self) -> Path:
        return self.state / "store.toml"

    @property
    def lock_path(self) -> Path:
        return self._lock.path

    @property
    def journal_path(self) -> Path:
        return self._journal.path

    generations_dir = _folder("generations")
    staging_root = _folder("staging")
    trash_root = _folder("trash")
    logs_dir = _folder("logs")

    def generation_dir(self, n: int) -> Path:
        return self.generations_dir / str(int(n))

    def make_dir(self, path: Path) -> Path:
        """Create the folder ``path`` inside the state folder (and those between); a symlink or a file
        anywhere on the way is refused, so nothing is ever written through a planted link."""
        rel = abs_path(path).relative_to(self.state)
        current = self.state
        for part in ("",) + rel.parts:
            current = current / part if part else current
            try:
                os.mkdir(current)
            except FileExistsError:
                pass
            except OSError as exc:
                raise UserError(f"Cannot create {current}: {exc.strerror or exc}",
                                hint=f"tfrebuild keeps its state beside the environment; check {self.state}.") from exc
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise UserError(f"{current} in the tfrebuild state folder is a symbolic link or a file",
                                hint="tfrebuild never writes through links in its state folder; someone replaced "
                                f"that folder. Remove {current} (after checking what it points at).", exit_code=1)
        return path

    # ---- opening
    @classmethod
    def open(cls, env: Path) -> Store | None:
        """The store of ``env``, or ``None`` when tfrebuild does not manage it."""
        env = env_path(env)
        _migrate_legacy(env)
        state = state_dir(env)
        if os.path.islink(state):
            raise UserError(f"The tfrebuild state folder {state} is a symbolic link",
                            hint="tfrebuild never follows links in its state folder. Remove the link; if it "
                            "pointed at this environment's real state folder, move that folder here.", exit_code=1)
        store_file = state / "store.toml"
        if not store_file.is_file():
            return None
        store = cls(env, {})
        store.reload()
        return store

    def reload(self) -> None:
        """Re-read ``store.toml`` (done automatically when the lock is taken)."""
        if not self.store_file.is_file():
            return
        data = read_toml(self.store_file, "state file")
        schema = data.get("schema", 0)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise UserError(
                f"{self.store_file} was written by a newer tfrebuild (schema {schema})",
                hint="Upgrade tfrebuild to manage this environment.",
            )
        if not isinstance(data.get("current"), int):
            raise UserError(f"The tfrebuild state file {self.store_file} has no current generation",
                            hint="Restore it from a backup, or move the state folder away.")
        self._check_owner(data)
        self._data = data

    def _check_owner(self, data: Mapping[str, Any]) -> None:
        """The state folder is this env's: ``store.toml`` records its path (and its parent folder's inode)."""
        recorded = data.get("env")
        if not isinstance(recorded, str) or not recorded:
            raise UserError(f"The tfrebuild state file {self.store_file} does not say which environment it belongs to",
                            hint=f"Restore it from a backup, or move {self.state} away to stop managing {self.env}.",
                            exit_code=1)
        if os.path.realpath(recorded) != str(self.env):
            raise UserError(
                f"The tfrebuild state folder {self.state} belongs to {recorded}, not to {self.env}: tfrebuild "
                "will not read or change another environment's generations",
                hint=f"If {recorded} was moved to {self.env}, move it back; otherwise move {self.state} away "
                f"(it holds {recorded}'s generations) and tfrebuild adopts {self.env} afresh.", exit_code=1)
        parent = (data.get("parent_device"), data.get("parent_inode"))
        if None in parent or _parent_key(self.env) in (None, tuple(int(v) for v in parent)):
            return
        # Same path, another parent folder (copied or restored): only if the env is not the recorded tree either.
        cur = self.generations_dir / str(int(data["current"])) / "meta.toml"
        try:
            meta = read_toml(cur, "generation record")
            recorded_key = (int(meta.get("device", 0)), int(meta.get("inode", 0)))
        except (UserError, OSError, ValueError, TypeError):
            recorded_key = None
        if key_or_none(self.env) != recorded_key:
            raise UserError(
                f"The tfrebuild state folder {self.state} was made for another folder at the path {self.env} "
                "(it was copied or restored here, and the environment is not the one it recorded)",
                hint=f"Move {self.state} away and tfrebuild adopts {self.env} afresh.", exit_code=1)

    @classmethod
    def unmanaged(cls, env: Path) -> Store:
        """A store object for an env tfrebuild does not manage yet: it can be locked, then :meth:`adopt` it."""
        return cls(abs_path(env), {})

    @property
    def managed(self) -> bool:
        return self.store_file.is_file()

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
            if os.path.islink(state):
                raise UserError(f"Cannot create the tfrebuild state folder {state}: something else is there",
                                hint="Move it away and try again.")
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
                self.make_dir(folder)
            base = asdict(first) if isinstance(first, Generation) else dict(first or {})
            base.setdefault("created", now_iso())
            base.setdefault("command", "adopted")
            base.update(number=1, inode=st.st_ino, device=st.st_dev)
            gen = Generation.from_dict(base)
            self.make_dir(self.generation_dir(1))
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
        data = read_toml(path, "generation record")
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
        folder = self.make_dir(self.generation_dir(gen.number))
        _write_file(folder / "meta.toml", tomli_w.dumps(gen.to_dict()).encode())

    def write_state(self, current: int, previous: int | None) -> None:
        """Atomically write ``store.toml`` with the given current/previous generations."""
        data: dict[str, Any] = {"schema": SCHEMA, "env": str(self.env), "current": int(current)}
        if previous is not None:
            data["previous"] = int(previous)
        parent = _parent_key(self.env)
        if parent is not None:  # the owner: checked on open with the path (see _check_owner)
            data["parent_device"], data["parent_inode"] = toml_int(parent[0]), toml_int(parent[1])
        _write_file(self.store_file, tomli_w.dumps(data).encode())
        self._data = data

    def check_current(self) -> os.stat_result:
        """``lstat`` of ``E``; :class:`UserError` unless it is the tree recorded as current."""
        st = _lstat_env(self.env)
        cur = self.current
        if key(st) != (cur.device, cur.inode):
            raise UserError(
                f"{self.env} is not the environment tfrebuild recorded as generation {cur.number}: "
                "it was replaced or recreated outside tfrebuild",
                hint="tfrebuild will not move a tree it did not record. Move the state folder "
                f"{self.state} away to start over, or re-adopt the environment as it is now.",
            )
        return st

    # ---- staging and logs
    def staging_dir(self, op_id: str) -> Path:
        """``<state>/staging/<op_id>`` (created)."""
        return self.make_dir(self.staging_root / check_id(op_id))

    def discard_staging(self, op_id: str) -> None:
        """Delete ``<state>/staging/<op_id>`` (a failed build)."""
        safe_rmtree(self.staging_root / check_id(op_id), self.state)

    def log_path(self, op_id: str) -> Path:
        """``<state>/logs/<op_id>.log`` (the folder is created; older logs beyond :data:`KEEP_LOGS` are pruned)."""
        self.make_dir(self.logs_dir)
        prune_logs(self.logs_dir, KEEP_LOGS - 1)
        return self.logs_dir / f"{check_id(op_id)}.log"

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

    def has_leftovers(self) -> bool:
        """Whether recovery has anything to look at (reads only): a journal, entries in staging or trash, or a
        current generation without its profile (a kill between the record and the profile)."""
        if os.path.lexists(self.journal_path):
            return True
        if self.managed and not os.path.lexists(self.generation_dir(self.current_number) / "profile.toml"):
            return True
        for folder in (self.staging_root, self.trash_root):
            try:
                with os.scandir(folder) as it:
                    if next(it, None) is not None:
                        return True
            except OSError:
                pass
        return False

    # ---- lock
    @contextmanager
    def lock(self, command: str) -> Iterator[Store]:
        """Hold the store's exclusive lock (non-blocking; re-entrant for this object).

        A second locker gets :class:`UserError` at once, naming the holder's pid and
        command (see :mod:`rebuild.store.lock`).  ``store.toml`` is re-read once it is taken.
        """
        with self._lock.hold(command, on_acquire=self.reload):
            yield self

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.held

    def lock_holder(self) -> dict | None:
        """``{"pid", "command", "started"}`` of a live lock holder, else ``None`` (never waits or locks)."""
        return self._lock.holder()

    def _require_lock(self) -> None:
        if not self._lock.held:
            raise RuntimeError("hold store.lock(...) before changing the store")

    # ---- journal
    def journal(self) -> dict | None:
        """The intent journal of the operation in progress, or ``None``."""
        return self._journal.read()

    def begin(self, op: Mapping[str, Any]) -> dict:
        """Write the journal for a new operation (needs the lock; no journal may exist).

        ``op`` must name ``"op"``; ``id``, ``pid``, ``step`` and ``started`` are filled in.
        """
        self._require_lock()
        self._lock.verify()
        return self._journal.begin(op)

    def update_journal(self, **changes: Any) -> dict:
        """Merge ``changes`` into the journal (atomically)."""
        self._require_lock()
        return self._journal.update(**changes)

    def commit(self) -> None:
        """Remove the journal: the operation is complete (or nothing happened)."""
        self._require_lock()
        self._journal.remove()

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

    def park(self, tree: Path, dest: Path) -> None:
        """Move ``tree`` (the tree the exchange took out of ``E``) to ``dest``, both folders fsync'd."""
        self._free_dest(dest)
        self.make_dir(dest.parent)
        os.rename(tree, dest)
        fs.fsync_dir(tree.parent)
        fs.fsync_dir(dest.parent)

    def env_key(self, *partners: Path) -> tuple[int, int] | None:
        """:func:`~rebuild.store.trees.key` of ``E``, after repairing a fallback exchange with a partner
        that a crash interrupted between its renames (``E`` missing)."""
        found = key_or_none(self.env)
        if found is None:
            for other in partners:
                swap.repair(self.env, other)
            found = key_or_none(self.env)
        return found

    def _staging_of(self, tree: Path) -> Path:
        """``<state>/staging/<id>`` that holds ``tree`` (which must be inside it)."""
        root = self.staging_root
        try:
            rel = tree.relative_to(root)
        except ValueError:
            rel = None
        if rel is None or len(rel.parts) < 2 or not is_inside(tree, root):
            raise UserError(f"{tree} is not inside the staging folder {root}",
                            hint="Build new environments in store.staging_dir(<id>)/env.")
        return root / rel.parts[0]

    def _swap_park_record(self, source: Path, old_dest: Path, st_old: os.stat_result,
                          record: Callable[[], None], *, upgrade: bool) -> None:
        """The steps :meth:`switch_to` and :meth:`rollback_to` share, each journaled, then a fault point.

        swapped: ``exchange(E, source)`` (the method that ran goes to the journal and to
        :attr:`last_swap_method`; if the exchange fails with ``E`` unchanged, the journal is
        removed and the error raised); old-moved: the old tree, now at ``source``, parked at
        ``old_dest``; recorded: ``record()`` writes the TOML files.
        """
        try:
            method = swap.exchange(self.env, source)
        except BaseException:
            if key_or_none(self.env) == key(st_old):
                self.commit()  # nothing changed; the caller still owns its tree
            raise
        self.last_swap_method = method
        self.update_journal(step="swapped", method=method)
        # Each fault point is spelled out: tests/test_generations.py finds them by name.
        fault_point("upgrade.swapped") if upgrade else fault_point("rollback.swapped")
        self.park(source, old_dest)
        self.update_journal(step="old-moved")
        fault_point("upgrade.old-moved") if upgrade else fault_point("rollback.old-moved")
        record()
        self.update_journal(step="recorded")
        fault_point("upgrade.recorded") if upgrade else fault_point("rollback.recorded")

    def _check_new_tree(self, new_tree: Path) -> tuple[Path, os.stat_result]:
        """The staging folder holding ``new_tree``, and its ``lstat``; :class:`UserError` unless it is a directory there."""
        staging = self._staging_of(new_tree)
        st_new = os.lstat(new_tree) if os.path.lexists(new_tree) else None
        if st_new is None or not stat.S_ISDIR(st_new.st_mode):
            raise UserError(f"The new environment {new_tree} is missing or not a directory",
                            hint="The build did not produce it; see the build log.")
        return staging, st_new

    def switch_to(self, new_tree: Path, new_gen: Generation) -> Generation:
        """Make the tree at ``new_tree`` (in staging) the current environment at ``E``.

        Steps (each followed by a fault point ``upgrade.<step>``): journal-written,
        swapped (``exchange(E, new_tree)``), old-moved (old tree to
        ``generations/<old>/env``), recorded (meta + store.toml); then the staging
        folder and the journal are removed.  Returns the recorded generation; the
        exchange method that ran is in :attr:`last_swap_method`.

        A journal this process began for the build (``begin({"op": "upgrade", ...})``)
        is taken over.  If the exchange itself fails, nothing changed: the journal is
        removed and the staging tree is left for the caller to discard.
        """
        with self.lock(f"tfrebuild upgrade to generation {new_gen.number}"):
            new_tree = abs_path(new_tree)
            staging, st_new = self._check_new_tree(new_tree)
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

            def record() -> None:
                self.write_meta(gen)
                self.write_state(number, old.number)

            with signals.deferred():  # a signal after the exchange waits for the bookkeeping
                self._swap_park_record(new_tree, old_dest, st_old, record, upgrade=True)
                self._changed(number, new_gen.tensorflow, old.number)
                safe_rmtree(staging, self.state)
                self.commit()
            return gen

    def _changed(self, number: int, tensorflow: str, other: int) -> None:
        """Tell the CLI (for an interrupt) which generation ``E`` is on now and the way back."""
        what = f" ({tensorflow})" if tensorflow else ""
        signals.changed(str(self.env), f"{self.env} is now on generation {number}{what}; `tfrebuild rollback --env "
                                       f"{self.env} --to {other}` swaps generation {other} back in")

    def _rollback_source(self, n: int) -> tuple[Path, os.stat_result]:
        """Generation ``n``'s parked tree and its ``lstat`` (its meta is re-recorded if the inode moved)."""
        target = self.generation(n)
        source = self.generation_dir(n) / "env"
        try:
            st_src = os.lstat(source)
        except FileNotFoundError:
            raise UserError(f"Generation {n} has no environment tree any more (it was deleted)",
                            hint="Pick another generation, see the history.") from None
        if not stat.S_ISDIR(st_src.st_mode):
            raise UserError(f"{source} is not a directory", hint="The state folder was changed by hand.")
        if key(st_src) != (target.device, target.inode):
            self.write_meta(replace(target, inode=st_src.st_ino, device=st_src.st_dev))
        return source, st_src

    def rollback_to(self, n: int | None = None) -> Generation:
        """Make generation ``n`` (default: the previous one) current again.

        The generation rolled away from becomes ``previous``, so a second plain
        rollback undoes the first (like ``cd -``).  Fault points ``rollback.<step>``
        as in :meth:`switch_to`.  Returns the now-current generation; the exchange
        method that ran is in :attr:`last_swap_method`.
        """
        with self.lock(f"tfrebuild rollback to generation {n if n is not None else 'previous'}"):
            old = self.current
            if n is None:
                if self.previous_number is None:
                    raise UserError(f"{self.env} has no previous generation to roll back to",
                                    hint="Generations are created by upgrades.")
                n = self.previous_number
            if n == old.number:
                raise UserError(f"Generation {n} is already the current environment at {self.env}")
            source, st_src = self._rollback_source(n)
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
            with signals.deferred():  # a signal after the exchange waits for the bookkeeping
                self._swap_park_record(source, old_dest, st_old, lambda: self.write_state(n, old.number),
                                       upgrade=False)
                self._changed(n, self.generation(n).tensorflow, old.number)
                self.commit()
            return self.current

    def delete_generation(self, n: int) -> int:
        """Delete ``generations/<n>`` (never the current or previous one); return bytes freed.

        Symlinks inside are removed as links, never followed; the folder must resolve
        inside the state folder.  Files hard-linked elsewhere are not counted as freed.
        """
        with self.lock(f"tfrebuild gc generation {n}"):
            if n == self.current_number:
                raise UserError(f"Generation {n} is the current environment; it cannot be deleted",
                                hint="Roll back or upgrade first.")
            if n == self.previous_number:
                raise UserError(f"Generation {n} is the previous generation (the rollback target); it is kept",
                                hint="It can be deleted after another upgrade or rollback.")
            folder = self.generation_dir(n)
            if not os.path.lexists(folder):
                raise UserError(f"{self.env} has no generation {n}")
            if os.path.islink(folder) or not is_inside(folder, self.generations_dir):
                raise UserError(f"Refusing to delete {folder}: it points outside {self.state}",
                                hint="Someone replaced it with a link; remove the link by hand.")
            freed = disk.freeable_bytes(folder)
            op_id = new_op_id("gc")
            trash = self.trash_root / op_id
            try:
                self.begin({"op": "gc", "id": op_id, "step": "journal-written", "generation": n, "trash": str(trash)})
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                self._delete_unjournaled(folder, op_id)  # gc is the remedy for a full disk: it needs no space
                return freed
            fault_point("gc.journal-written")
            self.make_dir(self.trash_root)
            os.rename(folder, trash)
            fs.fsync_dir(self.generations_dir)
            self.update_journal(step="moved")
            fault_point("gc.moved")
            safe_rmtree(trash, self.state)
            self.commit()
            return freed

    def _delete_unjournaled(self, folder: Path, op_id: str) -> None:
        """Delete a generation folder without a journal (a full disk cannot take one).

        It is renamed into ``staging/<op_id>`` first (an existing folder: no new block needed),
        then deleted; a crash in between leaves a staging folder no journal names, which the
        next command's recovery removes like any leftover build.
        """
        dest = self.staging_root / check_id(op_id)
        os.rename(folder, dest)
        fs.fsync_dir(self.generations_dir)
        safe_rmtree(dest, self.state)

    # ---- recovery
    def recover(self, finished: Callable[[Store], None] | None = None) -> str | None:
        """Finish or undo an interrupted operation and remove leftovers; see :func:`rebuild.store.recovery.recover`."""
        from rebuild.store import recovery

        return recovery.recover(self, finished=finished)
