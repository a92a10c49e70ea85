"""Finishing or undoing an interrupted operation: the one home of recovery.

Recovery runs under the store's lock, so any journal it finds is stale: its process
died, or it is this process's own from a failed call.  The tree at ``E`` is identified
by inode (see :mod:`rebuild.store.store`): if it is the operation's new tree the
operation is finished, if it is the old one the operation is undone.  Every journaled
operation is handled here: ``upgrade`` (also ``apply``'s, which journals as an upgrade),
``rollback``, ``gc``, and ``apply`` into a new path (``apply_new_env``, before the state
folder is managed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from rebuild.errors import UserError
from rebuild.store.store import Generation, Store
from rebuild.store.trees import abs_path, key_or_none, safe_rmtree


def recover(store: Store, *, finished: Callable[[Store], None] | None = None) -> str | None:
    """Finish or undo an interrupted operation and remove leftovers; returns what was done, or ``None``.

    Takes the lock (re-entrant).  ``finished(store)`` runs after anything was done, for
    what the store cannot do itself (``rebuild.commands.generations`` writes a missing profile).
    """
    with store.lock("tfrebuild recover"):
        done = _recover_managed(store) if store.managed else _recover_new_env(store)
        if done and finished is not None:
            finished(store)
        return done


def recover_if_idle(store: Store, *, finished: Callable[[Store], None] | None = None) -> str | None:
    """:func:`recover`, unless another tfrebuild is running (then leave it): ``None`` then, or on any error
    (a filesystem that cannot be written included)."""
    if store.lock_holder() is not None or not store.has_leftovers():
        return None  # nothing to do: a reader never opens the lock for writing
    try:
        return recover(store, finished=finished)
    except (UserError, OSError):  # e.g. a read-only or full filesystem: report, do not repair
        return None


def _recover_managed(store: Store) -> str | None:
    done: list[str] = []
    journal = store.journal()
    if journal is not None:
        op = journal.get("op")
        if op == "upgrade":
            done.append(_recover_upgrade(store, journal))
        elif op == "rollback":
            done.append(_recover_rollback(store, journal))
        elif op == "gc":
            done.append(_recover_gc(store, journal))
        else:
            raise UserError(f"Unknown operation {op!r} in {store.journal_path}",
                            hint="It was written by another tfrebuild version; check the environment and delete the journal.")
    for path in store.leftover_staging():
        safe_rmtree(path, store.state)
        done.append(f"removed leftover staging folder {path}")
    if store.trash_root.is_dir():
        for entry in os.scandir(store.trash_root):
            safe_rmtree(Path(entry.path), store.state)
            done.append(f"removed leftover {entry.path}")
    return "; ".join(done) or None


def _owned(store: Store, value: Any, root: Path) -> Path | None:
    """``value`` from the journal as a path, only if it is a direct child of ``root``."""
    if not value:
        return None
    path = abs_path(value)
    if path.parent != root:
        raise UserError(f"The journal {store.journal_path} names {path}, outside {root}",
                        hint="It was edited or damaged; check the environment and delete the journal.")
    return path


def _settle(store: Store, j: dict, tree: Path, old_dest: Path, *, finish: Callable[[], str],
            undo: Callable[[], str], what: str, neither: str) -> str:
    """The end of an interrupted exchange of ``E`` with ``tree`` (an upgrade's or a rollback's).

    ``E`` holds the new tree: the old one (left at ``tree``) is parked at ``old_dest`` if
    it is not yet, then ``finish()`` records the result.  ``E`` holds the old tree:
    ``undo()`` tidies up.  Either way the journal is removed; anything else is refused.
    """
    new_key = (j["new_device"], j["new_inode"])
    old_key = (j["old_device"], j["old_inode"])
    env_key = store.env_key(tree)
    if env_key == new_key:
        if key_or_none(tree) == old_key:
            store.park(tree, old_dest)
        done = finish()
    elif env_key == old_key:
        done = undo()
    else:
        raise UserError(
            f"Cannot recover the interrupted {what} of {store.env}: it holds neither {neither}",
            hint=f"Inspect {store.env} and {store.state} by hand, then delete {store.journal_path}.",
        )
    store.commit()
    return done


def _drop_unfinished(store: Store, staging: Path | None, number: Any) -> None:
    """Remove an upgrade's staging folder and the generation folder it had begun (no ``meta.toml`` yet)."""
    if staging is not None:
        safe_rmtree(staging, store.state)
    if isinstance(number, int) and number not in (store.current_number, store.previous_number):
        folder = store.generation_dir(number)
        if folder.is_dir() and not (folder / "meta.toml").exists():
            safe_rmtree(folder, store.state)


