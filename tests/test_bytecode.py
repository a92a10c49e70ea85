"""tfrebuild's pyc cache (rebuild/core/bytecode.py): checked hash-based pycs, linked from the cache, never stale."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rebuild.core import bytecode


def _venv(where: Path, modules: dict[str, str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    (site,) = list(where.glob("lib/python*/site-packages"))
    for rel, text in modules.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return site


MODULES = {"pkg/__init__.py": "VALUE = 1\n", "pkg/util.py": "def f():\n    return 'f'\n", "broken.py": "def (:\n"}


def test_pycs_are_checked_hash_based_and_linked_from_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "pyc"
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(cache))
    assert bytecode.usable_cache(tmp_path) == cache
    first = _venv(tmp_path / "a", MODULES)
    done = bytecode.compile_env(tmp_path / "a", cache)
    assert (done.files, done.compiled, done.linked, done.failed) == (3, 2, 0, 1)  # broken.py gets no pyc
    pyc = Path(importlib.util.cache_from_source(str(first / "pkg" / "util.py")))
    header = pyc.read_bytes()[:16]
    assert header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0b11
    assert header[8:] == importlib.util.source_hash((first / "pkg" / "util.py").read_bytes())
    assert os.stat(pyc).st_nlink == 2  # the env's pyc is the cache's file

    second = _venv(tmp_path / "b", MODULES)
    again = bytecode.compile_env(tmp_path / "b", cache)
    assert (again.compiled, again.linked) == (0, 2)
    other = Path(importlib.util.cache_from_source(str(second / "pkg" / "util.py")))
    assert os.stat(other).st_ino == os.stat(pyc).st_ino
    run = subprocess.run(
        [str(tmp_path / "b" / "bin" / "python"), "-c", "import pkg.util; print(pkg.util.f())"],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "f", run.stderr


def test_an_edited_source_is_not_served_its_old_pyc_and_the_cache_is_not_changed(tmp_path, monkeypatch):
    cache = tmp_path / "pyc"
    site = _venv(tmp_path / "a", MODULES)
    bytecode.compile_env(tmp_path / "a", cache)
    pyc = Path(importlib.util.cache_from_source(str(site / "pkg" / "util.py")))
    cached_before = pyc.read_bytes()
    (site / "pkg" / "util.py").write_text("def f():\n    return 'edited'\n")
    run = subprocess.run(
        [str(tmp_path / "a" / "bin" / "python"), "-c", "import pkg.util; print(pkg.util.f())"],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "edited", run.stderr
    entries = [p for p in cache.rglob("*.pyc")]
    assert any(p.read_bytes() == cached_before for p in entries), "the cache entry must be unchanged"


def test_cache_off_and_old_pythons_fall_back_to_uv(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", "off")
    assert bytecode.cache_dir() is None and bytecode.usable_cache(tmp_path) is None
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.6.15\n")
    assert not bytecode.supported(tmp_path)
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nversion_info = 3.12.1.final.0\n")
    assert bytecode.supported(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to own a folder by another uid")
def test_no_cache_for_another_users_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(tmp_path / "pyc"))
    theirs = tmp_path / "their-env"
    theirs.mkdir()
    os.chown(theirs, 4242, 4242)
    assert bytecode.usable_cache(tmp_path, owner_of=theirs) is None
    assert bytecode.usable_cache(tmp_path, owner_of=tmp_path) == tmp_path / "pyc"


def test_prune_removes_only_the_entries_no_env_links_to(tmp_path, monkeypatch):
    """An entry with one link is the cache's alone; entries an env links to stay, and so does anything that is not
    the cache's own layout (a planted link, a stranger's file name, a fresh temporary file)."""
    import time

    cache = tmp_path / "pyc"
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(cache))
    _venv(tmp_path / "a", {**MODULES, "solo.py": "ONLY_A = True\n"})
    bytecode.compile_env(tmp_path / "a", cache)
    site_b = _venv(tmp_path / "b", MODULES)
    bytecode.compile_env(tmp_path / "b", cache)
    entries = sorted(cache.rglob("*.pyc"))
    assert len(entries) == 3  # pkg/__init__, pkg/util (shared by a and b), solo (a only)
    solo_key = hashlib.sha256(b"ONLY_A = True\n").hexdigest()
    (solo,) = [e for e in entries if e.name == solo_key + ".pyc"]

    bucket = solo.parent
    outside = tmp_path / "outside.pyc"
    outside.write_bytes(b"not the cache's")
    (bucket / ("f" * 64 + ".pyc")).symlink_to(outside)  # a link in the cache: never followed or removed
    (bucket / "notes.txt").write_text("a stranger's file")
    stale, fresh = bucket / ".tmp-stale", bucket / ".tmp-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))

    shutil.rmtree(tmp_path / "a")  # as gc deleting a generation: its links go
    assert os.stat(solo).st_nlink == 1
    dry = bytecode.prune_cache(dry_run=True)
    assert (dry.files, dry.cache) == (2, str(cache)) and solo.exists() and stale.exists()
    done = bytecode.prune_cache()
    assert done.files == 2 and done.bytes == dry.bytes > 0
    assert not solo.exists() and not stale.exists()
    assert fresh.exists() and (bucket / "notes.txt").exists() and outside.read_bytes() == b"not the cache's"
    assert (bucket / ("f" * 64 + ".pyc")).is_symlink()
    kept = sorted(cache.rglob("*.pyc"))
    assert all(os.stat(e).st_nlink == 2 for e in kept if not e.is_symlink()) and len(kept) == 3
    run = subprocess.run(
        [str(tmp_path / "b" / "bin" / "python"), "-c", "import pkg.util; print(pkg.util.f())"],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "f", run.stderr
    assert Path(importlib.util.cache_from_source(str(site_b / "pkg" / "util.py"))).exists()
    assert bytecode.prune_cache().files == 0  # nothing left to prune
    lone = next(e for e in kept if not e.is_symlink() and e.parent != bucket)  # pkg's: buckets e1 and 0a
    shutil.rmtree(tmp_path / "b")
    assert bytecode.prune_cache().files == 2 and not lone.parent.exists()  # a bucket emptied goes too
    assert bucket.is_dir()  # one that still holds something stays


def test_dry_run_counts_the_entries_the_doomed_trees_alone_use(tmp_path, monkeypatch):
    cache = tmp_path / "pyc"
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(cache))
    _venv(tmp_path / "a", {**MODULES, "solo.py": "ONLY_A = True\n"})
    bytecode.compile_env(tmp_path / "a", cache)
    _venv(tmp_path / "b", MODULES)
    bytecode.compile_env(tmp_path / "b", cache)
    assert bytecode.prune_cache(dry_run=True).files == 0  # every entry is linked now
    would = bytecode.prune_cache(dry_run=True, dropping=bytecode.links_in([tmp_path / "a"]))
    assert would.files == 1  # solo.py's: pkg's two are b's too
    both = bytecode.prune_cache(dry_run=True, dropping=bytecode.links_in([tmp_path / "a", tmp_path / "b"]))
    assert both.files == 3 and len(list(cache.rglob("*.pyc"))) == 3
    shutil.rmtree(tmp_path / "a")
    assert bytecode.prune_cache() == would  # the real run removes what the dry run said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another uid")
def test_prune_leaves_other_users_files_and_caches(tmp_path, monkeypatch):
    cache = tmp_path / "pyc"
    bucket = cache / "aa-cpython-311" / "00"
    bucket.mkdir(parents=True)
    theirs, mine = bucket / ("1" * 64 + ".pyc"), bucket / ("2" * 64 + ".pyc")
    theirs.write_bytes(b"t")
    mine.write_bytes(b"m")
    os.chown(theirs, 65534, 65534)
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(cache))
    assert bytecode.prune_cache().files == 1 and theirs.exists() and not mine.exists()
    mine.write_bytes(b"m")
    os.chown(cache, 65534, 65534)  # a cache folder of another user: nothing in it is touched
    assert bytecode.prune_cache().files == 0 and mine.exists()
    os.chown(cache, 0, 0)
    os.chown(bucket, 65534, 65534)  # nor in a bucket of another user
    assert bytecode.prune_cache().files == 0 and mine.exists()


def test_prune_survives_an_unusable_cache_setting(monkeypatch):
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", "~no-such-user-here/pyc")
    with pytest.raises(RuntimeError):
        bytecode.cache_dir()  # pathlib cannot expand it
    assert bytecode.prune_cache() == bytecode.Pruned()  # gc after deleting generations must not fail on it


def test_prune_leaves_a_cache_that_is_a_link_or_off(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "aa-cpython-311" / "00").mkdir(parents=True)
    orphan = real / "aa-cpython-311" / "00" / ("0" * 64 + ".pyc")
    orphan.write_bytes(b"z")
    (tmp_path / "pyc").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(tmp_path / "pyc"))
    assert bytecode.prune_cache().files == 0 and orphan.exists()
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", str(real))
    assert bytecode.prune_cache(dry_run=True).files == 1 and orphan.exists()
    monkeypatch.setenv("TFREBUILD_PYC_CACHE", "off")
    assert bytecode.prune_cache() == bytecode.Pruned() and orphan.exists()
