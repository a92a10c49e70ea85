"""Making PEP 751 locks (:mod:`rebuild.core.lockfile` stays the one place that reads and checks them): what of a profile
can be locked (index pins, packages from no index as direct references), exactly those pins locked with uv
(``uv pip compile --no-deps``), the lock of an env as it is or of a profile, and the interpreter and index settings
of this machine they are locked for (credentials filled in for redacted or bare URLs). Split from
:mod:`rebuild.core.lockfile` (same code).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rebuild.core import resolve
from rebuild.core.lockfile import Lock, parse_lock, profile_lock_path, read_lock
from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.util.versions import minor

if TYPE_CHECKING:
    from rebuild.env.interpreters import Interpreter


def lock_pins(
    pins: dict[str, str],
    python: Path,
    index: prof.Index,
    *,
    offline: bool,
    log: Path | None = None,
    where: str = "the profile",
    direct: dict[str, str] | None = None,
) -> Lock:
    """A PEP 751 lock of exactly ``pins`` for ``python`` (``uv pip compile --no-deps``: nothing is re-resolved)."""
    if not pins:
        raise UserError(
            f"{where} pins no packages that can be installed from an index.",
            "Take the snapshot of an environment with packages in it.",
        )
    inputs = resolve.Inputs(
        python=python,
        tf_distribution="",
        requested=[],
        pins={},
        index=index,
        offline=offline,
        log=log,
        direct=dict(direct or {}),
    )
    with tempfile.TemporaryDirectory(prefix="tfrebuild-lock-") as tmp:
        try:
            text = resolve.lock(inputs, pins, Path(tmp))
        except resolve.ResolutionFailed as exc:
            raise UserError(
                f"The exact versions of {where} cannot be locked for Python at {python}.",
                "Some pinned version has no file on the index for this interpreter and platform, or the "
                "index cannot be reached (use --find-links DIR --offline with a bundle). "
                "`tfrebuild apply --resolve` picks the closest versions that install here.",
                exit_code=1,
                details="uv says:\n" + exc.explanation,
            ) from None
    return parse_lock(text, f"the lock of {where}")


def installable_pins(profile: prof.Profile) -> tuple[dict[str, str], list[str]]:
    """The profile's pins an index can provide, and notes on the ones it cannot."""
    pins, skipped = {}, []
    for p in profile.packages:
        if p.location != "env":
            continue
        if p.source in ("editable", "path", "vcs", "url"):
            skipped.append(
                f"{p.name} {p.version} ({p.source}{': ' + p.url if p.url else ''}) is not in the lock: "
                "it was not installed from an index; install it by hand"
            )
            continue
        pins[p.name] = p.version
    return pins, skipped


def direct_sources(profile: prof.Profile) -> dict[str, Any]:
    """The profile's packages that came from no index, as :class:`~rebuild.core.sources.DirectSource` by name."""
    from rebuild.core import sources

    out = {}
    for p in profile.packages:
        if (
            p.location != "env"
            or p.source not in ("editable", "path", "vcs", "url")
            or not p.url
            or "****" in p.url
            or p.name in sources.SELF
        ):
            continue
        direct: dict[str, object] = {"url": p.url}
        if p.source == "editable":
            direct["dir_info"] = {"editable": True}
        elif p.source == "vcs":
            direct["vcs_info"] = {"vcs": p.vcs or "git", "commit_id": p.commit}
        found = sources.of({"canonical": p.name, "version": p.version, "direct_url": direct})
        if found is not None:
            out[p.name] = found
    return out


def direct_requirements(profile: prof.Profile) -> tuple[dict[str, str], dict[str, str]]:
    """(requirement lines, versions) of the profile's packages that came from no index (see core/sources.py)."""
    found = direct_sources(profile)
    return {n: d.requirement for n, d in found.items()}, {n: d.version for n, d in found.items()}


def lockable(profile: prof.Profile) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """What a lock of ``profile`` holds: every pin (index and local ones), the direct requirement lines of the
    packages that came from no index, and notes on what cannot be locked."""
    pins, notes = installable_pins(profile)
    direct, versions = direct_requirements(profile)
    pins.update(versions)
    return pins, direct, [n for n in notes if n.split(" ", 1)[0] not in direct]


