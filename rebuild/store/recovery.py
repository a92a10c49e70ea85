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

import errno
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rebuild.errors import UserError
from rebuild.store.journal import OPS, DamagedJournal
from rebuild.store.records import Generation
from rebuild.store.trees import abs_path, key_or_none, safe_rmtree
from rebuild.util import signals

if TYPE_CHECKING:
    from rebuild.store.store import Store  # the store it works on (Store.recover() calls in here)


class CannotRecover(UserError):
    """The journal is well-formed, but the trees are in neither of the states it allows."""


def recover(store: Store, *, finished: Callable[[Store], None] | None = None) -> str | None:
    """Finish or undo an interrupted operation and remove leftovers; returns what was done, or ``None``.

    Takes the lock (re-entrant); SIGINT/SIGTERM wait until it is done.  ``finished(store)``
    runs every time on a managed store, for what the store cannot do itself
    (``rebuild.commands.generations`` writes a generation's missing profile: a kill after the
    record and before the profile leaves no journal to say so).
    """
    with store.lock("tfrebuild recover"), signals.deferred():
        done = _recover_managed(store) if store.managed else _recover_new_env(store)
        if finished is not None and store.managed:
            finished(store)
        return done


def recover_if_idle(store: Store, *, finished: Callable[[Store], None] | None = None) -> str | None:
    """:func:`recover`, unless another tfrebuild is running (then leave it): ``None`` then.

    A journal that cannot be recovered (damaged, or trees in neither allowed state) raises, as it
    does for the commands that change the env: every command says the same about it. A filesystem that
    cannot be written (read-only, full) is reported, not repaired: ``None``."""
    if store.lock_holder() is not None or not store.has_leftovers():
        return None  # nothing to do: a reader never opens the lock for writing
    try:
        return recover(store, finished=finished)
    except (DamagedJournal, CannotRecover):
        raise
    except (UserError, OSError):
        return None


def _recover_managed(store: Store) -> str | None:
    done: list[str] = []
    try:
        journal = store.journal()
    except DamagedJournal as exc:
        journal = None
        done.append(_set_aside(store, exc))
    if journal is not None:
        problem = _malformed(store, journal)
        if problem and "outside" in problem:  # an edited path: refused, never acted on or set aside silently
            raise DamagedJournal(store.journal_path, problem, "not for a journal that names paths outside it")
        if problem:
            done.append(_set_aside(store, DamagedJournal(store.journal_path, problem)))
        elif journal["op"] == "upgrade":
            done.append(_recover_upgrade(store, journal))
        elif journal["op"] == "rollback":
            done.append(_recover_rollback(store, journal))
        else:
            done.append(_recover_gc(store, journal))
    for path in store.leftover_staging():
        done.append(_remove(store, path, f"removed leftover staging folder {path}"))
    if store.trash_root.is_dir():
        for entry in os.scandir(store.trash_root):
            done.append(_remove(store, Path(entry.path), f"removed leftover {entry.path}"))
    return "; ".join(done) or None


