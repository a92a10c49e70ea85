"""rebuild.swap: atomic directory exchange on real directories."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from rebuild.store import swap
from rebuild.errors import UserError

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")


def make_tree(path: Path, label: str) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text(f"#!{label}\n")
    (path / "MARKER").write_text(label)
    return path


def label(path: Path) -> str:
    return (path / "MARKER").read_text()


@linux_only
def test_exchange_swaps_contents_with_renameat2(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    ino_a, ino_b = os.lstat(a).st_ino, os.lstat(b).st_ino

    assert swap.exchange(a, b) == "renameat2"

    assert label(a) == "B" and label(b) == "A"
    assert (a / "bin" / "python").read_text() == "#!B\n"
    # the directories themselves moved: inodes follow the trees
    assert os.lstat(a).st_ino == ino_b and os.lstat(b).st_ino == ino_a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@linux_only
def test_raw_syscall_path_for_old_glibc(tmp_path: Path) -> None:
    """The ``syscall(SYS_renameat2, ...)`` route used when libc has no renameat2 wrapper."""
    fn = swap._make_renameat2(prefer_wrapper=False)
    if fn is None:
        pytest.skip("no renameat2 syscall number known for this machine")
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    assert fn(os.fsencode(a), os.fsencode(b)) == (0, 0)
    assert label(a) == "B" and label(b) == "A"


def test_exchange_fallback_when_forced(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "sub" / "b", "B")

    assert swap.exchange(a, b, method="rename") == "rename"

    assert label(a) == "B" and label(b) == "A"
    assert not os.path.lexists(swap.tmp_name(a))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "sub"]


def test_fallback_refuses_when_tmp_name_is_taken(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    swap.tmp_name(a).mkdir()
    with pytest.raises(UserError, match="already exists"):
        swap.exchange(a, b, method="rename")
    assert label(a) == "A" and label(b) == "B"


class Watcher:
    """A thread that ``os.stat``s ``path`` in a loop, counting hits and ENOENTs."""

    def __init__(self, path: Path) -> None:
        self.path, self.hits, self.missing = path, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                os.stat(self.path)
                self.hits += 1
            except FileNotFoundError:
                self.missing += 1

    def __enter__(self) -> "Watcher":
        self._thread.start()
        while self.hits == 0 and self.missing == 0:  # running before the first exchange
            time.sleep(0.001)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@linux_only
def test_path_never_missing_during_200_exchanges(tmp_path: Path) -> None:
    env = make_tree(tmp_path / "env", "A")
    other = make_tree(tmp_path / "other", "B")

    with Watcher(env / "bin" / "python") as watcher:
        before = watcher.hits
        methods = {swap.exchange(env, other) for _ in range(200)}
        during = watcher.hits - before

    assert methods == {"renameat2"}
    assert watcher.missing == 0
    assert during > 0  # the watcher really ran while the exchanges happened
    assert label(env) == "A"  # an even number of exchanges


def test_watcher_does_see_the_fallback_window(tmp_path: Path) -> None:
    """Control for the test above: the same watcher catches the non-atomic fallback."""
    env = make_tree(tmp_path / "env", "A")
    other = make_tree(tmp_path / "other", "B")
    with Watcher(env / "bin" / "python") as watcher:
        for _ in range(5000):
            swap.exchange(env, other, method="rename", durable=False)
            if watcher.missing:
                break
    assert watcher.missing > 0


def test_missing_paths_raise_user_error(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    with pytest.raises(UserError, match="does not exist"):
        swap.exchange(a, tmp_path / "nope")
    with pytest.raises(UserError, match="does not exist"):
        swap.exchange(tmp_path / "nope", a, method="rename")
    assert label(a) == "A"


def test_symlink_and_nested_and_same_are_refused(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    (tmp_path / "link").symlink_to(b)
    with pytest.raises(UserError, match="symbolic link"):
        swap.exchange(a, tmp_path / "link")
    inner = make_tree(a / "inner", "I")
    with pytest.raises(UserError, match="inside"):
        swap.exchange(a, inner)
    with pytest.raises(UserError, match="itself"):
        swap.exchange(a, tmp_path / "a" / ".." / "a")
    assert label(a) == "A" and label(b) == "B"


def _other_filesystem(tmp_path: Path) -> Path | None:
    for candidate in ("/dev/shm", "/run/user", "/tmp"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            if os.stat(candidate).st_dev != os.stat(tmp_path).st_dev:
                return Path(candidate)
    return None


@pytest.mark.parametrize("method", ["auto", "rename"])
def test_different_filesystems_raise_user_error(tmp_path: Path, method: str) -> None:
    other_fs = _other_filesystem(tmp_path)
    if other_fs is None:
        pytest.skip("no second writable filesystem")
    import tempfile

    with tempfile.TemporaryDirectory(dir=other_fs) as far:
        a = make_tree(tmp_path / "a", "A")
        b = make_tree(Path(far) / "b", "B")
        assert not swap.same_filesystem(a, b)
        with pytest.raises(UserError, match="different filesystems"):
            swap.exchange(a, b, method=method)
        assert label(a) == "A" and label(b) == "B"
        assert not os.path.lexists(swap.tmp_name(a))


def test_same_filesystem_uses_nearest_existing_parent(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    assert swap.same_filesystem(a, tmp_path / "not" / "yet" / "there")
    assert swap.same_filesystem(a, tmp_path)


def test_repair_undoes_crash_after_first_rename(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    os.rename(a, swap.tmp_name(a))  # crash after step 1 of the fallback

    assert "undid" in swap.repair(a, b)
    assert label(a) == "A" and label(b) == "B"
    assert swap.repair(a, b) is None


def test_repair_finishes_crash_after_second_rename(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    os.rename(a, swap.tmp_name(a))
    os.rename(b, a)  # crash after step 2

    assert "finished" in swap.repair(a, b)
    assert label(a) == "B" and label(b) == "A"


def test_unknown_method_is_a_programming_error(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", "A")
    b = make_tree(tmp_path / "b", "B")
    with pytest.raises(ValueError):
        swap.exchange(a, b, method="symlink")
