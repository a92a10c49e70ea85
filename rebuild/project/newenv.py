"""What the project managers' builds share: where and how the new env is made, and how uv's failures read.

:mod:`rebuild.project.uvproject`, :mod:`rebuild.project.poetryproject` and :mod:`rebuild.project.requirements`
each build ``staging/env`` from the project's new lock with their own tool; the inputs are the same
(:class:`NewEnv`, from :class:`rebuild.core.projectstep.ProjectStep`), and so are the words of a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import UserError
from rebuild.util import uv as uvcmd


@dataclass(frozen=True)
class NewEnv:
    """Where the new env is built (``staging/env``), on which interpreter, and how."""

    staging: Path
    python: Path
    prompt: str
    offline: bool
    compile_bytecode: bool
    log: Path | None

    @property
    def env(self) -> Path:
        return self.staging / "env"


def uv_venv(new: NewEnv) -> Path:
    """An empty relocatable venv at ``new.env`` (uv's configuration files ignored); raises ``uvcmd.UvFailed``."""
    new.staging.mkdir(parents=True, exist_ok=True)
    prompt = ["--prompt", new.prompt] if new.prompt else []
    uvcmd.run(
        ["venv", "--no-config", "--relocatable", "--python", str(new.python), "--quiet", *prompt, str(new.env)],
        log=new.log,
        what="uv venv",
    )
    return new.env


def uv_says(exc: uvcmd.UvFailed) -> str:
    """The details of a failed uv command: the end of what it wrote."""
    return "uv says:\n" + exc.result.stderr.strip()[-3000:]


def failed(what: str, details: str, hint: str, *, build: bool = False) -> UserError:
    """``what`` failed and nothing was changed; ``build``: the new env could not be built (the target search
    reads it and tries another target)."""
    error = UserError(f"{what}; nothing was changed.", hint, exit_code=1, details=details)
    error.build_failed = build
    return error


def build_failed(exc: uvcmd.UvFailed, source: str, log: Path | None) -> UserError:
    """uv could not build the new env from ``source`` (the project's new lock, a recompiled file)."""
    return failed(
        f"{exc.what} could not build the new environment from {source}",
        uv_says(exc),
        f"uv's full output is in {log}." if log else "Run again to see uv's output.",
        build=True,
    )


def uv_error(message: str, exc: uvcmd.UvFailed, log: Path | None) -> UserError:
    """``message`` with uv's words as details and its log as the hint (a failure outside the build)."""
    return UserError(message, f"uv's full output is in {log}." if log else "", exit_code=1, details=uv_says(exc))
