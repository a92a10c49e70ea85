"""The pieces every renderer of :mod:`rebuild.cli.render` and :mod:`rebuild.cli.render_build` is made of: a result as a
``--json`` document, a table, an aligned grid, the rows of package changes and of checks, and the words for a swap.
Split from :mod:`rebuild.cli.render` (same code).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rebuild.cli.terminal import Terminal
from rebuild.util import proc


def jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # a field marked internal (metadata {"internal": True}) is for decisions in code, never written
        return {
            f.name: jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(document: dict) -> None:
    # Credentials in any URL of any command's document are masked here, whatever produced them.
    sys.stdout.write(proc.redact_line(json.dumps(jsonable(document), indent=2, sort_keys=False)) + "\n")
    sys.stdout.flush()


def plain_json(result, as_json: bool) -> bool:
    """With --json, print ``result`` as the plain document: ``ok`` and its fields (True: nothing more to show)."""
    if as_json:
        emit_json({"ok": True, **jsonable(result)})
    return as_json


def text_or_plain_json(text: Callable[[Terminal, Any], None]) -> Callable[[Terminal, Any, bool], None]:
    """A command's renderer from the one of its text: with --json, the result's plain document instead."""

    @functools.wraps(text)
    def show(term: Terminal, result: Any, as_json: bool) -> None:
        if not plain_json(result, as_json):
            text(term, result)

    return show


def print_notes(console, items, indent: str = "") -> None:
    """One ``note:`` line for each of ``items`` on ``console`` (the terminal's out or err)."""
    for note in items:
        console.print(f"{indent}note: {note}", markup=False)


def swapped(method: str) -> str:
    """How the swap ran, as the user should read it (the store reports the method that really ran)."""
    if method == "renameat2":
        return "Swapped in atomically (renameat2 exchange)"
    if method == "rename":
        return "Swapped in by three renames (no atomic exchange on this filesystem)"
    return "Swapped in"


def table(term: Terminal, title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*[str(c) for c in row])
    term.out.print(t)


def _grid(term: Terminal, rows: list[list[str]], right: tuple[int, ...] = ()) -> None:
    """Aligned columns without borders, indented under the line above; no line ends in spaces (a rich grid pads
    every cell of the last column to its widest, which a pipe or a log keeps)."""
    if not rows:
        return
    from rich.cells import cell_len

    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(cell_len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        padded = []
        for i, cell in enumerate(row):
            gap = " " * (widths[i] - cell_len(cell))
            padded.append(gap + cell if i in right else cell + gap)
        term.out.print("  " + " ".join(padded).rstrip(), markup=False, highlight=False, soft_wrap=True)


def _changes(term: Terminal, changes) -> None:
    """One row per change: mark (``*`` = requested), name, versions, reason."""
    arrows = {"upgrade": "↑", "downgrade": "↓", "add": "+", "remove": "-"}
    rows = []
    for c in changes:
        versions = f"{c.old} → {c.new}" if c.old and c.new else (c.new or c.old or "")
        name = f"{c.replaces} → {c.name}" if getattr(c, "replaces", "") else c.name
        rows.append(
            [arrows[c.kind] + ("*" if c.requested else " "), name, versions, f"({c.reason})" if c.reason else ""]
        )
    _grid(term, rows)


def _checks(term: Terminal, checks) -> None:
    _grid(term, [["ok" if c.ok else "FAIL", c.name, f"{c.seconds:.2f}s"] for c in checks], right=(2,))
