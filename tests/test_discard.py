"""A failed try's staged env is deleted off the target search's critical path (rebuild.core.discard; issue 26
point 4): within ``discard.in_background()`` the staging folder is renamed into the trash at once and a thread
deletes it; leaving waits for every deletion. Outside, the deletion is synchronous, as before. Real folders, a real
store (adopted like tests/test_store.py does)."""

from __future__ import annotations

import threading
from pathlib import Path

from rebuild.core import discard
from rebuild.store.journal import new_op_id
from rebuild.store.store import Store
from tests.test_store import adopt, make_tree


def _staged(store: Store, op: str) -> Path:
    tree = make_tree(store.staging_dir(op) / "env", "staged")
    for i in range(200):  # enough files that a deletion is not instant
        (tree / "lib" / "site-packages" / f"m{i}.py").write_text("x = 1\n")
    return tree


def test_within_a_search_the_staged_env_is_deleted_by_a_thread(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    op = new_op_id("upgrade")
    _staged(store, op)
    with discard.in_background():
        with discard._trash_folder:  # the thread cannot finish (remove the emptied trash folder) while held
            discard.staging(store, op)
            # the next try's staging folder is free at once: the tree was renamed away, not deleted in this thread
            assert not (store.staging_root / op).exists()
            assert discard.pending()
            assert any(t.name == "tfrebuild-discard" for t in threading.enumerate())
            assert store.trash_root.is_dir()
            _staged(store, op)  # the next try builds in the same staging folder meanwhile
        discard.staging(store, op)  # its failure: a second deletion beside the first
    # leaving waited for both: nothing of either try is left, the trash folder included
    assert not discard.pending()
    assert not (store.staging_root / op).exists()
    assert not store.trash_root.exists()
    assert store.leftover_staging() == []


def test_outside_a_search_the_staged_env_is_deleted_at_once(tmp_path: Path) -> None:
    store = adopt(tmp_path)
    op = new_op_id("upgrade")
    _staged(store, op)
    before = {t.ident for t in threading.enumerate()}
    discard.staging(store, op)
    assert not (store.staging_root / op).exists() and not store.trash_root.exists()
    assert not discard.pending()
    assert {t.ident for t in threading.enumerate()} <= before  # no thread was started
