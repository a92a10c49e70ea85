"""Plan then upgrade resolves once: ``tfrebuild plan`` keeps its resolutions; ``upgrade`` with the same inputs reuses them.

Each resolution (:func:`rebuild.core.resolve.resolve`: the pins, uv's reasons, the lock) that ``plan`` makes is kept
for :data:`TTL` seconds in the plan cache, ``$TFREBUILD_PLAN_CACHE``, else ``$XDG_CACHE_HOME/tfrebuild/plans``
(``~/.cache/tfrebuild/plans``; ``off`` turns it off). The entry's name is a digest of the env's path and of
everything that decides the resolution: the interpreter (its path, and its file's identity), the TensorFlow
distribution, version and extras, the requested requirements, the installed pins (the preferences), the constraints, the index settings (credentials
redacted) with the contents of constraint files (and of the files their ``-c``/``-r`` lines name) and the state of
local index folders, uv's options (pre-releases,
offline, wheels only, strategy), the ``UV_*`` variables (credential variables excluded) and the uv binary.
``upgrade`` looks the same digest up: an entry that is missing, older than :data:`TTL`, or made for other inputs is
ignored silently (upgrade resolves as before); an entry that cannot be trusted (not this user's, writable by others,
a link, not a regular file) is not read and the plan says why. Nothing secret is written: a resolution whose text
holds a credential is not kept.

Only ``plan`` writes entries and only ``upgrade`` reads them (a plan always resolves: its own time is what it
measures). A resolution that names a local source tree (``-e /path``) is never kept: its files decide it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rebuild.store import trust
from rebuild.util import fs, proc

TTL = 600.0  # seconds an entry is good for: the index may change, so "right after the plan" only
_ENTRY = re.compile(r"[0-9a-f]{64}\.json")
_LIMIT = 8 * 1024 * 1024
_SECRET_NAMES = ("PASSWORD", "TOKEN", "USERNAME", "CREDENTIAL", "AUTH", "KEYRING", "SECRET")


def cache_dir() -> Path | None:
    """The configured plan cache folder (it may not exist yet), or ``None`` when turned off."""
    from rebuild.core.bytecode import configured_cache

    return configured_cache("TFREBUILD_PLAN_CACHE", "plans")


@dataclass
class Reuse:
    """One command's use of the plan cache: ``record`` (plan: keep what it resolves) or ``reuse`` (upgrade: look up).

    ``used``: what was reused, in words; ``refused``: entries not read because they cannot be trusted."""

    mode: str  # "record" | "reuse"
    used: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    folder: Path | None = None
    env: str = ""  # the env planned (make_plan sets it): a plan of another env is never reused, even one alike

    def __post_init__(self) -> None:
        if self.folder is None:
            try:
                self.folder = cache_dir()
            except (RuntimeError, ValueError):  # e.g. ~nosuchuser
                self.folder = None

    def resolved(self, inputs: Any, tf_version: str, compute: Callable[[], Any], make: Callable[..., Any]) -> Any:
        """``compute()`` (a :class:`rebuild.core.resolve.Resolved`), or the plan's when ``upgrade`` finds it."""
        key = digest(inputs, tf_version, self.env) if self.folder is not None else None
        if key is not None and self.mode == "reuse":
            entry = self._load(key)
            if entry is not None:
                try:
                    found = make(**entry["resolved"])
                except (TypeError, KeyError):
                    found = None
                if found is not None:
                    age = max(0.0, time.time() - float(entry["created"]))
                    self.used.append(
                        f"{inputs.tf_distribution} {tf_version}: the resolution `tfrebuild plan` made "
                        f"{age:.0f} s ago (same env, interpreter, index settings and options)"
                    )
                    return found
        result = compute()
        if key is not None and self.mode == "record":
            self._save(key, result)
        return result

    def _folder(self, create: bool) -> Path | None:
        folder = self.folder
        if folder is None:
            return None
        if create:
            try:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            except OSError:
                return None
        try:
            st = os.lstat(folder)
        except OSError:
            return None
        why = trust.problem(st, frozenset({os.geteuid(), 0}), kinds="d")
        if why:
            self.refused.append(f"the plan cache {folder} {why}: tfrebuild neither reads nor writes it")
            return None
        return folder

    def _load(self, key: str) -> dict[str, Any] | None:
        folder = self._folder(create=False)
        if folder is None:
            return None
        path = folder / f"{key}.json"
        try:
            data = _read(path)
        except PermissionError as exc:
            self.refused.append(f"the plan's resolution {path} was not reused: {exc.strerror}")
            return None
        except OSError:
            return None  # missing (the usual case) or unreadable: resolve as before
        try:
            entry: dict[str, Any] = fs.json_document(data)
            created = float(entry["created"])
            ok = entry.get("key") == key and entry.get("format") == 1 and isinstance(entry.get("resolved"), dict)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not ok or not (0 <= time.time() - created <= TTL):
            return None  # made for other inputs, or stale: silently ignored
        return entry

    def _save(self, key: str, resolved: Any) -> None:
        folder = self._folder(create=True)
        if folder is None:
            return
        text = json.dumps({"format": 1, "key": key, "created": time.time(), "resolved": asdict(resolved)})
        if proc.redact_line(text) != text:
            return  # a credential in a URL of the lock: nothing secret is written down
        try:
            fs.atomic_write(folder / f"{key}.json", text, mode=0o600, durable=False)
        except OSError:
            return
        _prune(folder)


