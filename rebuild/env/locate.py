"""Find the environment the user means, before anything runs inside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import UserError

_PYTHON_NAMES = ("bin/python", "bin/python3", "Scripts/python.exe")


@dataclass(frozen=True)
class EnvLocation:
    """An environment's folder and the interpreter that runs it.

    ``bare`` is true when the user named an interpreter rather than an
    environment folder (a system or pyenv Python with no venv around it).
    """

    path: Path
    python: Path
    bare: bool = False


def default_env_path() -> Path:
    """``$VIRTUAL_ENV`` when set, else ``./.venv``."""
    active = os.environ.get("VIRTUAL_ENV")
    return Path(active) if active else Path.cwd() / ".venv"


def env_python(path: Path) -> Path | None:
    for name in _PYTHON_NAMES:
        candidate = path / name
        try:
            if candidate.exists():
                return candidate
        except PermissionError:
            raise UserError(
                f"{candidate} cannot be read by this user: permission denied.",
                "Run tfrebuild as the environment's owner, or give read access to it and to the "
                "interpreter it links to.",
            ) from None
    return None


def check_path(target: str | os.PathLike) -> None:
    """Refuse a path with a line break or NUL: it would break every file that names it (requirements, logs)."""
    text = os.fspath(target)
    if any(c in text for c in "\n\r\x00"):
        shown = text.encode("unicode_escape").decode("ascii")
        raise UserError(
            f"The path '{shown[:80]}{'...' if len(shown) > 80 else ''}' holds a line break or NUL "
            "character; tfrebuild does not use such paths.",
            "Rename the folder, or choose another path.",
        )


def locate(path: str | os.PathLike | None) -> EnvLocation:
    """Resolve ``--env`` (or the default) to an :class:`EnvLocation`.

    Raises :class:`UserError` when the path is missing or holds no interpreter.
    """
    explicit = path is not None
    target = Path(path) if path is not None else default_env_path()
    check_path(target)
    target = Path(os.path.abspath(os.path.expanduser(target)))
    if not target.exists():
        if explicit:
            raise UserError(
                f"There is no environment at {target}: the path does not exist.",
                "Check the spelling, or pass the folder of an existing venv/conda env with --env PATH.",
            )
        raise UserError(
            f"No environment given and none found at the default {target}.",
            "Activate the environment (so $VIRTUAL_ENV is set), run from the folder holding .venv, or pass --env PATH. "
            "With no TensorFlow env at all, `tfrebuild upgrade --yes` builds the bundled example env in ./.venv "
            "and upgrades it.",
        )
    if target.is_file():
        if not os.access(target, os.X_OK):
            raise UserError(
                f"{target} is a file but not an executable interpreter.",
                "Pass an environment folder or a python executable with --env.",
            )
        home = target.parent.parent
        if target.parent.name in ("bin", "Scripts") and (
            (home / "pyvenv.cfg").is_file() or (home / "conda-meta").is_dir()
        ):
            return EnvLocation(path=home, python=target)  # venv/bin/python: the interpreter of that env
        return EnvLocation(path=home, python=target, bare=True)
    python = env_python(target)
    if python is None:
        raise UserError(
            f"{target} is not a Python environment: it has no bin/python.",
            "Pass the folder that contains bin/python (a venv, virtualenv, uv or conda env), or the interpreter itself.",
        )
    return EnvLocation(path=target, python=python)