def env_lock(
    env: str | os.PathLike[str] | None,
    *,
    find_links: list[str] | None = None,
    offline: bool = False,
    index_url: str | None = None,
) -> tuple[Lock, str, list[str]]:
    """The lock of the environment as it is now: its generation's lock when that still matches, else locked anew."""
    from rebuild.env import snapshot
    from rebuild.env.locate import locate
    from rebuild.store.store import Store

    loc = locate(env)
    current = snapshot.take(loc.path if not loc.bare else loc.python)
    pins, direct, notes = lockable(current)
    store = Store.open(loc.path) if not loc.bare else None
    if store is not None:
        gen_lock = store.generation_dir(store.current_number) / "pylock.toml"
        if gen_lock.is_file():
            try:
                lock = read_lock(gen_lock)
            except UserError:
                lock = None
            if lock is not None and lock.pins() == pins:
                return lock, f"generation {store.current_number}'s lock ({gen_lock})", notes
    index = indexconf.override(
        indexconf.discover(prefix=None if loc.bare else loc.path),
        index_url=index_url,
        find_links=find_links,
        offline=offline,
    )
    lock = lock_pins(pins, loc.python, index, offline=offline, where=f"the environment {loc.path}", direct=direct)
    lock.where = str(loc.path)
    return lock, f"the installed versions of {loc.path}, locked with uv", notes


def profile_lock(
    profile_path: str | os.PathLike[str],
    *,
    find_links: list[str] | None = None,
    offline: bool = False,
    python: str | None = None,
    index_url: str | None = None,
) -> tuple[prof.Profile, Lock, str, list[str]]:
    """A profile and its lock: the ``lock`` file it names, or its pins locked for a local interpreter of its Python."""

    path = Path(profile_path)
    profile = prof.load(path)
    lock_file = profile_lock_path(profile, path)
    if lock_file is not None:
        return profile, read_lock(lock_file), f"the profile's lock {lock_file}", []
    pins, direct, notes = lockable(profile)
    interp = find_interpreter(python or profile.interpreter.version)
    index = indexconf.override(usable_index(profile.index), index_url=index_url, find_links=find_links, offline=offline)
    lock = lock_pins(pins, interp.path, index, offline=offline, where=f"the profile {path}", direct=direct)
    lock.where = str(path)
    return profile, lock, f"the profile's pins, locked with uv for Python {interp.version}", notes


def find_interpreter(request: str) -> Interpreter:
    """An interpreter of exactly ``request`` if there is one, else of its minor version."""
    from rebuild.env import interpreters

    if not request:
        raise UserError("The profile does not say which Python it was made with.", "Pass --python X.Y.")
    try:
        return interpreters.find(request)
    except UserError:
        wanted = minor(request)
        if wanted == request or os.sep in request:
            raise
        return interpreters.find(wanted)


def usable_index(index: prof.Index) -> prof.Index:
    """The index settings of a profile that mean something on this machine.

    Constraint files and find-links folders of the machine that wrote the profile are
    dropped when they do not exist here (the profile's recorded constraint lines still apply
    when re-resolving); a URL whose credentials were redacted
    (``user:****@host``) takes the credentials this machine has configured for the same
    host, if any.
    """
    local = indexconf.discover()
    known = [local.index_url, *local.extra_index_urls, *local.find_links]

    def fill(url: str) -> str:
        if "****" not in url:
            return url
        target = urlsplit(url)
        for candidate in known:
            c = urlsplit(candidate)
            if c.hostname == target.hostname and c.path.rstrip("/") == target.path.rstrip("/"):
                return candidate
        return url

    find_links = [fill(f) for f in index.find_links if "://" in f or Path(f).exists()]
    return prof.Index(
        index_url=fill(index.index_url) if index.index_url else "",
        extra_index_urls=[fill(u) for u in index.extra_index_urls],
        find_links=find_links,
        no_index=index.no_index,
        index_strategy=index.index_strategy,
        constraints=[c for c in index.constraints if "://" in c or Path(c).is_file()],
        constraint_lines=list(index.constraint_lines),
    )


def with_credentials(url: str, index: prof.Index) -> str:
    """``url`` with the credentials configured for its host, when it has none of its own.

    A lock's file URLs carry no credentials (they are redacted when written); the wheels
    of an authenticated index live on the same host as its pages, so a bundle download
    takes the userinfo of the first configured source (``index``'s, then this machine's)
    on the same host and port. A netrc entry for the host is used by the HTTP client.
    """
    target = urlsplit(url)
    if "@" in target.netloc or not target.hostname or not target.scheme.startswith("http"):
        return url
    local = indexconf.discover()
    for candidate in [
        index.index_url,
        *index.extra_index_urls,
        *index.find_links,
        local.index_url,
        *local.extra_index_urls,
        *local.find_links,
    ]:
        c = urlsplit(candidate or "")
        if "@" not in c.netloc or "****" in c.netloc:
            continue
        if (c.hostname, c.port) == (target.hostname, target.port):
            return target._replace(netloc=f"{c.netloc.rsplit('@', 1)[0]}@{target.netloc}").geturl()
    return url
