"""The one place that runs uv.

Every uv invocation goes through :func:`run`, which finds the binary that the
``uv`` PyPI package ships, forbids interpreter downloads unless the caller
allows them, captures output (optionally appending it to a per-operation log
file) and turns a failure into a :class:`UvFailed` carrying uv's own words.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rebuild.errors import UserError


def uv_bin() -> str:
    """Path of the uv executable shipped by the ``uv`` package."""
    override = os.environ.get("TFREBUILD_UV")
    if override:
        return override
    try:
        import uv  # the PyPI package: a thin shim around the binary
    except ImportError as exc:  # pragma: no cover - uv is a hard dependency
        raise UserError("uv is not installed next to tfrebuild.", "Reinstall with: pip install tfrebuild") from exc
    return uv.find_uv_bin()


@dataclass
class UvResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class UvFailed(Exception):
    """uv exited non-zero. ``stderr`` holds uv's explanation verbatim."""

    result: UvResult
    log: Path | None = None
    what: str = field(default="uv")

    def __str__(self) -> str:
        return f"{self.what} failed (exit {self.result.returncode}): {self.result.stderr.strip()}"


def _log(log: Path | None, args: list[str], result: UvResult | None, error: str = "") -> None:
    if log is None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        if result is not None:
            fh.write(result.stdout)
            fh.write(result.stderr)
            fh.write(f"[exit {result.returncode} after {result.seconds:.2f}s]\n\n")
        if error:
            fh.write(error + "\n\n")


def run(
    args: list[str],
    *,
    allow_python_downloads: bool = False,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    cwd: Path | None = None,
    what: str = "uv",
) -> UvResult:
    """Run ``uv <args>`` and return its output.

    ``--no-python-downloads`` is always passed unless the user allowed
    downloads: on machines where an interpreter cannot be found uv would
    otherwise spend many seconds trying to fetch one.
    """
    cmd = [uv_bin()]
    if not allow_python_downloads:
        cmd.append("--no-python-downloads")
    cmd += [str(a) for a in args]
    run_env = dict(os.environ if env is None else env)
    run_env.setdefault("NO_COLOR", "1")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=run_env, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        _log(log, cmd, None, f"[timed out after {timeout}s]")
        raise UserError(
            f"{what} did not finish within {timeout:.0f} s.",
            "Check the network or the index settings, or try again with --offline and a --find-links folder.",
        ) from exc
    result = UvResult(cmd, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    _log(log, cmd, result)
    if check and proc.returncode != 0:
        raise UvFailed(result, log, what)
    return result


def version() -> str:
    return run(["--version"]).stdout.strip()
