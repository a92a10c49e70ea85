"""Signals that tell the truth: SIGTERM as an interrupt, signals deferred in critical sections.

* :func:`install` (the CLI calls it) makes SIGTERM raise :class:`Terminated`, a
  ``KeyboardInterrupt``, so every cleanup path that handles Ctrl-C handles SIGTERM too.
* :func:`deferred` is a critical section: a SIGINT or SIGTERM that arrives inside it is
  held back and delivered (through the handler that was in place) when the outermost
  section ends, so the bookkeeping after a swap is always finished first.  An exception
  leaving the section wins over a held-back signal.
* A signal whose exception Python swallowed (it landed in a finaliser or an at-fork hook, such
  as ``logging``'s, while a child process was being started: "Exception ignored in …") is
  noticed through :data:`sys.unraisablehook` and raised again at the next :func:`checkpoint`
  (the process runner, every stage, the entry of a critical section), so it still ends the command.
* :func:`changed` records what a command has changed so far (``"<env> is on generation 3 …"``);
  the CLI prints it when an interrupt ends the command, instead of "nothing was changed".
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C."""


# Module state, on purpose (the one place in rebuild/ outside the CLI): signal dispositions and the handler are
# process-wide, so the critical sections' depth, the held-back signals and the saved handlers are too. The record
# of changes belongs with them: it is read by the CLI after a KeyboardInterrupt has unwound whatever stack frame it
# landed in (the store's swap, the transaction, gc), so no object owned by a caller below the CLI survives to carry
# it, and passing a recorder down to every store operation would put it in every signature for this one message.
# Each command runs in its own process, so the record starts empty (docs/design.md, "Interrupts").
_depth = 0
_pending: list[int] = []
_saved: dict[int, object] = {}
_changes: dict[str, str] = {}


_swallowed: list[int] = []  # signals whose exception Python reported as unraisable and dropped
_previous_hook = sys.unraisablehook


def _raise(signum: int, frame: object) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """A KeyboardInterrupt lost in a finaliser or at-fork hook is kept for :func:`checkpoint`."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        _swallowed.append(signal.SIGTERM if isinstance(info.exc_value, Terminated) else signal.SIGINT)
        return  # the traceback would only confuse: the signal is delivered at the next checkpoint
    _previous_hook(info)


def interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt behind ``exc``, or ``None``. Python 3.11 wraps an exception raised while a class is created
    (``__set_name__``: a Ctrl-C landing while an import builds a dataclass) in a ``RuntimeError``; an error raised
    while an interrupt unwinds has it as its context. Either is the user's Ctrl-C, not a crash."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def install() -> None:
    """SIGTERM raises :class:`Terminated` (main thread only; elsewhere nothing happens)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)
        sys.unraisablehook = _unraisable


def checkpoint() -> None:
    """Raise a signal that arrived but whose exception was swallowed (see the module docstring)."""
    if _swallowed and _depth == 0:
        signum = _swallowed[0]
        _swallowed.clear()
        _raise(signum, None)


def _hold(signum: int, frame: object) -> None:
    _pending.append(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section: SIGINT/SIGTERM are delivered when the outermost one ends (re-entrant)."""
    global _depth
    main = threading.current_thread() is threading.main_thread()
    checkpoint()  # a signal that arrived before the section but was swallowed: do not enter it
    if main and _depth == 0:
        for sig in HANDLED:
            _saved[sig] = signal.signal(sig, _hold)
    _depth += 1
    try:
        yield
    except BaseException:
        if _depth == 1:
            _pending.clear()  # the exception ends the command anyway
        raise
    finally:
        _depth -= 1
        if main and _depth == 0:
            for saved, handler in _saved.items():
                signal.signal(saved, handler)  # type: ignore[arg-type]
            _saved.clear()
    if _depth == 0 and _pending:
        signum = _pending[0]
        _pending.clear()
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


def changed(key: str, text: str) -> None:
    """Record what ``key`` (an env path) is like now; the latest text per key is kept."""
    _changes[key] = text


def changes() -> list[str]:
    """What was recorded with :func:`changed`, in order."""
    return list(_changes.values())


def reset() -> None:
    _changes.clear()
    _swallowed.clear()
