"""The state folder's logs: one per operation, the newest kept."""

from __future__ import annotations

import os
from pathlib import Path


KEEP_LOGS = 20  # logs kept per state folder, the newest (the one being written included)


def prune_logs(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``*.log`` files of ``folder`` (plain files only, never followed)."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".log") and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    entries.sort(key=lambda e: (e.stat(follow_symlinks=False).st_mtime_ns, e.name), reverse=True)
    removed = []
    for entry in entries[max(keep, 0) :]:
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed
