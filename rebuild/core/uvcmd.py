"""The one place that runs uv.

Every uv invocation goes through :func:`run`, which finds the binary that the
``uv`` PyPI package ships, forbids interpreter downloads unless the caller
allows them, runs it through the one subprocess runner (:mod:`rebuild.util.proc`:
``PYTHONPATH``/``PYTHONHOME`` scrubbed, every ``UV_*``/``PIP_*``/proxy/SSL
variable kept), optionally appends the redacted command line and output to a
per-operation log file, and turns a failure into a :class:`UvFailed` carrying
uv's own words.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rebuild.errors import UserError
from rebuild.util import proc

#: What :func:`run` returns: the runner's result (``args``, ``returncode``, ``stdout``, ``stderr``, ``seconds``).
UvResult = proc.Result


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
class UvFailed(Exception):
    """uv exited non-zero. ``stderr`` holds uv's explanation verbatim."""

    result: UvResult
    log: Path | None = None
    what: str = field(default="uv")

    def __str__(self) -> str:
        return f"{self.what} failed (exit {self.result.returncode}): {proc.redact_line(self.result.stderr.strip())}"


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
    otherwise spend many seconds trying to fetch one. ``env`` (default: this
    process's environment) is scrubbed by :func:`proc.clean_environ`.
    """
    cmd = [uv_bin()]
    if not allow_python_downloads:
        cmd.append("--no-python-downloads")
    cmd += [str(a) for a in args]
    run_env = proc.clean_environ(env)
    run_env.setdefault("NO_COLOR", "1")
    result = proc.run(cmd, env=run_env, timeout=timeout, cwd=cwd, log=log)
    if result.timed_out:
        raise UserError(
            f"{what} did not finish within {timeout:.0f} s.",
            "Check the network or the index settings, or try again with --offline and a --find-links folder.",
        )
    if result.error:
        raise UserError(f"{what} cannot be started ({cmd[0]}): {result.error}.",
                        "Reinstall tfrebuild (pip install tfrebuild), or point TFREBUILD_UV at a working uv.")
    if check and result.returncode != 0:
        raise UvFailed(result, log, what)
    return result


def version() -> str:
    return run(["--version"]).stdout.strip()
