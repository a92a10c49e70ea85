"""Consent for what a profile from elsewhere asks tfrebuild to use.

A profile is *trusted* only when tfrebuild wrote it for the very environment at hand: it lies
inside that environment's state folder (a generation's ``profile.toml``). Any other profile --
a colleague's, a bundle's, one in ``profiles/`` -- is *foreign*. Its fields have already been
checked against their grammar (:func:`rebuild.env.profile_check.validate`); what remains is what it
asks for on purpose, in three kinds, each needing its own consent before anything runs:

* ``sources``: packages from somewhere other than an index (editable, path, vcs, url), and
  building packages from source at all (``plan``/``upgrade --profile`` pass uv ``--no-build``);
* ``index``: http(s) index, find-links and constraint-file locations this machine is not configured with
  (local folders are this machine's own; with ``--offline`` nothing is fetched from them, so none is asked);
* ``commands``: ``[smoke].commands``, shell commands, and ``[[smoke.models]]``: loading a model can run code
  (a Keras-2 ``.h5`` Lambda layer holds marshalled bytecode, a SavedModel's graph can read and write files), and
  the modules of its ``imports`` run theirs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rebuild.env import profile as prof
from rebuild.env import profile_check
from rebuild.errors import UserError

if TYPE_CHECKING:
    from rebuild.core.lockfile import Lock

FLAGS = {"sources": "--allow-sources", "index": "--allow-index", "commands": "--allow-commands"}
WHAT = {
    "sources": "package sources other than an index, or building from source",
    "index": "package locations this machine is not configured with",
    "commands": "shell commands ([smoke].commands) or models to load, which can run code ([[smoke.models]])",
}


@dataclass(frozen=True)
class Allowed:
    """What the user consented to (``--allow-sources``, ``--allow-index``, ``--allow-commands``)."""

    sources: bool = False
    index: bool = False
    commands: bool = False


def is_trusted(profile_path: str | os.PathLike[str], env: str | os.PathLike[str] | None) -> bool:
    """tfrebuild wrote this profile for this env: it lies inside the env's own state folder."""
    from rebuild.store.location import state_dir

    if not env:
        return False
    real = os.path.realpath(profile_path)
    state = os.path.realpath(state_dir(Path(env)))
    return real.startswith(state.rstrip(os.sep) + os.sep)


def _norm(url: str) -> str:
    from rebuild.index import config as indexconf

    return indexconf.redact(url.strip()).rstrip("/")


def requests(profile: prof.Profile) -> dict[str, list[str]]:
    """Everything of each kind the profile asks for (index locations: those not configured here)."""
    from rebuild.index import config as indexconf

    local = indexconf.discover()
    known = {_norm(u) for u in [local.index_url, *local.extra_index_urls, *local.find_links, *local.constraints] if u}
    known.add(_norm(indexconf.PYPI))
    i = profile.index
    named = (
        ([("index", i.index_url)] if i.index_url else [])
        + [("extra index", u) for u in i.extra_index_urls]
        + [("find-links", u) for u in i.find_links]
        + [("constraints file", c) for c in i.constraints if "://" in c]
    )
    index = [
        f"{kind}: {profile_check.shorten(indexconf.redact(u), 120)}"
        for kind, u in named
        if u.lower().startswith(("http://", "https://")) and _norm(u) not in known
    ]
    return {
        "sources": prof.non_index_sources(profile),
        "index": index,
        "commands": [f"smoke command: {profile_check.shorten(c, 120)}" for c in profile.smoke.commands]
        + [f"model to load: {profile_check.shorten(m.path, 120)}" for m in profile.smoke.models]
        + [
            f"model imports ({profile_check.shorten(m.path, 80)}): {', '.join(m.imports)}"
            for m in profile.smoke.models
            if m.imports
        ],
    }


def check(
    profile: prof.Profile,
    path: str | os.PathLike[str],
    *,
    trusted: bool,
    allowed: Allowed,
    kinds: tuple[str, ...],
    command: str,
) -> None:
    """Refuse a foreign profile that asks for a kind in ``kinds`` the user did not allow; list what it asks for."""
    if trusted:
        return
    asked = requests(profile)
    missing = [k for k in kinds if asked[k] and not getattr(allowed, k)]
    if not missing:
        return
    flags = " ".join(FLAGS[k] for k in missing)
    listed = [line for k in missing for line in asked[k]]
    raise UserError(
        f"The profile {path} was not written by tfrebuild for this environment, and it asks for "
        f"{'; '.join(WHAT[k] for k in missing)} ({len(listed)} item(s), listed below). Nothing was run.",
        f"Review them; if you trust whoever wrote the profile, run `tfrebuild {command}` again with {flags}, "
        "or remove them from the profile.",
        exit_code=2,
        details="\n".join(listed),
    )


def check_builds(
    lock: Lock | None, path: str | os.PathLike[str], *, trusted: bool, allowed: Allowed, command: str
) -> None:
    """Refuse to build a foreign lock's source distributions (a build runs the package's code) unless allowed.

    A package the lock offers only as an sdist, or as a source tree or repository, is built on install.
    """
    if trusted or allowed.sources or lock is None:
        return
    built = [
        f"{p.name} {p.version} (built from {p.sdist.filename if p.sdist else 'its source'})"
        for p in lock.packages
        if not p.wheels and (p.sdist is not None or p.source is not None)
    ]
    if not built:
        return
    raise UserError(
        f"The lock of {path}, which tfrebuild did not write for this environment, would build {len(built)} "
        "package(s) from source, which runs their code (listed below). Nothing was run.",
        f"Review them; if you trust whoever wrote the profile, run `tfrebuild {command}` again with --allow-sources, "
        "or lock wheels instead.",
        exit_code=2,
        details="\n".join(built),
    )


def check_file(path: str | os.PathLike[str], *, allowed: Allowed, command: str, offline: bool = False) -> prof.Profile:
    """Load a profile that is read without an env at hand (``export --profile``, ``bundle``) and check it.

    It is trusted when it lies inside the state folder of the env it describes (a generation's profile).
    """
    profile = prof.load(Path(path))
    check(
        profile,
        Path(path).absolute(),
        trusted=is_trusted(path, profile.source),
        allowed=allowed,
        kinds=("sources",) if offline else ("sources", "index"),
        command=command,
    )
    return profile
