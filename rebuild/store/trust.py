"""Whose the state folder is: tfrebuild trusts only what the invoking user, or the env's owner, owns.

On a shared machine another user can create ``.<name>.tfrebuild/`` beside an env in a sticky, world-writable
folder (``/tmp``, ``/scratch``) before tfrebuild ever runs there, with records naming the env's inode and a
"generation" of their own. Everything tfrebuild reads or follows in a state folder (the folder, its records, its
folders, the top of every kept tree and what a Python there runs at start-up: ``pyvenv.cfg``, ``bin``, the
site-packages folders and their ``.pth`` files) must therefore:

* belong to the user running tfrebuild or to the env's owner (root working on another user's env trusts that
  user, whose folder it is anyway), and
* not be writable by anyone else (no write bit for others; a group write bit only for the owner's own
  personal group, as on systems with user private groups), and
* not be a symbolic link (nothing is followed), nor a FIFO, socket or device.

:func:`check_state` checks a state folder before anything in it is read; every command that opens a store goes
through it (:meth:`rebuild.store.store.Store.open`), and the lock checks the folder it locks by its descriptor.
A state folder with no ``store.toml`` is adopted only when it holds tfrebuild's creation record
(:data:`CREATED`, written by :func:`make_state_dir` when tfrebuild makes the folder): an empty folder someone
made is never taken over. The pyc cache is held to the same rule (:func:`check_cache`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Callable

from rebuild.errors import UserError

#: The file tfrebuild writes into a state folder it creates (before anything else): its record of creation.
CREATED = "created"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def owners(env: Path) -> frozenset[int]:
    """The uids whose files tfrebuild trusts for ``env``: this process's, and the env's owner's (the owner of the
    folder itself: for an ``--env`` given as a link, the link's owner, who may be anyone who can write its parent,
    is not trusted)."""
    ids = {os.geteuid(), 0}  # root can change anything anyway
    try:
        ids.add(os.stat(env).st_uid)
    except OSError:
        pass
    return frozenset(ids)


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _private_group(st: os.stat_result) -> bool:
    """Whether the file's group is its owner's personal group (same name as the user, or root's group 0)."""
    if st.st_uid == 0 and st.st_gid == 0:
        return True
    try:
        import grp
        import pwd

        group = grp.getgrgid(st.st_gid)
        return group.gr_name == pwd.getpwuid(st.st_uid).pw_name and not [m for m in group.gr_mem if m != group.gr_name]
    except (KeyError, ImportError):
        return False


def writable_by_others(st: os.stat_result) -> bool:
    """Whether someone other than the owner can write the file or folder ``st`` describes."""
    if st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _private_group(st)


def problem(st: os.stat_result, trusted: frozenset[int], *, kinds: str = "df") -> str:
    """Why an entry cannot be trusted ("" when it can): a link, a special file, a stranger's, writable by others.

    ``kinds``: what it may be: ``d`` a folder, ``f`` a regular file."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISDIR(mode) and "d" not in kinds or stat.S_ISREG(mode) and "f" not in kinds:
        return "is a " + ("folder" if stat.S_ISDIR(mode) else "file") + " where tfrebuild keeps the other kind"
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return "is not a plain file or folder (a FIFO, socket or device)"
    if st.st_uid not in trusted:
        return f"belongs to {_user(st.st_uid)}"
    if writable_by_others(st):
        return f"can be written by other users (mode {stat.filemode(mode)})"
    return ""


def refusal(path: Path | str, why: str, state: Path | str, trusted: frozenset[int]) -> UserError:
    """The one refusal: which entry, whose it is, and that nothing there is read, run or swapped in."""
    who = " or ".join(_user(uid) for uid in sorted(trusted))
    return UserError(
        f"The tfrebuild state folder entry {path} {why}: tfrebuild trusts only what {who} owns and no one else "
        "can write, so it reads nothing from that state folder, runs nothing from it and swaps nothing in. "
        "Nothing was changed.",
        f"Someone else may have made or changed it. Check it, then move the state folder away "
        f"(mv {state} {state}.untrusted) and run tfrebuild again: it starts a fresh state folder of its own.",
        exit_code=1,
    )


def check(
    path: Path,
    trusted: frozenset[int],
    state: Path,
    *,
    kinds: str = "df",
    refuse: Callable[[Path | str, str, Path | str, frozenset[int]], UserError] | None = None,
) -> os.stat_result | None:
    """``lstat`` of ``path`` (``None`` when it does not exist); ``refuse`` (default :func:`refusal`) when it cannot
    be trusted."""
    refuse = refuse or refusal
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # the path given, not the state folder: said as such
            raise
        raise refuse(path, f"cannot be examined ({exc.strerror or exc})", state, trusted) from exc
    why = problem(st, trusted, kinds=kinds)
    if why:
        raise refuse(path, why, state, trusted)
    return st


def check_tree(tree: Path, trusted: frozenset[int], state: Path) -> None:
    """A kept env tree: its top folder, and what its Python reads when it starts (``pyvenv.cfg``, ``bin``,
    ``lib``, the site-packages folders and their ``.pth`` files)."""
    if check(tree, trusted, state, kinds="d") is None:
        return
    check(tree / "pyvenv.cfg", trusted, state, kinds="f")
    check(tree / "bin", trusted, state, kinds="d")
    if check(tree / "lib", trusted, state, kinds="d") is None:
        return
    try:
        pythons = [e for e in os.scandir(tree / "lib") if e.name.startswith("python")]
    except OSError:
        return
    for entry in pythons:
        if check(Path(entry.path), trusted, state, kinds="d") is None:
            continue
        site = Path(entry.path) / "site-packages"
        if check(site, trusted, state, kinds="d") is None:
            continue
        try:
            pths = [e.name for e in os.scandir(site) if e.name.endswith(".pth")]
        except OSError:
            continue
        for name in pths:
            check(site / name, trusted, state, kinds="f")


def check_state(state: Path, env: Path) -> None:
    """Refuse (before anything in it is read) a state folder that is not wholly the user's or the env owner's.

    Walks the state folder without following links; the trees kept in it (``generations/<N>/env``,
    ``staging/<id>/env``) are checked by :func:`check_tree`, folders being deleted (``trash/<id>``) at their top.
    """
    trusted = owners(env)
    if check(state, trusted, state, kinds="d") is None:
        return
    for top, dirs, files in os.walk(state, followlinks=False):
        rel = Path(top).relative_to(state).parts
        for name in files:
            check(Path(top) / name, trusted, state)
        for name in list(dirs):
            path = Path(top) / name
            check(path, trusted, state)
            if len(rel) == 2 and rel[0] in ("generations", "staging") and name == "env":
                check_tree(path, trusted, state)  # a kept or staged tree: what its Python reads at start-up
                dirs.remove(name)
            elif rel[:1] == ("trash",) or len(rel) >= 2 and rel[0] == "staging":
                dirs.remove(name)  # folders being deleted, a build's other folders: removed, never read


def created_here(state: Path) -> bool:
    """Whether ``state`` holds tfrebuild's record of creating it (or is managed: a ``store.toml``)."""
    return any(os.path.isfile(state / name) and not os.path.islink(state / name) for name in ("store.toml", CREATED))


def not_created_error(state: Path) -> UserError:
    import shlex

    try:
        names = sorted(os.listdir(state))
    except OSError:
        names = []
    held = f" It holds: {', '.join(names[:6])}{' …' if len(names) > 6 else ''}." if names else " It is empty."
    aside = shlex.quote(f"{state}.unknown")
    return UserError(
        f"The folder {state} is where tfrebuild keeps this environment's state, but tfrebuild did not create it "
        "(it holds no record of tfrebuild making it): tfrebuild never adopts a state folder someone else made. "
        f"Nothing was changed.{held}",
        "If it is yours (an older tfrebuild that stopped during its first run leaves one like this), set it aside "
        f"and run the command again: `mv -- {shlex.quote(str(state))} {aside}` (nothing in it is deleted; "
        "tfrebuild then makes its own state folder).",
        exit_code=1,
    )


def make_state_dir(state: Path, env: Path) -> bool:
    """Create the state folder (mode 0755) with its creation record; ``False`` when it was there already
    (then it must be trusted: :func:`check_state`, and made by tfrebuild: :func:`created_here`)."""
    state.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(state, 0o755)
    except FileExistsError:
        check_state(state, env)
        if not created_here(state):
            raise not_created_error(state) from None
        return False
    fd = os.open(state / CREATED, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644)
    try:
        os.write(fd, f"uid = {os.geteuid()}\nenv = {str(env)!r}\n".encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    return True


def check_fd(fd: int, path: Path, env: Path) -> None:
    """The state folder opened as ``fd`` (the one the lock holds) is trusted: checked by its descriptor, so a
    folder swapped in after :func:`check_state` is caught too."""
    trusted = owners(env)
    why = problem(os.fstat(fd), trusted, kinds="d")
    if why:
        raise refusal(path, why, path, trusted)


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds (nothing when it cannot be read)."""
    try:
        return [Path(e.path) for e in os.scandir(folder)]
    except OSError:
        return []


def check_cache(cache: Path) -> None:
    """The pyc cache and its folders (the magic-tag folders and their buckets) are this user's and no one
    else can write them; a cache that does not exist yet is fine."""
    trusted = frozenset({os.geteuid(), 0})

    def refuse(path: Path | str, why: str, _state: Path | str, _trusted: frozenset[int]) -> UserError:
        return UserError(
            f"The pyc cache entry {path} {why}: tfrebuild links nothing from a cache someone else can change "
            "(a planted pyc would run in the new environment). Nothing was built or changed.",
            f"Move the cache away (mv {cache} {cache}.untrusted), point TFREBUILD_PYC_CACHE at a folder of your "
            "own, or set TFREBUILD_PYC_CACHE=off (uv then compiles).",
            exit_code=1,
        )

    if check(cache, trusted, cache, kinds="d", refuse=refuse) is None:
        return
    for tag in _entries(cache):
        check(tag, trusted, cache, refuse=refuse)
        if not tag.is_dir() or tag.is_symlink():
            continue
        for bucket in _entries(tag):
            check(bucket, trusted, cache, refuse=refuse)
