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
        swapped = store.switch_to(tree, Generation.new(store.next_number(), command=...))
        swapped.method                        # "renameat2" or "rename": what the exchange ran
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, overload

import tomli_w

from rebuild.errors import UserError
from rebuild.store.journal import Journal, check_id, now_iso
from rebuild.store.lock import Lock, pid_alive
from rebuild.store.records import Generation, read_toml, toml_int
from rebuild.store import trust
from rebuild.store.trees import abs_path, key, key_or_none, lstat_dir, safe_rmtree, venv_stamp
from rebuild.util import fs
from rebuild.store.location import _migrate_legacy, _parent_key, env_path, state_dir
from rebuild.store.logs import KEEP_LOGS, prune_logs
from rebuild.store.operations import Operations

SCHEMA = 1


def _write_file(path: Path, data: bytes) -> None:
    """Store files are written whole, mode 0644 (see :func:`rebuild.util.fs.atomic_write`)."""
    fs.atomic_write(path, data, mode=0o644)


def _lstat_env(env: Path) -> os.stat_result:
    return lstat_dir(
        env,
        missing=(f"The environment {env} does not exist", "Check the path (or --env)."),
        link=(f"{env} is a symbolic link", "tfrebuild manages real directories. Use the real path"),
        not_dir=(f"{env} is not a directory", "Point tfrebuild at an environment folder."),
    )


# --------------------------------------------------------------------------- the store


