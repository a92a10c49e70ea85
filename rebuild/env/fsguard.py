"""What the filesystem must allow before tfrebuild builds: no mount point at the env, the env's owner kept.

* A folder that is itself a mount point (a bind mount on the same filesystem included,
  which ``st_dev`` cannot tell) cannot be renamed: the swap would fail with ``EBUSY``
  after a full build.  :func:`refuse_mount_point` says so before anything is built.
* ``root`` working on another user's env would leave a root-owned tree (and state
  folder) that the owner's ``pip install`` cannot write.  :func:`keep_owner` gives a
  tree the env's owner and group, links included (``lchown``, never followed).
"""

from __future__ import annotations

import os
from pathlib import Path

from rebuild.errors import UserError


def _unescape(field: str) -> str:
    """``/proc/self/mountinfo`` escapes space, tab, newline and backslash as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace (empty where ``/proc`` is absent)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(_unescape(fields[4]))
    return points


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` itself is mounted on (any kind of mount, a same-filesystem bind mount included)."""
    path = Path(os.path.abspath(path))
    try:
        if os.path.ismount(path):
            return True
    except OSError:
        pass
    real = os.path.realpath(path)
    points = mount_points()
    return str(path) in points or real in points


def mount_point_error(env: Path) -> UserError:
    """The refusal for an env folder that is a mount point."""
    return UserError(
        f"{env} is a mount point (e.g. a bind mount): tfrebuild cannot swap it, because a mount point cannot "
        "be renamed. Nothing was built or changed.",
        "tfrebuild swaps environments by renaming beside them. Point --env at the folder the mount comes from "
        "(see `findmnt " + str(env) + "`), or unmount it and keep the env in a plain folder.",
        exit_code=1,
    )


def refuse_mount_point(env: Path) -> None:
    """:class:`UserError` when the env folder is a mount point: it could not be swapped."""
    if os.path.isdir(env) and not os.path.islink(env) and is_mount_point(env):
        raise mount_point_error(env)


def foreign_owner(env: Path) -> tuple[int, int] | None:
    """``(uid, gid)`` of the env when this process is root and the env belongs to someone else, else ``None``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        st = os.lstat(env)
    except OSError:
        return None
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def keep_owner(tree: Path, owner: tuple[int, int], *, skip=lambda path: False) -> None:
    """``lchown`` every entry of ``tree`` (itself included) to ``owner``; symlinks are changed, never followed.

    ``skip(path)`` prunes a folder (e.g. parked generations, which keep their own owner).
    """
    uid, gid = owner
    os.lchown(tree, uid, gid)
    for root, dirs, files in os.walk(tree, followlinks=False):
        for name in list(dirs):
            path = os.path.join(root, name)
            if skip(path):
                dirs.remove(name)
                continue
            os.lchown(path, uid, gid)
        for name in files:
            os.lchown(os.path.join(root, name), uid, gid)
