"""``tfrebuild snapshot``: probe an env, build its profile, write it (the machinery is :mod:`rebuild.env.snapshot`)."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rebuild.env import probe
from rebuild.env.locate import locate

if TYPE_CHECKING:
    from rebuild.env import profile as prof

_GENERIC_NAMES = {"venv", "env", "virtualenv"}


@dataclass
class SnapshotResult:
    profile: prof.Profile
    written_to: Path | None
    seconds: float


def default_output(env_path: Path, cwd: Path | None = None) -> Path:
    """``profiles/<env name>.toml``; a generic name (``.venv``) is prefixed by its parent's."""
    name = env_path.name.lstrip(".") or "env"
    if name in _GENERIC_NAMES and env_path.parent.name:
        name = f"{env_path.parent.name}-{name}"
    return Path(cwd or Path.cwd()) / "profiles" / f"{name}.toml"


def run(
    env: str | os.PathLike | None,
    output: str | os.PathLike | None,
    *,
    force: bool = False,
    meanwhile: Callable[[], object] | None = None,
) -> SnapshotResult:
    """``tfrebuild snapshot``: probe, build the profile, write it; a refused output path stops the probe, and
    nothing is written. ``meanwhile`` is the caller's own work, done while the probe runs (the CLI loads what prints
    the result)."""
    start = time.monotonic()
    loc = locate(env)
    if output:
        target = Path(output)
    elif loc.bare or os.path.isfile(
        env or ""
    ):  # /root/.pyenv/versions/3.11.7/bin/python3 -> profiles/3.11.7-python3.toml
        target = default_output(loc.path).with_name(f"{loc.path.name.lstrip('.') or 'python'}-{loc.python.name}.toml")
    else:
        target = default_output(loc.path)
    target = target.absolute()
    # The probe runs in the env's interpreter while this one loads what turns its report into a profile (on a big
    # env each takes about a tenth of a second); a refused output path stops it.
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        probing = pool.submit(probe.run, loc.python, cancel=cancel)
        try:
            from rebuild.env.snapshot import build_profile, check_output, write

            check_output(target, force)
            if meanwhile is not None:
                meanwhile()
            data = probing.result()
        except BaseException:
            cancel.set()
            raise
    profile = build_profile(loc, data)
    write(profile, target)
    return SnapshotResult(profile, target, time.monotonic() - start)
