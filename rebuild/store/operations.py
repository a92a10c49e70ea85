"""The store's changes of the env path: switch to a new tree, roll back to a kept generation, delete one.

Each is journaled, fault-pointed and recorded; :class:`~rebuild.store.store.Store` inherits them.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Mapping


from rebuild.errors import UserError
from rebuild.store import disk, swap
from rebuild.store.faults import fault_point
from rebuild.store.journal import check_id, new_op_id
from rebuild.store.records import Generation
from rebuild.store.trees import abs_path, is_inside, key, key_or_none, lstat_dir, safe_rmtree, venv_stamp
from rebuild.util import fs, signals


@dataclass(frozen=True)
class Swapped:
    """What :meth:`Operations.switch_to` and :meth:`Operations.rollback_to` did: the generation now current, and
    the exchange that actually ran (``"renameat2"`` or ``"rename"``), for callers to report."""

    generation: Generation
    method: str


class Operations:
    """The operations of :class:`~rebuild.store.store.Store` that exchange, park or delete trees."""

    if TYPE_CHECKING:  # what they use of the Store that inherits them (store.py defines each)
        env: Path
        state: Path
        generations_dir: Path
        staging_root: Path
        trash_root: Path

        @property
        def current_number(self) -> int: ...
        @property
        def previous_number(self) -> int | None: ...
        @property
        def current(self) -> Generation: ...
        def generation_dir(self, n: int) -> Path: ...
        def make_dir(self, path: Path) -> Path: ...
        def generation(self, n: int) -> Generation: ...
        def next_number(self) -> int: ...
        def write_meta(self, gen: Generation) -> None: ...
        def write_state(self, current: int, previous: int | None) -> None: ...
        def check_current(self) -> os.stat_result: ...
        def lock(self, command: str) -> AbstractContextManager[Any]: ...
        def journal(self) -> dict[str, Any] | None: ...
        def begin(self, op: Mapping[str, Any]) -> dict[str, Any]: ...
        def update_journal(self, **changes: Any) -> dict[str, Any]: ...
        def commit(self) -> None: ...

    def _free_dest(self, dest: Path) -> None:
        """Make sure ``dest`` (where an old tree will be parked) is free."""
        if not os.path.lexists(dest):
            return
        if dest.is_dir() and not dest.is_symlink() and not any(os.scandir(dest)):
            os.rmdir(dest)
            return
        raise UserError(
            f"Cannot park the old environment at {dest}: something is already there",
            hint="The tfrebuild state folder is inconsistent; inspect that folder by hand.",
        )

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
            raise UserError(
                f"{tree} is not inside the staging folder {root}",
                hint="Build new environments in store.staging_dir(<id>)/env.",
            )
        return root / rel.parts[0]

    def _swap_park_record(
        self, source: Path, old_dest: Path, st_old: os.stat_result, record: Callable[[], None], *, upgrade: bool
    ) -> str:
        """The steps :meth:`switch_to` and :meth:`rollback_to` share, each journaled, then a fault point.

        swapped: ``exchange(E, source)`` (the method that ran goes to the journal and is returned;
        if the exchange fails with ``E`` unchanged, the journal is
        removed and the error raised); old-moved: the old tree, now at ``source``, parked at
        ``old_dest``; recorded: ``record()`` writes the TOML files.
        """
        self._refuse_links(source)  # nothing moves through a link, ever: checked right before the exchange
        try:
            method = swap.exchange(self.env, source)
        except BaseException:
            if key_or_none(self.env) == key(st_old):
                self.commit()  # nothing changed; the caller still owns its tree
            raise
        self.update_journal(step="swapped", method=method)
        # Each fault point is spelled out: tests/test_generations.py finds them by name.
        fault_point("upgrade.swapped") if upgrade else fault_point("rollback.swapped")
        self.park(source, old_dest)
        self.update_journal(step="old-moved")
        fault_point("upgrade.old-moved") if upgrade else fault_point("rollback.old-moved")
        record()
        self.update_journal(step="recorded")
        fault_point("upgrade.recorded") if upgrade else fault_point("rollback.recorded")
        return method

    def _refuse_links(self, tree: Path) -> None:
        """:class:`UserError` unless ``tree`` and every folder from the state folder down to it are real folders
        (``lstat``): a ``generations`` or ``staging`` folder replaced by a link would exchange trees outside."""
        folder = self.state
        for part in ("",) + abs_path(tree).relative_to(self.state).parts:  # lexical: links are not resolved
            folder = folder / part if part else folder
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise UserError(
                    f"{folder} in the tfrebuild state folder is a symbolic link or not a folder: nothing was exchanged",
                    hint=f"tfrebuild never moves a tree through a link. Check what it "
                    f"points at and put the real folder back in {self.state}.",
                    exit_code=1,
                )

    def _check_new_tree(self, new_tree: Path) -> tuple[Path, os.stat_result]:
        """The staging folder holding ``new_tree``, and its ``lstat``; :class:`UserError` unless it is a directory there."""
        staging = self._staging_of(new_tree)
        st_new = os.lstat(new_tree) if os.path.lexists(new_tree) else None
        if st_new is None or not stat.S_ISDIR(st_new.st_mode):
            raise UserError(
                f"The new environment {new_tree} is missing or not a directory",
                hint="The build did not produce it; see the build log.",
            )
        return staging, st_new

    def switch_to(self, new_tree: Path, new_gen: Generation) -> Swapped:
        """Make the tree at ``new_tree`` (in staging) the current environment at ``E``.

        Steps (each followed by a fault point ``upgrade.<step>``): journal-written,
        swapped (``exchange(E, new_tree)``), old-moved (old tree to
        ``generations/<old>/env``), recorded (meta + store.toml); then the staging
        folder and the journal are removed.  Returns the recorded generation and the
        exchange method that ran (:class:`Swapped`).

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
                raise UserError(
                    f"Generation {number} already exists for {self.env}",
                    hint=f"Use store.next_number() ({self.next_number()}).",
                )
            if not swap.same_filesystem(self.env, new_tree):
                raise swap.cross_device_error(self.env, new_tree)
            old_dest = self.generation_dir(old.number) / "env"
            self._free_dest(old_dest)
            gen = replace(new_gen, inode=st_new.st_ino, device=st_new.st_dev, venv=venv_stamp(new_tree))
            fields_ = {
                "op": "upgrade",
                "id": staging.name,
                "step": "journal-written",
                "pid": os.getpid(),
                "new": number,
                "old": old.number,
                "previous": self.previous_number,
                "staging": str(staging),
                "new_tree": str(new_tree),
                "old_dest": str(old_dest),
                "new_inode": st_new.st_ino,
                "new_device": st_new.st_dev,
                "old_inode": st_old.st_ino,
                "old_device": st_old.st_dev,
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
                method = self._swap_park_record(new_tree, old_dest, st_old, record, upgrade=True)
                self._changed(number, new_gen.tensorflow, old.number)
                safe_rmtree(staging, self.state)
                self.commit()
            return Swapped(gen, method)

    def _changed(self, number: int, tensorflow: str, other: int) -> None:
        """Tell the CLI (for an interrupt) which generation ``E`` is on now and the way back."""
        what = f" ({tensorflow})" if tensorflow else ""
        signals.changed(
            str(self.env),
            f"{self.env} is now on generation {number}{what}; `tfrebuild rollback --env "
            f"{self.env} --to {other}` swaps generation {other} back in",
        )

    def _rollback_source(self, n: int) -> tuple[Path, os.stat_result]:
        """Generation ``n``'s parked tree and its ``lstat`` (its meta is re-recorded if the inode or venv stamp moved)."""
        target = self.generation(n)
        source = self.generation_dir(n) / "env"
        st_src = lstat_dir(
            source,
            missing=(
                f"Generation {n} has no environment tree any more (it was deleted)",
                "Pick another generation, see the history.",
            ),
            not_dir=(f"{source} is not a directory", "The state folder was changed by hand."),
        )
        stamp = venv_stamp(source)
        if key(st_src) != (target.device, target.inode) or stamp != target.venv:
            self.write_meta(replace(target, inode=st_src.st_ino, device=st_src.st_dev, venv=stamp))
        return source, st_src

    def rollback_to(self, n: int | None = None) -> Swapped:
        """Make generation ``n`` (default: the previous one) current again.

        The generation rolled away from becomes ``previous``, so a second plain
        rollback undoes the first (like ``cd -``).  Fault points ``rollback.<step>``
        as in :meth:`switch_to`.  Returns the now-current generation and the exchange
        method that ran (:class:`Swapped`).
        """
        with self.lock(f"tfrebuild rollback to generation {n if n is not None else 'previous'}"):
            old = self.current
            if n is None:
                if self.previous_number is None:
                    raise UserError(
                        f"{self.env} has no previous generation to roll back to",
                        hint="Generations are created by upgrades.",
                    )
                n = self.previous_number
            if n == old.number:
                raise UserError(f"Generation {n} is already the current environment at {self.env}")
            st_old = self.check_current()  # the store agrees with the tree at E before anything is written
            source, st_src = self._rollback_source(n)
            old_dest = self.generation_dir(old.number) / "env"
            self._free_dest(old_dest)
            self.begin(
                {
                    "op": "rollback",
                    "id": new_op_id("rollback"),
                    "step": "journal-written",
                    "from": old.number,
                    "to": n,
                    "previous": self.previous_number,
                    "source": str(source),
                    "old_dest": str(old_dest),
                    "new_inode": st_src.st_ino,
                    "new_device": st_src.st_dev,
                    "old_inode": st_old.st_ino,
                    "old_device": st_old.st_dev,
                }
            )
            fault_point("rollback.journal-written")
            with signals.deferred():  # a signal after the exchange waits for the bookkeeping
                method = self._swap_park_record(
                    source, old_dest, st_old, lambda: self.write_state(n, old.number), upgrade=False
                )
                self._changed(n, self.generation(n).tensorflow, old.number)
                self.commit()
            return Swapped(self.current, method)

    def delete_generation(self, n: int) -> int:
        """Delete ``generations/<n>`` (never the current or previous one); return bytes freed.

        Symlinks inside are removed as links, never followed; the folder must resolve
        inside the state folder.  Files hard-linked elsewhere are not counted as freed.
        """
        with self.lock(f"tfrebuild gc generation {n}"):
            self.check_current()  # the store must agree with the tree at E before anything is deleted
            if n == self.current_number:
                raise UserError(
                    f"Generation {n} is the current environment; it cannot be deleted",
                    hint="Roll back or upgrade first.",
                )
            if n == self.previous_number:
                raise UserError(
                    f"Generation {n} is the previous generation (the rollback target); it is kept",
                    hint="It can be deleted after another upgrade or rollback.",
                )
            folder = self.generation_dir(n)
            if not os.path.lexists(folder):
                raise UserError(f"{self.env} has no generation {n}")
            if os.path.islink(folder) or not is_inside(folder, self.generations_dir):
                raise UserError(
                    f"Refusing to delete {folder}: it points outside {self.state}",
                    hint="Someone replaced it with a link; remove the link by hand.",
                )
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
