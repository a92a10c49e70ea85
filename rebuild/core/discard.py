"""A failed try's staged env, deleted off the critical path of the target search (issue 26 point 4).

A staged TensorFlow env is a tree of tens of thousands of files: deleting it takes seconds. Between the tries of
a search (:func:`rebuild.core.search.run`), the transaction's cleanup (:func:`rebuild.core.transaction.run`)
renames the staging folder into ``<state>/trash/`` (one rename: the next try's staging folder is free at once) and
a thread deletes it while the next try plans, builds and checks. The search waits for every deletion before it
returns or raises, so the command ends with the state folder as a synchronous delete leaves it. A deletion that
fails, or a process killed meanwhile, leaves the trash entry to the store's recovery, which removes leftover trash
on the next command (and says so). Outside :func:`in_background` the staging folder is deleted at once, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rebuild.errors import UserError
from rebuild.store.store import Store
from rebuild.store.trees import safe_rmtree

# Module state, like util/signals' (issue 25 point 4 names no other outside the CLI): the switch is set by the target
# search (core/search.run) and read by the transaction's cleanup several calls below it, through the upgrade
# command's attempt, with no object shared by both. It lives only inside ``in_background()`` (None outside), and each
# command is its own process. Moving it onto an object the search hands down is the better home (not done yet).
_pending: list[threading.Thread] | None = None  # inside in_background(): the deletions started
_trash_folder = threading.RLock()  # a rename into the trash folder and its removal when empty, one at a time


@contextmanager
def in_background() -> Iterator[None]:
    """Within: :func:`staging` deletes in a thread; on leaving, every deletion started is waited for."""
    global _pending
    outer, _pending = _pending, []
    try:
        yield
    finally:
        started, _pending = _pending, outer
        for thread in started:
            thread.join()


def pending() -> bool:
    """Whether a deletion started by :func:`staging` may still run (the trash is its own until it ends)."""
    return any(thread.is_alive() for thread in _pending or [])


def staging(store: Store, op: str) -> None:
    """Delete ``<state>/staging/<op>``: at once, or (within :func:`in_background`) renamed into the trash and
    deleted by a thread."""
    folder = store.staging_root / op
    if _pending is None or not folder.is_dir() or folder.is_symlink():
        store.discard_staging(op)
        return
    with _trash_folder:
        trash = store.make_dir(store.trash_root) / f"{op}-try{len(_pending) + 1}"
        os.rename(folder, trash)
    thread = threading.Thread(target=_delete, args=(store, trash), name="tfrebuild-discard", daemon=True)
    thread.start()
    _pending.append(thread)


def _delete(store: Store, trash: Path) -> None:
    try:
        safe_rmtree(trash, store.state)
        with _trash_folder:
            os.rmdir(trash.parent)  # the trash folder, when nothing else is in it (as a synchronous cleanup leaves it)
    except (OSError, UserError):
        pass  # a tree left in the trash: the next command's recovery removes it
