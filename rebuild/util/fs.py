"""The one atomic writer (a file is either its old content or its new content, never half of either) and the
one document reader (a regular file, never through a link, of bounded size and nesting)."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

#: The largest document (profile, lock, state file, journal) tfrebuild reads: far above any real one.
MAX_DOCUMENT = 8 * 1024 * 1024
#: The deepest nesting (tables, arrays, dotted keys) a document may have: real ones stay below 10.
MAX_NESTING = 64


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes | str, *, mode: int | None = None, durable: bool = True) -> None:
    """Write ``data`` to ``path`` crash-safely: a temporary file beside it, fsync, rename, fsync of the folder.

    ``mode`` defaults to what the umask allows for a new file (0666 & ~umask). A symlink at
    ``path`` is replaced, never written through. Raises ``OSError``; callers word it.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    refuse_special(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names the file it was for
            exc.filename = str(path)
        raise
    if durable:
        fsync_dir(path.parent)


def refuse_special(path: Path | str) -> None:
    """``OSError`` when something other than a regular file or a symbolic link is at ``path`` (a folder, a
    FIFO, a socket, a device): a document never replaces it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OSError(errno.EEXIST, f"it is {kind(st.st_mode)}, not a regular file", str(path))


def kind(mode: int) -> str:
    """What a file of ``mode`` is, in words (``a FIFO``, ``a character device`` ...)."""
    for test, words in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def read_document(path: Path | str, *, limit: int = MAX_DOCUMENT) -> bytes:
    """The bytes of the regular file at ``path``, opened without following a link (``O_NOFOLLOW``) and without
    waiting (``O_NONBLOCK``: a FIFO is refused at once, not read forever), at most ``limit`` bytes.

    Raises ``OSError`` whose ``strerror`` says what is wrong (a link, a FIFO or device, too large).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "it is a symbolic link (tfrebuild never reads a document through one)", str(path)
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"it is {kind(st.st_mode)}, not a regular file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"it is larger than {limit // (1024 * 1024)} MB", str(path))
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"it is larger than {limit // (1024 * 1024)} MB", str(path))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text (byte {exc.start})") from None


_PLAIN = re.compile(r"[^\"'#\[\]{}=:,\n.]+")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*("|$)', re.M)
_LITERAL = re.compile(r"'[^'\n]*('|$)", re.M)


def nesting(text: str) -> int:
    """How deep ``text`` (TOML or JSON) nests: brackets and braces, plus the dots of a TOML dotted key or table
    name, counted outside strings and comments. Used before parsing, so a hostile file costs one pass."""
    deepest = depth = dots = 0
    stack: list[str] = []
    key = True  # at a position where a TOML key (or table name) is read
    i, n = 0, len(text)
    while i < n:
        plain = _PLAIN.match(text, i)
        if plain:
            i = plain.end()
            continue
        c = text[i]
        if c in "\"'":
            if text.startswith(c * 3, i):
                close = text.find(c * 3, i + 3)
                i = n if close < 0 else close + 3
            else:
                found = (_BASIC if c == '"' else _LITERAL).match(text, i)
                i = found.end() if found else i + 1
            continue
        if c == "#":
            close = text.find("\n", i)
            i = n if close < 0 else close
            continue
        if c in "[{":
            stack.append(c)
            depth += 1
            key = c == "{" or (c == "[" and (len(stack) == 1 or stack[-2] == "[") and key)
        elif c in "]}":
            if stack:
                stack.pop()
            depth = max(depth - 1, 0)
            dots = 0
        elif c == "=" or c == ":":
            key, dots = False, 0
        elif c == ",":
            key, dots = bool(stack) and stack[-1] == "{", 0
        elif c == "\n" and not stack:
            key, dots = True, 0
        elif c == "." and key:
            dots += 1
        deepest = max(deepest, depth + dots)
        i += 1
    return deepest


def toml_document(data: bytes | str, *, max_nesting: int = MAX_NESTING) -> dict[str, Any]:
    """Parse a TOML document; ``tomllib.TOMLDecodeError`` (a ``ValueError``) for anything unusable: not UTF-8,
    nested deeper than ``max_nesting``, or what the parser itself refuses."""
    try:
        text = _text(data)
        if nesting(text) > max_nesting:
            raise ValueError(f"it nests deeper than {max_nesting} levels")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except (ValueError, RecursionError, MemoryError) as exc:
        words = str(exc) if isinstance(exc, ValueError) else "it is too deeply nested or too large to read"
        raise tomllib.TOMLDecodeError(words) from None


def json_document(data: bytes | str, *, max_nesting: int = MAX_NESTING) -> Any:
    """Parse a JSON document; ``ValueError`` for anything unusable (not UTF-8, too deep, invalid)."""
    try:
        text = _text(data)
        if nesting(text) > max_nesting:
            raise ValueError(f"it nests deeper than {max_nesting} levels")
        return json.loads(text)
    except (RecursionError, MemoryError):
        raise ValueError("it is too deeply nested or too large to read") from None
