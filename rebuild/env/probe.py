"""Run the probe script inside the target environment's own interpreter."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.util import proc

PROBE_SCRIPT = Path(__file__).with_name("_probe.py")


def default_timeout() -> float:
    return float(os.environ.get("TFREBUILD_PROBE_TIMEOUT", "60"))


def run(
    python: Path,
    *,
    deep: bool = False,
    timeout: float | None = None,
    environ: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> Probed:
    """Inspect the environment of ``python``; return the probe's report (its JSON, typed once here). ``cancel``: set
    by another thread, it stops the probe (a ``KeyboardInterrupt`` here).

    The interpreter runs in isolated mode (``-I -S``) so neither ``PYTHONPATH``
    nor the user site nor ``.pth`` files can change what it sees or crash it.
    ``environ`` (default: this process's) is the environment it starts under (doctor's user site, PATH ...).
    """
    timeout = default_timeout() if timeout is None else timeout
    cmd = [str(python), "-I", "-S", str(PROBE_SCRIPT)] + (["--deep"] if deep else [])
    # The probe reports the variables a normal start would see (PYTHONPATH, PYTHONUSERBASE, ...),
    # so it gets this process's environment unscrubbed; -I -S keep them from acting on it.
    result = proc.run(cmd, env=os.environ if environ is None else dict(environ), timeout=timeout, cancel=cancel)
    if result.cancelled:
        raise KeyboardInterrupt
    if result.timed_out:
        raise UserError(
            f"The interpreter {python} did not answer within {timeout:.0f} s.",
            "It may hang at start-up; check that it runs (`{0} -c pass`) or raise TFREBUILD_PROBE_TIMEOUT.".format(
                python
            ),
        )
    if result.error:
        raise UserError(
            f"The interpreter {python} cannot be started: {result.error}.",
            "The environment may be broken or its base Python removed; recreate it or pass another --env.",
        )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise UserError(
            f"The interpreter {python} failed (exit {result.returncode}) while being inspected.",
            "The environment's Python is broken (its base interpreter may have been removed or upgraded); recreate it.",
            details=tail,
        )
    try:
        return Probed.from_json(json.loads(result.stdout))
    except (json.JSONDecodeError, AttributeError) as exc:  # not JSON, or JSON but not an object
        raise UserError(
            f"The interpreter {python} printed something that is not the probe's report.",
            "Run it by hand to see what it prints at start-up.",
            details=result.stdout[:500].strip(),
        ) from exc
