"""Bytecode for a new env: checked hash-based pycs shared through tfrebuild's pyc cache.

uv's ``--compile-bytecode`` writes a timestamp-based pyc for every file into each new env: the pycs are
the one part of a generation that is not hard-linked from uv's cache (about 10 % of a TensorFlow env),
and compiling them is most of the build's CPU time. Instead, when the pyc cache can be used, the build
installs without ``--compile-bytecode`` and runs ``_bytecode.py`` with the new env's interpreter: each
source file's pyc (a PEP 552 *checked* hash-based pyc, keyed by the source's SHA-256 and the magic
number) is hard-linked from the cache, and only sources not seen before are compiled. Unchanged files
(the same wheel in the previous generation, or in any env built before) cost one link.

The cache is ``$TFREBUILD_PYC_CACHE``, else ``$XDG_CACHE_HOME/tfrebuild/pyc`` (``~/.cache/tfrebuild/pyc``).
It is used only on the env's filesystem (a hard link cannot cross filesystems) and only when the env's
folder belongs to the user running tfrebuild (root building another user's env must not share files
with root's own cache). ``TFREBUILD_PYC_CACHE=off`` turns it off: uv compiles, as before. Interpreters
older than 3.7 have no hash-based pycs and always get uv's compilation. ``tfrebuild gc`` prunes it
(``prune_cache``): entries no env links to any more.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import UserError
from rebuild.util import proc

SCRIPT = Path(__file__).with_name("_bytecode.py")
OFF = ("off", "0", "no", "false", "")


@dataclass
class Compiled:
    files: int = 0
    linked: int = 0  # pycs hard-linked from the cache (compiled before)
    compiled: int = 0  # compiled now (and put in the cache)
    copied: int = 0  # compiled now and written into the env only (no cache)
    failed: int = 0  # sources that do not compile (as compileall, they get no pyc)
    cache: str = ""


def cache_dir() -> Path | None:
    """The configured pyc cache folder (it may not exist yet), or ``None`` when turned off."""
    return configured_cache("TFREBUILD_PYC_CACHE", "pyc")


def configured_cache(variable: str, leaf: str) -> Path | None:
    """A tfrebuild cache folder: ``$variable`` (``off`` turns it off), else ``$XDG_CACHE_HOME/tfrebuild/<leaf>``
    (``~/.cache/tfrebuild/<leaf>``). It may not exist yet."""
    value = os.environ.get(variable)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfrebuild" / leaf


@dataclass
class Pruned:
    files: int = 0  # cache files no env links to any more (removed, or to be removed with --dry-run)
    bytes: int = 0  # their allocated size
    cache: str = ""


_ENTRY = re.compile(r"[0-9a-f]{64}\.pyc")
_BUCKET = re.compile(r"[0-9a-f]{2}")
_TAG_DIR = re.compile(r"[0-9a-f]+-[A-Za-z0-9_.-]+")  # magic number, then the cache tag (cpython-311)
_STALE_TMP_S = 3600.0  # a ".tmp-" file this old is a build's leftover (a live one is written and linked in ms)


def links_in(trees: list[Path]) -> dict[tuple[int, int], int]:
    """How many of each pyc's hard links lie in ``trees`` (their ``__pycache__`` folders), by (device, inode):
    what deleting those trees takes from the cache's entries."""
    import stat

    found: dict[tuple[int, int], int] = {}
    for tree in trees:
        for folder, _dirs, files in os.walk(tree):  # os.walk does not follow links to folders
            if os.path.basename(folder) != "__pycache__":
                continue
            for name in files:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    found[(st.st_dev, st.st_ino)] = found.get((st.st_dev, st.st_ino), 0) + 1
    return found