def _recover_upgrade(store: Store, j: dict) -> str:
    staging = _owned(store, j.get("staging"), store.staging_root)
    if "new_inode" not in j:  # interrupted while building or checking: nothing was swapped
        _drop_unfinished(store, staging, j.get("new"))
        store.commit()
        return f"rolled back interrupted upgrade: removed staging {staging}"
    number, old_number = int(j["new"]), int(j["old"])
    new_tree = abs_path(j["new_tree"])
    if staging is None or staging not in new_tree.parents:
        raise UserError(f"The journal {store.journal_path} names a new tree outside staging: {new_tree}",
                        hint="It was edited or damaged; check the environment and delete the journal.")

    def finish() -> str:
        store.write_meta(Generation.from_dict({**j["generation"], "inode": j["new_inode"], "device": j["new_device"]}))
        store.write_state(number, old_number)
        safe_rmtree(staging, store.state)
        return f"finished interrupted upgrade to generation {number}"

    def undo() -> str:
        _drop_unfinished(store, staging, number)
        return f"rolled back interrupted upgrade to generation {number}: removed staging {staging}"

    return _settle(store, j, new_tree, store.generation_dir(old_number) / "env", finish=finish, undo=undo,
                   what="upgrade", neither="the old nor the new environment")


def _recover_rollback(store: Store, j: dict) -> str:
    to, frm = int(j["to"]), int(j["from"])

    def finish() -> str:
        store.write_state(to, frm)
        return f"finished interrupted rollback to generation {to}"

    def undo() -> str:
        return f"undid interrupted rollback to generation {to}: generation {frm} is still current"

    return _settle(store, j, store.generation_dir(to) / "env", store.generation_dir(frm) / "env",
                   finish=finish, undo=undo, what="rollback", neither=f"generation {frm} nor {to}")


def _recover_gc(store: Store, j: dict) -> str:
    n = int(j["generation"])
    trash = _owned(store, j.get("trash"), store.trash_root)
    folder = store.generation_dir(n)
    if os.path.lexists(folder) and n not in (store.current_number, store.previous_number) \
            and not os.path.islink(folder):
        safe_rmtree(folder, store.state)
    if trash is not None:
        safe_rmtree(trash, store.state)
    store.commit()
    return f"finished interrupted deletion of generation {n}"


def _recover_new_env(store: Store) -> str | None:
    """Finish or undo an ``apply`` into a new path (the state folder is not managed yet).

    If ``E`` is the tree the apply built (``apply_inode``/``apply_device`` in the journal)
    it is adopted as generation 1 with the built lock; the staging folder goes either way.
    """
    journal = store.journal()
    if journal is None:
        leftovers = store.leftover_staging()
        for path in leftovers:
            safe_rmtree(path, store.state)
        return f"removed leftover staging folder(s) {', '.join(map(str, leftovers))}" if leftovers else None
    staging = journal.get("staging")
    built = (journal.get("apply_device"), journal.get("apply_inode"))
    done = "undid an interrupted apply: removed its staging folder"
    if journal.get("apply_new_env") and built[1] is not None and key_or_none(store.env) == built:
        store.adopt(Generation.new(1, command=str(journal.get("command", "tfrebuild apply")),
                                   tensorflow=str(journal.get("tensorflow", "")),
                                   python=str(journal.get("python", ""))))
        built_lock = Path(staging or "") / "pylock.toml"
        if staging and built_lock.is_file():
            shutil.copyfile(built_lock, store.generation_dir(1) / "pylock.toml")
        done = "finished an interrupted apply: adopted the new environment as generation 1"
    if staging and Path(staging).parent == store.staging_root:
        safe_rmtree(Path(staging), store.state)
    store.commit()
    return done
