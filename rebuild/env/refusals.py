"""Why an env cannot be replaced in place, known before anything is built.

One predicate for every place that asks: ``upgrade`` before it plans and builds, and again right before
the swap. Each refusal is a :class:`UserError` naming the problem and the fix; nothing has been changed.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from rebuild.env import fsguard, inuse
from rebuild.errors import UserError


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def in_use(env: Path, users: list[inuse.User]) -> UserError:
    """The refusal for processes running from ``env``."""
    listing = "; ".join(f"pid {u.pid} ({u.why}): {u.command[:120]}" for u in users[:5])
    return UserError(
        f"{len(users)} running process(es) use {env}: {listing}.",
        "Stop them first (a running kernel would import half old, half new modules), or pass --force to swap anyway.",
        exit_code=1,
    )


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def mount_point(env: Path) -> UserError | None:
    """The refusal for an env folder that is a mount point (or on another filesystem than its parent): it cannot
    be renamed. ``plan`` says it too."""
    env = Path(os.path.abspath(env))
    try:
        st, parent_st = os.stat(env), os.stat(env.parent)
    except OSError:
        return None
    if fsguard.is_mount_point(env) or st.st_dev != parent_st.st_dev:
        return fsguard.mount_point_error(env)
    return None


def refusals(env: Path, *, force: bool = False) -> list[UserError]:
    """What stops a swap of ``env`` (a folder that exists): a mount point, an unwritable parent or env,
    an env owned by another user when this process cannot give the new tree that owner, processes
    running from it (unless ``force``)."""
    env = Path(os.path.abspath(env))
    parent = env.parent
    out: list[UserError] = []
    try:
        st, parent_st = os.stat(env), os.stat(parent)
    except OSError as exc:
        return [UserError(f"Cannot read {env}: {exc.strerror}.", "Check the path and its permissions.")]
    mounted = mount_point(env)
    if mounted is not None:
        out.append(mounted)
    me = os.geteuid()
    if st.st_uid != me and me != 0:
        owner = _user(st.st_uid)
        out.append(
            UserError(
                f"{env} belongs to {owner}, and this process ({_user(me)}) cannot give the new env that owner.",
                f"Run tfrebuild as {owner} (e.g. `sudo -u {owner} tfrebuild upgrade --env {env}`), or as root, "
                "which keeps the owner. Nothing was changed.",
                exit_code=1,
            )
        )
    elif _read_only(parent):
        out.append(
            UserError(
                f"{env} is on a read-only filesystem: tfrebuild cannot build the new env beside it or swap it.",
                "Remount the filesystem read-write (or copy the env to a writable place and upgrade it there). "
                "Nothing was changed.",
                exit_code=1,
            )
        )
    elif not os.access(parent, os.W_OK | os.X_OK):
        out.append(
            UserError(
                f"The folder {parent} that holds {env} is not writable by {_user(me)}.",
                "tfrebuild builds the new env beside the old one and keeps its state there "
                f"({parent}/.{env.name}.tfrebuild); give write access to {parent}, or run as its owner "
                f"({_user(parent_st.st_uid)}). Nothing was changed.",
                exit_code=1,
            )
        )
    elif not os.access(env, os.W_OK | os.X_OK):
        out.append(
            UserError(
                f"{env} is not writable by {_user(me)}; the swap moves it into tfrebuild's generations.",
                f"Give write access to {env} (or run as its owner, {_user(st.st_uid)}). Nothing was changed.",
                exit_code=1,
            )
        )
    if not force:
        users = inuse.processes_using(env)
        if users:
            out.append(in_use(env, users))
    return out


def refuse(env: Path, *, force: bool = False) -> None:
    """Raise the first refusal (the others go into its details)."""
    found = refusals(env, force=force)
    if found:
        first = found[0]
        more = "\n".join(f"also: {e.message} {e.hint}" for e in found[1:])
        if more:
            first.details = (first.details + "\n" + more).strip()
        raise first
