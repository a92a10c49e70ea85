"""Where an env's state folder is: one per env path (symlinks resolved, dots kept), and the move of a folder
of the old naming to its owner's name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from rebuild.errors import UserError
from rebuild.store.records import read_toml
from rebuild.store.trees import abs_path, key
from rebuild.util import fs


def env_path(env: Path | str) -> Path:
    """The environment's path as the store knows it: absolute, every symlink resolved.

    An env reached through a symlink is the env its real path names: one state folder, one history.
    """
    return Path(os.path.realpath(abs_path(env)))


def state_dir(env: Path) -> Path:
    """The state folder of the environment at ``env``: ``E.parent/.<name>.tfrebuild``, ``E`` resolved.

    The name is kept whole (``.venv`` → ``..venv.tfrebuild``), so two envs of one folder never share one.
    """
    env = env_path(env)
    return env.parent / f".{env.name}.tfrebuild"


def legacy_state_dir(env: Path) -> Path:
    """Where tfrebuild before issue 14 kept the state: leading dots stripped (``.venv`` and ``venv`` collided)."""
    env = env_path(env)
    return env.parent / f".{env.name.lstrip('.')}.tfrebuild"


def _parent_key(env: Path) -> tuple[int, int] | None:
    try:
        return key(os.stat(env.parent))
    except OSError:
        return None


def _recorded_env(state: Path) -> str | None:
    """``env`` of ``state/store.toml`` (``None`` when unreadable); never follows a symlinked state folder."""
    if os.path.islink(state) or not os.path.isfile(state / "store.toml"):
        return None
    from rebuild.store import trust

    try:
        trust.check_state(state, state.parent)  # a stranger's folder is never read (nor moved)
    except UserError:
        return None
    try:
        recorded = read_toml(state / "store.toml", "state file").get("env")
    except (UserError, OSError):
        return None
    return recorded if isinstance(recorded, str) else None


def _move_state(old: Path, new: Path) -> None:
    """Rename a state folder of the old naming to its own name (not while an older tfrebuild holds its lock)."""
    try:
        fd = os.open(old / "lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        raise UserError(
            f"Cannot move the tfrebuild state folder {old} to {new}: {exc.strerror or exc}",
            hint=f"Rename it by hand (mv {old} {new}) when no tfrebuild runs.",
        ) from exc
    try:
        if fd is not None:
            try:
                _try_flock(fd)
            except BlockingIOError:
                raise UserError(
                    f"Another tfrebuild is working with the state folder {old}",
                    hint=f"Wait for it to finish; tfrebuild then moves it to {new}.",
                    exit_code=1,
                ) from None
        try:
            os.rename(old, new)
        except OSError as exc:
            raise UserError(
                f"Cannot move the tfrebuild state folder {old} to {new}: {exc.strerror or exc}",
                hint=f"Rename it by hand (mv {old} {new}) when no tfrebuild runs.",
            ) from exc
        fs.fsync_dir(new.parent)
        _rebase_journal(new / "journal.json", old, new)
    finally:
        if fd is not None:
            os.close(fd)


def _rebase_journal(path: Path, old: Path, new: Path) -> None:
    """An interrupted operation's journal names paths in the folder that moved: point them at its new name."""
    if os.path.islink(path) or not path.is_file():
        return
    try:
        data = fs.json_document(fs.read_document(path))
    except (OSError, ValueError):
        return  # damaged: recovery words it

    def rebase(value: Any) -> Any:
        if isinstance(value, str) and (value == str(old) or value.startswith(str(old) + os.sep)):
            return str(new) + value[len(str(old)) :]
        if isinstance(value, dict):
            return {k: rebase(v) for k, v in value.items()}
        return value

    fs.atomic_write(path, json.dumps(rebase(data), indent=2, sort_keys=True).encode(), mode=0o644)


def _try_flock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _migrate_legacy(env: Path) -> None:
    """State folders of the old naming move to their own names when their ``store.toml`` says whose they are.

    ``.venv``'s state used to be ``.venv.tfrebuild``, which is now ``venv``'s: it moves to ``..venv.tfrebuild``
    when opened for either env (its record names ``.venv``). A folder whose record names neither is left alone
    (the owner check refuses it).
    """
    env = env_path(env)
    for candidate in {state_dir(env), legacy_state_dir(env)}:
        recorded = _recorded_env(candidate)
        if recorded is None or os.path.realpath(recorded) == str(env) and candidate == state_dir(env):
            continue
        owner = env_path(recorded)
        if (
            owner.parent == env.parent
            and legacy_state_dir(owner) == candidate
            and candidate != state_dir(owner)
            and not os.path.lexists(state_dir(owner))
        ):
            _move_state(candidate, state_dir(owner))
