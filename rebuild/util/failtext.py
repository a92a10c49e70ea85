"""What a failed check or a failed build shows on screen: the lines that name the cause, not the first
or last few thousand characters.

A Python traceback lists its frames outermost first; the line that raised is the last frame, followed by
the exception. :func:`condense` keeps that end (the innermost frames and the exception), says how many
frames it left out, and never cuts a line in the middle of a word. The whole text goes to the operation's
log (:func:`log_checks`), which the message names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from rebuild.util.proc import redact_line

#: Lines a failure shows on screen, all failed checks together (each check gets its share).
SCREEN_LINES = 40
#: Characters of one line shown on screen (a longer line is cut at a space and marked with "…").
LINE_CHARS = 400

_TRACEBACK = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "')
_NOISE = re.compile(r'File "(?:<frozen [^>]*>|<string>|[^"]*/importlib/__init__\.py)"')
_SECTION = re.compile(r"^import \S+ failed:$")


def clip_line(line: str, limit: int = LINE_CHARS) -> str:
    """``line`` up to ``limit`` characters, cut at a space (never in a word), "…" marking the cut."""
    if len(line) <= limit:
        return line
    cut = line[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + " …"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _frames(lines: list[str], base: int = 0) -> tuple[list[list[str]], list[str]]:
    """A traceback's body (the lines after its header, indented ``base``) as frames (each a list of lines)
    and the exception lines."""
    frames: list[list[str]] = []
    rest: list[str] = []
    for n, line in enumerate(lines):
        if _FRAME.match(line) and _indent(line) > base:
            frames.append([line])
        elif frames and _indent(line) > base and line.strip():
            frames[-1].append(line)
        else:
            rest = lines[n:]
            break
    return frames, rest


def _condense_traceback(before: list[str], header: str, body: list[str], budget: int) -> list[str]:
    frames, exception = _frames(body, _indent(header))
    # the import machinery's own frames (``<frozen importlib._bootstrap>``) say nothing about the cause
    frames = [f for f in frames if not _NOISE.search(f[0])] or frames
    exception = exception[: max(2, budget // 3)] + (["…"] if len(exception) > max(2, budget // 3) else [])
    head = before[-2:]  # what the program printed just before it failed
    room = budget - len(head) - 2 - len(exception)
    kept: list[list[str]] = []
    for frame in reversed(frames):  # innermost first: the package's own line and what raised
        frame = frame[:3]
        if kept and room - len(frame) < 0:
            break
        kept.insert(0, frame)
        room -= len(frame)
    out = head + [header]
    if len(kept) < len(frames):
        out.append(
            " " * (_indent(header) + 2)
            + f"… {len(frames) - len(kept)} outer frame(s) left out (the whole traceback is in the log)"
        )
    for frame in kept:
        out += frame
    return out + exception


def _condense_one(text: str, budget: int) -> str:
    lines = text.rstrip().splitlines()
    start = max((n for n, line in enumerate(lines) if line.strip() == _TRACEBACK), default=-1)
    if start >= 0 and (len(lines) > budget or start > 0):
        header = lines[:1] if _SECTION.match(lines[0] if lines else "") else []
        before = lines[len(header) : start]
        lines = header + _condense_traceback(before, lines[start], lines[start + 1 :], budget - len(header))
    elif len(lines) > budget:
        left = len(lines) - (budget - 1)
        lines = [f"… {left} earlier line(s) left out (the whole output is in the log)"] + lines[left:]
    return "\n".join(clip_line(line) for line in lines)


def condense(text: str, budget: int = SCREEN_LINES) -> str:
    """The part of a check's output that shows the cause, in about ``budget`` lines.

    The output of the import check holds one ``import X failed:`` section per failed import; each gets its
    share. A traceback keeps its innermost frames and the exception; other output keeps its last lines.
    """
    lines = (text or "").strip().splitlines()
    starts = [n for n, line in enumerate(lines) if _SECTION.match(line)]
    if not starts or starts[0] != 0:
        return _condense_one("\n".join(lines), budget)
    sections = ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)], strict=True)]
    share = max(6, budget // len(sections))
    shown = sections[: max(1, budget // 6)]
    out = [_condense_one(s, share) for s in shown]
    if len(shown) < len(sections):
        out.append(f"… {len(sections) - len(shown)} more failed import(s) in the log")
    return "\n".join(out)


def check_details(checks: Iterable[Any], budget: int = SCREEN_LINES) -> str:  # smoke.Check (core) items
    """The screen text of failed checks: ``[name] (seconds)`` and each one's condensed output."""
    checks = list(checks)
    share = max(8, budget // max(1, len(checks)))
    return "\n\n".join(f"[{c.name}] ({c.seconds:.1f}s)\n{condense(c.output, share)}" for c in checks)


def log_checks(log: Path | str | None, checks: Iterable[Any], where: str) -> bool:
    """Append the whole output of each failed check to ``log`` (created 0600, never through a link,
    credentials redacted). False when there is no log or it cannot be written."""
    if not log or not str(log).strip():
        return False
    path = Path(log)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            for c in checks:
                fh.write(redact_line(f"[check failed {where}] {c.name} ({c.seconds:.1f}s)\n"))
                fh.write(redact_line((c.output or "").rstrip() + "\n\n"))
    except OSError:
        return False
    return True


_UV_ERROR = re.compile(r"^(?:\s*[×x] |error: )")
_UV_CAUSE = re.compile(r"^\s*(?:cause:|[├╰│]─▶)")


def uv_error(stderr: str, budget: int = 30) -> str:
    """uv's failure as shown on screen: its first error line first (``error: Failed to build `pyyaml==5.4.1```)
    with its ``cause:`` lines, then the rest condensed (a build backend's traceback keeps its innermost
    frames and the exception), whole lines only."""
    lines = [line.rstrip() for line in (stderr or "").strip().splitlines() if line.strip()]
    first = next((n for n, line in enumerate(lines) if _UV_ERROR.match(line)), None)
    if first is None:
        return _condense_one("\n".join(lines), budget)
    end = first + 1
    while end < len(lines) and _UV_CAUSE.match(lines[end]):
        end += 1
    lead, rest = lines[first:end], lines[:first] + lines[end:]
    text = "\n".join(clip_line(line) for line in lead)
    if rest:
        text += "\n" + _condense_one("\n".join(rest), max(8, budget - len(lead)))
    return text


_FAILED_PACKAGE = re.compile(r"Failed to (?:build|download|prepare distributions|install)[^`]*`([^`]+)`")


_FAILED_BUILD = re.compile(r"Failed to build[^`\n]*`([^`]+)`")


def failed_build(stderr: str) -> str:
    """The package uv names in its first "Failed to build `pkg==v`" line ("" when no build failed: a failed
    download or install is not a package that does not build for this Python)."""
    found = _FAILED_BUILD.search(stderr or "")
    return found.group(1) if found else ""


def failed_package(stderr: str) -> str:
    """The package uv names in its first "Failed to build `pkg==v`" line ("" when it names none)."""
    found = _FAILED_PACKAGE.search(stderr or "")
    return found.group(1) if found else ""