class _folder:  # lower case: used like the property it replaces
    """A folder of the state folder, as a read-only attribute of the :class:`Store`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__doc__ = f"``<state>/{name}``"

    @overload
    def __get__(self, store: None, owner: type | None = None) -> _folder: ...
    @overload
    def __get__(self, store: Store, owner: type | None = None) -> Path: ...

    def __get__(self, store: Store | None, owner: type | None = None) -> Path | _folder:
        return self if store is None else store.state / self.name

    def __set__(self, store: Store, value: Path) -> None:
        raise AttributeError(f"<state>/{self.name} is a read-only attribute of the Store")


class Store(Operations):
    """The generation store of the environment at ``env`` (see the module docstring)."""

    def __init__(self, env: Path, data: dict[str, Any]):
        self.env = env_path(env)
        self.state = state_dir(self.env)
        self._data = dict(data)
        self._lock = Lock(self.state / "lock", self.env)
        self._journal = Journal(self.state / "journal.json", self.env)

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
                if part:
                    os.mkdir(current, 0o755)  # never writable by others, whatever the umask
                else:
                    trust.make_state_dir(current, self.env)
            except FileExistsError:
                pass
            except OSError as exc:
                raise UserError(
                    f"Cannot create {current}: {exc.strerror or exc}",
                    hint=f"tfrebuild keeps its state beside the environment; check {self.state}.",
                ) from exc
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise UserError(
                    f"{current} in the tfrebuild state folder is a symbolic link or a file",
                    hint="tfrebuild never writes through links in its state folder; someone replaced "
                    f"that folder. Remove {current} (after checking what it points at).",
                    exit_code=1,
                )
        return path

    # ---- opening
    @classmethod
    def open(cls, env: Path) -> Store | None:
        """The store of ``env``, or ``None`` when tfrebuild does not manage it."""
        env = env_path(env)
        _migrate_legacy(env)
        state = state_dir(env)
        if os.path.islink(state):
            raise UserError(
                f"The tfrebuild state folder {state} is a symbolic link",
                hint="tfrebuild never follows links in its state folder. Remove the link; if it "
                "pointed at this environment's real state folder, move that folder here.",
                exit_code=1,
            )
        trust.check_state(state, env)  # before anything in it is read: the user's (or the env owner's) only
        store_file = state / "store.toml"
        if not store_file.is_file():
            if os.path.lexists(state) and not trust.created_here(state):
                raise trust.not_created_error(state)
            return None
        store = cls(env, {})
        store.reload()
        return store

    def reload(self) -> None:
        """Re-read ``store.toml`` (done automatically when the lock is taken)."""
        trust.check_state(self.state, self.env)  # again under the lock: what is read is what was checked
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
            raise UserError(
                f"The tfrebuild state file {self.store_file} has no current generation",
                hint="Restore it from a backup, or move the state folder away.",
            )
        self._check_owner(data)
        self._data = data

    def _check_owner(self, data: Mapping[str, Any]) -> None:
        """The state folder is this env's: ``store.toml`` records its path (and its parent folder's inode)."""
        recorded = data.get("env")
        if not isinstance(recorded, str) or not recorded:
            raise UserError(
                f"The tfrebuild state file {self.store_file} does not say which environment it belongs to",
                hint=f"Restore it from a backup, or move {self.state} away to stop managing {self.env}.",
                exit_code=1,
            )
        if os.path.realpath(recorded) != str(self.env):
            raise UserError(
                f"The tfrebuild state folder {self.state} belongs to {recorded}, not to {self.env}: tfrebuild "
                "will not read or change another environment's generations",
                hint=f"If {recorded} was moved to {self.env}, move it back; otherwise move {self.state} away "
                f"(it holds {recorded}'s generations) and tfrebuild adopts {self.env} afresh.",
                exit_code=1,
            )
        device, inode = data.get("parent_device"), data.get("parent_inode")
        if device is None or inode is None or _parent_key(self.env) in (None, (int(device), int(inode))):
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
                hint=f"Move {self.state} away and tfrebuild adopts {self.env} afresh.",
                exit_code=1,
            )

    @classmethod
    def unmanaged(cls, env: Path) -> Store:
        """A store object for an env tfrebuild does not manage yet: it can be locked, then :meth:`adopt` it.

        A state folder already there must be trusted and made by tfrebuild (:mod:`rebuild.store.trust`)."""
        store = cls(abs_path(env), {})
        if os.path.lexists(store.state):
            trust.check_state(store.state, store.env)
            if not trust.created_here(store.state):
                raise trust.not_created_error(store.state)
        return store

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
            raise UserError(
                f"Cannot create the tfrebuild state folder {state}: something else is there",
                hint="Move it away and try again.",
            )
        if self.managed:
            raise UserError(f"{env} is already managed by tfrebuild", hint=f"Its state lives in {state}.")
        try:
            trust.make_state_dir(state, env)  # one there already: trusted and made by tfrebuild, else refused
        except PermissionError as exc:
            raise UserError(
                f"Cannot create {state}: permission denied",
                hint=f"tfrebuild keeps its state beside the environment; you need write access to {env.parent}.",
            ) from exc
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
            base.update(number=1, inode=st.st_ino, device=st.st_dev, venv=venv_stamp(env))
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
        """All recorded generations, oldest first (folders without ``meta.toml`` are skipped; those whose record
        cannot be read are left to :meth:`unreadable`, which says why)."""
        result = []
        try:
            entries = list(os.scandir(self.generations_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.isdigit() and os.path.isfile(os.path.join(entry.path, "meta.toml")):
                try:
                    result.append(self._load_meta(int(entry.name)))
                except UserError:
                    continue  # damaged: reported by unreadable()
        return sorted(result, key=lambda g: g.number)

    def unreadable(self) -> dict[int, str]:
        """Generation folders whose record this user cannot read or that is damaged: number -> why, naming whose
        the folder is (a generation is never reported as missing, nor left out silently, when it is there)."""
        found: dict[int, str] = {}
        try:
            entries = [e for e in os.scandir(self.generations_dir) if e.name.isdigit()]
        except OSError:
            return found
        for entry in entries:
            n, meta = int(entry.name), Path(entry.path) / "meta.toml"
            try:
                owner = trust._user(os.lstat(entry.path).st_uid)
            except OSError:
                owner = "unknown"
            try:
                if not os.path.lexists(meta) and os.access(entry.path, os.R_OK | os.X_OK):
                    continue  # a folder without a record (being made): no generation
                self._load_meta(n)
            except PermissionError as exc:
                found[n] = f"permission denied on {exc.filename or meta} (the folder belongs to {owner})"
            except OSError as exc:
                found[n] = f"{exc.strerror or exc} (the folder belongs to {owner})"
            except UserError as exc:
                found[n] = f"{exc.message} (the folder belongs to {owner})"
        return found

    def generation(self, n: int) -> Generation:
        """Generation ``n``; :class:`UserError` if there is none."""
        bad = self.unreadable().get(n) if os.path.lexists(self.generation_dir(n)) else None
        if bad:
            raise UserError(
                f"Generation {n} of {self.env} cannot be read: {bad}",
                hint="Run tfrebuild as the user who owns the environment, or repair that generation's "
                f"folder ({self.generation_dir(n)}); the other generations are not affected.",
                exit_code=1,
            )
        if not (self.generation_dir(n) / "meta.toml").is_file():
            have = ", ".join(str(g.number) for g in self.generations()) or "none"
            raise UserError(f"{self.env} has no generation {n}", hint=f"Existing generations: {have}.")
        return self._load_meta(n)

    def _load_meta(self, n: int) -> Generation:
        path = self.generation_dir(n) / "meta.toml"
        try:
            data = read_toml(path, "generation record")
        except PermissionError as exc:
            raise UserError(
                f"The tfrebuild generation record {path} cannot be read: permission denied",
                hint="Run tfrebuild as the user who owns the environment.",
                exit_code=1,
            ) from exc
        data["number"] = n
        try:
            gen = Generation.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"The tfrebuild generation record {path} is damaged: {exc}",
                hint="Restore it from a backup, or delete that generation's folder by hand.",
            ) from exc
        for name in ("created", "command", "tensorflow", "python", "note"):
            if not isinstance(getattr(gen, name), str):
                raise UserError(
                    f"The tfrebuild generation record {path} is damaged: {name} is not a string",
                    hint="Restore it from a backup, or delete that generation's folder by hand.",
                )
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
                hint="tfrebuild will not move a tree it did not record. `tfrebuild upgrade` and `tfrebuild rollback` "
                "first adopt the environment as it is now as a new generation (every kept generation stays).",
            )
        return st

    def refuse_tampered_current(self) -> None:
        """:class:`UserError` when the tree at ``E`` is the recorded tree of a generation other than the current
        one: ``store.toml`` was changed, not the env (the tree outranks the store; nothing is recorded as an env
        made outside tfrebuild, deleted or swapped on such a state file)."""
        found = key_or_none(self.env)
        cur = self.current  # a current generation with no record is refused here too
        if found is None or found == (cur.device, cur.inode):
            return
        for gen in self.generations():
            if gen.number != cur.number and (gen.device, gen.inode) == found:
                raise UserError(
                    f"{self.env} is generation {gen.number}'s tree, but {self.store_file} names generation "
                    f"{cur.number} as current: the state file was changed, not the environment. Nothing was changed.",
                    hint=f"tfrebuild deletes, swaps and records nothing while its state file disagrees with the tree. "
                    f"Set `current = {gen.number}` in {self.store_file} again (or restore it from a backup).",
                    exit_code=1,
                )

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
        if os.path.lexists(self.journal_path) or os.path.lexists(self.state / "project-pending"):
            return True  # (the second: project files to write after a swap, rebuild.project.files.finish)
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

    def lock_holder(self) -> dict[str, Any] | None:
        """``{"pid", "command", "started"}`` of a live lock holder, else ``None`` (never waits or locks)."""
        return self._lock.holder()

    def _require_lock(self) -> None:
        if not self._lock.held:
            raise RuntimeError("hold store.lock(...) before changing the store")

    # ---- journal
    def journal(self) -> dict[str, Any] | None:
        """The intent journal of the operation in progress, or ``None``."""
        return self._journal.read()

    def set_aside_journal(self) -> Path:
        """Rename a damaged journal to ``journal.json.damaged`` (kept for inspection); the new path."""
        return self._journal.set_aside()

    def begin(self, op: Mapping[str, Any]) -> dict[str, Any]:
        """Write the journal for a new operation (needs the lock; no journal may exist).

        ``op`` must name ``"op"``; ``id``, ``pid``, ``step`` and ``started`` are filled in.
        """
        self._require_lock()
        self._lock.verify()
        return self._journal.begin(op)

    def update_journal(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the journal (atomically)."""
        self._require_lock()
        return self._journal.update(**changes)

    def commit(self) -> None:
        """Remove the journal: the operation is complete (or nothing happened)."""
        self._require_lock()
        self._journal.remove()

    # ---- operations

    # ---- recovery
    def recover(self, finished: Callable[[Store], None] | None = None) -> str | None:
        """Finish or undo an interrupted operation and remove leftovers; see :func:`rebuild.store.recovery.recover`."""
        from rebuild.store import recovery

        return recovery.recover(self, finished=finished)