def prune_cache(
    *, dry_run: bool = False, dropping: dict[tuple[int, int], int] | None = None, now: float | None = None
) -> Pruned:
    """Remove the pyc cache's entries that no env links to any more (link count 1: only the cache has it).

    Every env built with the cache holds its pycs as hard links to the entries, so an entry with one link is
    used by none of them (``gc`` deleting generations is what drops the links). Removing it costs only its
    reuse by a later build, which compiles it again; a build that finds an entry gone compiles it (see
    ``_bytecode.place``), so no lock is needed. ``dropping`` (with ``dry_run``): links that are about to go
    (``links_in`` of the generations gc would delete), so the count is what the real run would remove.

    Only the cache's own layout is touched (``<magic>-<tag>/<2 hex>/<sha256>.pyc``, and ``.tmp-`` leftovers
    older than an hour), only regular files of this user. Every folder is opened with ``O_NOFOLLOW`` relative
    to the one above it and every name is removed relative to its folder, so nothing is reached through a
    link, even one swapped in while this runs. A cache that cannot be read (or a cache setting that cannot be
    used) prunes nothing: it is only a cache."""
    import stat
    import time

    try:
        cache = cache_dir()
    except (RuntimeError, ValueError):  # e.g. TFREBUILD_PYC_CACHE=~nosuchuser/...
        return Pruned()
    result = Pruned(cache=str(cache or ""))
    if cache is None:
        return result
    now = time.time() if now is None else now
    uid = os.geteuid()
    dropping = dropping or {}
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

    def open_dir(name: str | Path, dir_fd: int | None = None) -> int | None:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except (OSError, ValueError):
            return None
        st = os.fstat(fd)
        if st.st_uid != uid:
            os.close(fd)
            return None
        return fd

    def names(fd: int, pattern: re.Pattern[str] | None = None) -> list[str]:
        try:
            with os.scandir(fd) as entries:
                return [e.name for e in entries if pattern is None or pattern.fullmatch(e.name)]
        except OSError:
            return []

    root = open_dir(cache)
    if root is None:
        return result
    try:
        for tag_name in names(root, _TAG_DIR):
            tag = open_dir(tag_name, root)
            if tag is None:
                continue
            try:
                for bucket_name in names(tag, _BUCKET):
                    bucket = open_dir(bucket_name, tag)
                    if bucket is None:
                        continue
                    try:
                        for name in names(bucket):
                            try:
                                st = os.stat(name, dir_fd=bucket, follow_symlinks=False)
                            except OSError:
                                continue
                            if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                                continue
                            if _ENTRY.fullmatch(name):
                                if st.st_nlink - dropping.get((st.st_dev, st.st_ino), 0) != 1:
                                    continue
                            elif not (name.startswith(".tmp-") and now - st.st_mtime > _STALE_TMP_S):
                                continue
                            if not dry_run:
                                try:
                                    os.unlink(name, dir_fd=bucket)
                                except OSError:
                                    continue
                            result.files += 1
                            result.bytes += st.st_blocks * 512
                    finally:
                        os.close(bucket)
                    if not dry_run:
                        try:
                            os.rmdir(bucket_name, dir_fd=tag)  # only when empty
                        except OSError:
                            pass
            finally:
                os.close(tag)
    finally:
        os.close(root)
    return result


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def usable_cache(where: Path, owner_of: Path | None = None) -> Path | None:
    """The pyc cache for an env built in ``where``: on its filesystem and ours, else ``None``.

    ``owner_of``: the env the new tree replaces (or the folder it goes into); when root works on another
    user's env, the new tree is handed to that user (``fsguard.keep_owner``), which would hand them the
    cache's files too, so the cache is not used."""
    from rebuild.env import fsguard

    cache = cache_dir()
    if cache is None or (owner_of is not None and fsguard.foreign_owner(owner_of) is not None):
        return None
    try:
        here = os.stat(where)
        there = os.stat(_existing(cache))
    except OSError:
        return None
    if here.st_dev != there.st_dev or here.st_uid != os.geteuid():
        return None
    from rebuild.store import trust

    trust.check_cache(cache)  # a cache someone else can write would plant pycs: refused, naming whose it is
    return cache


def python_version(env: Path) -> tuple[int, int] | None:
    """(major, minor) of a venv from its ``pyvenv.cfg``."""
    try:
        text = (env / "pyvenv.cfg").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"(?m)^\s*version(?:_info)?\s*=\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def supported(env: Path) -> bool:
    version = python_version(env)
    return version is not None and version >= (3, 7)


def site_folders(env: Path) -> list[Path]:
    return sorted(p for p in env.glob("lib/python*/site-packages") if p.is_dir() and not p.parent.is_symlink())


def compile_env(env: Path, cache: Path | None, *, log: Path | None = None, timeout: float = 3600) -> Compiled:
    """Every site-packages source of ``env`` gets its pyc (linked from ``cache`` where it has it)."""
    sites = site_folders(env)
    if not sites:
        return Compiled()
    result = proc.run(
        [env / "bin" / "python", "-I", "-S", SCRIPT, str(cache or ""), *map(str, sites)], timeout=timeout, log=log
    )
    if result.returncode != 0:
        raise UserError(
            "Compiling bytecode in the new environment failed; your environment was not changed.",
            f"Run again with --no-compile to skip bytecode, or set TFREBUILD_PYC_CACHE=off. "
            f"{'The log is ' + str(log) + '.' if log else ''}".strip(),
            exit_code=1,
            details=(result.stderr or result.error or "").strip()[-3000:],
        )
    try:
        return Compiled(**json.loads(result.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError):
        return Compiled()
