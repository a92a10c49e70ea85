"""Disk accounting for generations: which bytes deleting a tree would really free.

Generations share files: uv hard-links packages from its cache, and successive
generations link the same files.  A file counts towards a tree only when every hard
link to it lies inside that tree.  Sizes are allocated blocks (like ``du``), falling
back to ``st_size`` where blocks are unknown; symlinks count as themselves.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rebuild.store.trees import key, walk_lstat


def _size(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def exclusive_usage(paths: list[Path]) -> tuple[dict[Path, int], int]:
    """Per tree, the bytes only that tree holds (freed if it is deleted); and the total counted once.

    A file hard-linked between generations, or into uv's cache, is shared: it is in
    no tree's exclusive figure but counts once in the total.
    """
    owners: dict[tuple[int, int], set[int]] = {}
    sizes: dict[tuple[int, int], int] = {}
    seen_links: dict[tuple[int, int], int] = {}
    nlinks: dict[tuple[int, int], int] = {}
    for i, path in enumerate(paths):
        for st in walk_lstat(Path(path)):
            k = key(st)
            owners.setdefault(k, set()).add(i)
            sizes[k] = _size(st)
            seen_links[k] = seen_links.get(k, 0) + 1
            nlinks[k] = st.st_nlink if not stat.S_ISDIR(st.st_mode) else 1
    alone = {Path(p): 0 for p in paths}
    for k, who in owners.items():
        # Only in one tree, and no hard link outside the trees (uv's cache): deleting it frees the space.
        if len(who) == 1 and seen_links[k] >= nlinks[k]:
            alone[Path(paths[next(iter(who))])] += sizes[k]
    return alone, sum(sizes.values())


def freeable_bytes(root: Path) -> int:
    """Bytes that deleting ``root`` would free: files whose every hard link is inside it."""
    return exclusive_usage([root])[0][Path(root)]