def _remove(store: Store, path: Path, done: str, wait: float = 5.0) -> str:
    """``safe_rmtree(path)``, retried while something still writes into it (a killed tfrebuild's uv
    winding down); if it is still in use after ``wait`` seconds it is left for the next run, and said so."""
    deadline = time.monotonic() + wait
    while True:
        try:
            safe_rmtree(path, store.state)
            return done
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST) or time.monotonic() >= deadline:
                if exc.errno in (errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
                    return f"left {path}: a process still writes into it (removed by the next tfrebuild run)"
                raise
            time.sleep(0.2)


_INT_FIELDS = {
    "upgrade": ("new", "old", "new_inode", "new_device", "old_inode", "old_device"),
    "rollback": ("to", "from", "new_inode", "new_device", "old_inode", "old_device"),
    "gc": ("generation",),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _malformed(store: Store, j: dict[str, Any]) -> str:
    """Why the journal ``j`` is not one tfrebuild writes ("" when it is): every field checked before use."""
    op = j.get("op")
    if op not in OPS:
        return f"unknown operation {op!r}"
    swapped = op != "upgrade" or "new_inode" in j
    need = _INT_FIELDS[op] if swapped else ()
    for name in need:
        if not _is_int(j.get(name)):
            return f"{op} without a valid {name!r} ({j.get(name)!r})"
    if op == "upgrade" and not swapped and j.get("new") is not None and not _is_int(j.get("new")):
        return f"upgrade with an invalid generation number {j.get('new')!r}"
    for name, root in (("staging", store.staging_root), ("trash", store.trash_root)):
        value = j.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value or "\0" in value or abs_path(value).parent != root:
            return f"{name} {str(value)[:200]!r} is outside {root} (not a folder directly inside it)"
    if op == "upgrade" and swapped:
        tree, staging = j.get("new_tree"), j.get("staging")
        if not isinstance(tree, str) or not staging or abs_path(staging) not in abs_path(tree).parents:
            return f"the new tree {str(tree)[:200]!r} is outside the staging folder"
        if not isinstance(j.get("generation"), dict):
            return "upgrade without the record of its generation"
        try:
            Generation.from_dict(
                {**j["generation"], "number": j["new"], "inode": j["new_inode"], "device": j["new_device"]}
            )
        except (TypeError, ValueError, KeyError) as exc:
            return f"the generation record is not usable ({exc})"
    return ""


def _set_aside(store: Store, exc: DamagedJournal) -> str:
    """A damaged journal is set aside only where that is safe: ``E`` is the tree recorded as current (then
    whatever the operation was, the records and the trees agree); otherwise the error is raised."""
    try:
        store.check_current()
    except UserError as why:
        raise DamagedJournal(exc.path, exc.problem, f"here it cannot: {why.message}") from None
    dest = store.set_aside_journal()
    return (
        f"set the damaged journal aside as {dest} ({exc.problem}): {store.env} is generation "
        f"{store.current_number}, as recorded"
    )


def _owned(store: Store, value: Any, root: Path) -> Path | None:
    """``value`` from the journal as a path, only if it is a direct child of ``root``."""
    if not value:
        return None
    path = abs_path(value)
    if path.parent != root:
        raise DamagedJournal(store.journal_path, f"it names {path}, outside {root}")
    return path


def _settle(
    store: Store,
    j: dict[str, Any],
    tree: Path,
    old_dest: Path,
    *,
    finish: Callable[[], str],
    undo: Callable[[], str],
    what: str,
    neither: str,
) -> str:
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
        raise CannotRecover(
            f"Cannot recover the interrupted {what} of {store.env}: it holds neither {neither}",
            hint=f"Inspect {store.env} and {store.state} by hand, then delete {store.journal_path}.",
        )
    store.commit()
    return done


def _drop_unfinished(store: Store, staging: Path | None, number: Any) -> str:
    """Remove an upgrade's staging folder and the generation folder it had begun (no ``meta.toml`` yet)."""
    done = f"removed staging {staging}"
    if staging is not None:
        done = _remove(store, staging, done)
    if isinstance(number, int) and number not in (store.current_number, store.previous_number):
        folder = store.generation_dir(number)
        if folder.is_dir() and not (folder / "meta.toml").exists():
            safe_rmtree(folder, store.state)
    return done


def _recover_upgrade(store: Store, j: dict[str, Any]) -> str:
    staging = _owned(store, j.get("staging"), store.staging_root)
    if "new_inode" not in j:  # interrupted while building or checking: nothing was swapped
        done = _drop_unfinished(store, staging, j.get("new"))
        store.commit()
        return f"rolled back interrupted upgrade: {done}"
    number, old_number = int(j["new"]), int(j["old"])
    new_tree = abs_path(j["new_tree"])
    if staging is None or staging not in new_tree.parents:
        raise DamagedJournal(store.journal_path, f"it names a new tree outside staging: {new_tree}")

    def finish() -> str:
        store.write_meta(Generation.from_dict({**j["generation"], "inode": j["new_inode"], "device": j["new_device"]}))
        store.write_state(number, old_number)
        left = _remove(store, staging, "")
        return f"finished interrupted upgrade to generation {number}" + (f"; {left}" if left else "")

    def undo() -> str:
        done = _drop_unfinished(store, staging, number)
        return f"rolled back interrupted upgrade to generation {number}: {done}"

    return _settle(
        store,
        j,
        new_tree,
        store.generation_dir(old_number) / "env",
        finish=finish,
        undo=undo,
        what="upgrade",
        neither="the old nor the new environment",
    )


def _recover_rollback(store: Store, j: dict[str, Any]) -> str:
    to, frm = int(j["to"]), int(j["from"])

    def finish() -> str:
        store.write_state(to, frm)
        return f"finished interrupted rollback to generation {to}"

    def undo() -> str:
        return f"undid interrupted rollback to generation {to}: generation {frm} is still current"

    return _settle(
        store,
        j,
        store.generation_dir(to) / "env",
        store.generation_dir(frm) / "env",
        finish=finish,
        undo=undo,
        what="rollback",
        neither=f"generation {frm} nor {to}",
    )


def _recover_gc(store: Store, j: dict[str, Any]) -> str:
    n = int(j["generation"])
    trash = _owned(store, j.get("trash"), store.trash_root)
    folder = store.generation_dir(n)
    if (
        os.path.lexists(folder)
        and n not in (store.current_number, store.previous_number)
        and not os.path.islink(folder)
    ):
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
    try:
        journal = store.journal()
        problem = _malformed_new_env(store, journal) if journal is not None else ""
    except DamagedJournal as exc:
        journal, problem = None, exc.problem
    if problem:  # nothing is managed here: set aside only when nothing is at the path either
        if os.path.lexists(store.env):
            raise DamagedJournal(
                store.journal_path,
                problem,
                f"here it cannot: {store.env} exists, and tfrebuild "
                "cannot tell whether it is the environment an interrupted apply built",
            )
        dest = store.set_aside_journal()
        steps = [f"set the damaged journal aside as {dest} ({problem})"]
        steps += [_remove(store, p, f"removed leftover staging folder {p}") for p in store.leftover_staging()]
        return "; ".join(steps)
    if journal is None:
        leftovers = store.leftover_staging()
        steps = [_remove(store, p, f"removed leftover staging folder {p}") for p in leftovers]
        return "; ".join(steps) or None
    staging = journal.get("staging")
    built = (journal.get("apply_device"), journal.get("apply_inode"))
    done = "undid an interrupted apply: removed its staging folder"
    if journal.get("apply_new_env") and built[1] is not None and key_or_none(store.env) == built:
        store.adopt(
            Generation.new(
                1,
                command=str(journal.get("command", "tfrebuild apply")),
                tensorflow=str(journal.get("tensorflow", "")),
                python=str(journal.get("python", "")),
            )
        )
        built_lock = Path(staging or "") / "pylock.toml"
        if staging and built_lock.is_file():
            shutil.copyfile(built_lock, store.generation_dir(1) / "pylock.toml")
        done = "finished an interrupted apply: adopted the new environment as generation 1"
    if staging and Path(staging).parent == store.staging_root:
        left = _remove(store, Path(staging), "")
        done += f"; {left}" if left else ""
    store.commit()
    return done


def _malformed_new_env(store: Store, j: dict[str, Any]) -> str:
    """Why ``j`` is not an apply-to-a-new-path journal ("" when it is)."""
    if j.get("op") != "upgrade" or not j.get("apply_new_env"):
        return (
            f"a {str(j.get('op'))[:40]!r} operation in the state folder of {store.env}, which tfrebuild does not manage"
        )
    staging = j.get("staging")
    if not isinstance(staging, str) or not staging or "\0" in staging or abs_path(staging).parent != store.staging_root:
        return f"staging {str(staging)[:200]!r} is not a folder directly inside {store.staging_root}"
    for name in ("apply_inode", "apply_device"):
        if name in j and not _is_int(j[name]):
            return f"{name} is not a number ({str(j[name])[:40]!r})"
    return ""