def _read(path: Path) -> bytes:
    """The entry's bytes: opened without following a link, a regular file of this user (or root) that no one else
    can write. ``PermissionError`` (with the reason) when it cannot be trusted."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, "it is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        why = trust.problem(st, frozenset({os.geteuid(), 0}), kinds="f")
        if why:
            raise PermissionError(errno.EPERM, why)
        if st.st_size > _LIMIT:
            raise OSError(errno.EFBIG, "too large")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _prune(folder: Path) -> None:
    """Entries older than :data:`TTL` go (only this user's regular files of the cache's own naming)."""
    now = time.time()
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if _ENTRY.fullmatch(e.name)]
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and now - st.st_mtime > TTL:
                    os.unlink(name, dir_fd=fd)
            except OSError:
                continue
    finally:
        os.close(fd)


def digest(inputs: Any, tf_version: str, env: str = "") -> str | None:
    """The key of a resolution of ``inputs`` (a :class:`rebuild.core.resolve.Inputs`) with TensorFlow at
    ``tf_version``; ``None`` when it cannot be kept (a local source tree decides it, or the interpreter is gone)."""
    if inputs.direct:
        return None
    try:
        python = os.stat(inputs.python)
        uv = _identity(_uv_path())
    except OSError:
        return None
    from rebuild import __version__
    from rebuild.index import config as indexconf

    files = [*inputs.index.constraints, *inputs.build_constraints]
    overrides = [w for w in os.environ.get("UV_OVERRIDE", "").split() if w]
    hashed = [_content(p, set()) for p in files + overrides]  # by content: a private temporary file's name varies
    contents = sorted(h for h in hashed if h is not None)
    if len(contents) != len(hashed):
        return None  # a file that decides the resolution but cannot be read here (a link, too big): never reused
    index = indexconf.redacted(inputs.index)
    parts = {
        "tfrebuild": __version__,
        "env": env,
        "python": [str(inputs.python), python.st_dev, python.st_ino, python.st_size, python.st_mtime_ns],
        "uv": uv,
        "tf": [inputs.tf_distribution, tf_version, sorted(inputs.extras)],
        "requested": list(inputs.requested),
        "pins": sorted(inputs.pins.items()),
        "constraints": sorted(inputs.constraints.items()),
        "index": asdict(index),
        "files": contents,
        "local": {
            p: _local_state(p)
            for p in [inputs.index.index_url, *inputs.index.extra_index_urls, *inputs.index.find_links]
            if p
        },
        "options": [inputs.offline, inputs.pre, inputs.strategy, inputs.no_build],
        "environ": sorted(
            (k, v) for k, v in os.environ.items() if k.startswith("UV_") and not any(s in k for s in _SECRET_NAMES)
        ),
    }
    text = proc.redact_line(json.dumps(parts, sort_keys=True, default=str))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _uv_path() -> str:
    from rebuild.util import uv as uvcmd

    return uvcmd.uv_bin()


def _identity(path: str) -> list[Any]:
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


_NESTED = re.compile(r"^\s*(?:-c|-r|--constraint|--requirement)(?:\s*=\s*|\s+)(\S+)", re.M)


def _content(path: str, seen: set[str]) -> str | None:
    """A local file's SHA-256, with the files it names (``-c``/``-r`` lines, which uv reads too, relative to its
    folder) hashed in; a URL stands for itself (the time limit covers it); ``None``: a local file that cannot be
    read as a document (a link, a FIFO, too big), whose changes the key could not see."""
    if "://" in path and not path.startswith("file://"):
        return path
    local = path[len("file://") :] if path.startswith("file://") else path
    if local in seen or len(seen) > 32:
        return "(seen)" if local in seen else None  # a loop is uv's to refuse; too deep: never reused
    seen.add(local)
    try:
        data = fs.read_document(local)
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(data)
    for named in _NESTED.findall(data.decode("utf-8", errors="replace")):
        nested = named if "://" in named else os.path.join(os.path.dirname(local), os.path.expanduser(named))
        inner = _content(nested, seen)
        if inner is None:
            return None
        digest.update(f"\n{named}:{inner}".encode())
    return digest.hexdigest()


def _local_state(url: str) -> list[Any]:
    """A local index or find-links folder's state (its own and its entries' modification times): a wheel added
    there changes the key. URLs of remote indexes stand for themselves (the time limit covers them)."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if "://" in path or not os.path.isdir(path):
        return []
    try:
        with os.scandir(path) as entries:
            return [
                os.stat(path).st_mtime_ns,
                sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in entries),
            ]
    except OSError:
        return []
