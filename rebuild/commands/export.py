"""``tfrebuild export``: the exact set of an env or a profile as a standard lock file, for teams without tfrebuild.

The lock itself comes from :mod:`rebuild.core.lockfile` (a profile's lock, a
generation's lock, or the installed versions locked with uv); this command writes it as:

* ``--format pylock``: a PEP 751 ``pylock.toml`` (``uv pip sync pylock.toml``;
  ``pip install -r`` does not read it yet, ``pip lock`` writes the same format);
* ``--format requirements``: ``name==version --hash=sha256:...`` lines converted from
  the lock (``pip install --require-hashes --no-deps -r requirements.txt`` or
  ``uv pip sync requirements.txt``).

uv writes hashes into a pylock for every file, including ``--find-links`` folders
(it hashes the local file), but its ``--generate-hashes`` requirements output has
none for ``--find-links`` wheels; so requirements are converted from the pylock,
never compiled separately.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from rebuild.core import consent
from rebuild.core.lockfile import FORMATS, to_requirements
from rebuild.core.lockmake import env_lock, profile_lock
from rebuild.env import snapshot
from rebuild.errors import UserError


@dataclass
class ExportResult:
    format: str
    source: str  # what was exported
    lock_source: str  # where the lock came from
    output: str | None  # file written, or None (text goes to stdout)
    packages: int
    hashed: bool
    text: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run(
    *,
    env=None,
    profile=None,
    fmt: str = "pylock",
    output=None,
    find_links: list[str] | None = None,
    offline: bool = False,
    python: str | None = None,
    force: bool = False,
    allowed: consent.Allowed = consent.Allowed(),
) -> ExportResult:
    """``tfrebuild export``: write the exact set of an env or a profile as a standard lock file."""
    start = time.monotonic()
    if fmt not in FORMATS:
        raise UserError(f"Unknown format '{fmt}'.", "Use --format pylock or --format requirements.")
    if env is not None and profile is not None:
        raise UserError("Pass either --env or --profile, not both.", "export writes one set of packages.")
    out_path = Path(output).absolute() if output else None
    notes: list[str] = []
    if out_path is not None:
        snapshot.check_output(out_path, force)
        if fmt == "pylock" and not (
            out_path.name == "pylock.toml"
            or (
                out_path.name.startswith("pylock.")
                and out_path.name.endswith(".toml")
                and out_path.name.count(".") == 2
            )
        ):
            notes.append(
                f"uv and pip only read PEP 751 files named pylock.toml or pylock.<name>.toml; "
                f"rename {out_path.name} before installing it"
            )
    if profile is not None:
        consent.check_file(profile, allowed=allowed, command="export", offline=offline)
        _, lock, lock_source, skipped = profile_lock(profile, find_links=find_links, offline=offline, python=python)
        source = f"profile {Path(profile).absolute()}"
    else:
        lock, lock_source, skipped = env_lock(env, find_links=find_links, offline=offline)
        source = f"environment {lock.where}"
    notes += skipped
    if fmt == "pylock":
        data = copy.deepcopy(lock.data)
        data["created-by"] = "tfrebuild"
        if lock.base is not None:  # relative paths are relative to the lock's folder: make them absolute
            for raw in data["packages"]:
                for table in list(raw.get("wheels", [])) + ([raw["sdist"]] if "sdist" in raw else []):
                    if table.get("path") and not Path(table["path"]).is_absolute():
                        table["path"] = str((lock.base / table["path"]).absolute())
        text = tomli_w.dumps(data)
        if any(f.local_path(lock.base) is not None for p in lock.packages for f in p.files):
            notes.append(
                "the lock names files on this machine (file:// or paths): it installs here or where the "
                "same paths exist; use `tfrebuild bundle` to carry the files along"
            )
    else:
        text = to_requirements(lock)
        if any(f.local_path(lock.base) is not None for p in lock.packages for f in p.files):
            notes.append("the wheels came from local folders: install with --no-index --find-links <that folder>")
    if out_path is not None:
        snapshot.write_text_atomic(out_path, text)
    return ExportResult(
        format=fmt,
        source=source,
        lock_source=lock_source,
        output=str(out_path) if out_path else None,
        packages=len(lock.packages),
        hashed=lock.all_hashed,
        text=text,
        notes=notes,
        seconds=time.monotonic() - start,
    )
