"""``tfrebuild apply PROFILE``: build an environment from a profile's lock.

Exact versions and hashes: the profile's ``pylock.toml`` is installed as it is
(``uv pip sync``, with ``--require-hashes`` when every package has hashes). A profile
without a lock (``tfrebuild snapshot`` writes none) has its exact pins locked first
(``uv pip compile --no-deps``: nothing is re-resolved). Only ``--resolve`` re-resolves,
and only when the lock does not fit this machine.

* No environment at the target path: the new one is built and checked in a staging
  folder in the state folder beside the path, renamed into place (the path did not
  exist, so a plain rename is atomic) and adopted as generation 1.
* An environment is there (managed or not): like ``upgrade`` -- the old one is
  adopted as generation 1 if tfrebuild did not manage it, the new one is built beside
  it, checked, swapped in atomically, checked again, and swapped back on failure.

Before anything is built: the profile's interpreter and platform are compared with
the target's, and every locked package must have a wheel whose tags the target
interpreter accepts; local files must match the lock's hashes; index URLs must be
https (or file:// / local paths) unless ``--allow-insecure-index``.

Smoke commands (``[smoke].commands``) are shell commands. They run without
``--allow-commands`` only when tfrebuild wrote the profile for this very
environment: the profile file lies inside the target's state folder (a
generation's ``profile.toml``). A profile from anywhere else -- a colleague, a
bundle, ``profiles/`` -- is foreign: its commands are shown and skipped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from rebuild.commands import generations
from rebuild.index import config as indexconf
from rebuild.env import probe
from rebuild.core import consent
from rebuild.core import portability
from rebuild.core import models, transaction
from rebuild.core.build import BuildOptions
from rebuild.core.smoke import Checks
from rebuild.env import snapshot
from rebuild.core import lockfile as locks
from rebuild.core import lockmake
from rebuild.core import sources
from rebuild.core import changes as planning
from rebuild.env import profile as prof
from rebuild.env.locate import check_path, default_env_path, locate
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.store.journal import new_op_id
from rebuild.store.store import Store
from rebuild.util import proc
from rebuild.util.progress import NULL
from rebuild.knowledge.tf import SEED_PACKAGES


@dataclass
class Options:
    profile: str | os.PathLike
    env: str | os.PathLike | None = None
    python: str | None = None
    find_links: list[str] = field(default_factory=list)
    offline: bool = False
    resolve: bool = False  # re-resolve for this machine when the lock does not fit it
    yes: bool = False
    allow_commands: bool = False  # run a foreign profile's [smoke].commands
    allow_sources: bool = False  # a foreign profile's non-index package sources
    allow_index: bool = False  # a foreign profile's index locations this machine is not configured with
    allow_insecure_index: bool = False  # accept http:// index and file URLs
    no_compile: bool = False
    force: bool = False  # swap even while processes run from the env
    allow_python_download: bool = False
    check: str = "versions"  # --check: what runs at the path after the swap ("import": TensorFlow's import too)
    models: list[str] = field(default_factory=list)  # --model PATH: saved models the new env must load the same


@dataclass(kw_only=True)
class ApplyResult(transaction.TransactionResult):
    profile: str
    env: str
    new_env: bool
    trusted: bool = False  # tfrebuild wrote this profile for this env
    lock_source: str = ""
    python: str = ""
    python_path: str = ""
    tensorflow: str = ""
    packages: int = 0
    hashes: str = ""
    portability: portability.Portability | None = None
    resolved: bool = False  # --resolve changed versions
    changes: list[planning.Change] = field(default_factory=list)  # lock -> what is installed (--resolve)
    env_changes: list[planning.Change] = field(default_factory=list)  # the env that was there -> the new one
    index_urls: list[str] = field(default_factory=list)
    smoke_commands: list[str] = field(default_factory=list)
    commands_run: bool = False


# --------------------------------------------------------------------------- small helpers


def _command_line(profile: Path) -> str:
    if sys.argv[1:2] == ["apply"]:
        return proc.redact_line("tfrebuild " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    return f"tfrebuild apply {shlex.quote(str(profile))}"


def is_trusted(profile_path: Path, env: Path) -> bool:
    """tfrebuild wrote this profile for this env: it lies inside the env's own state folder."""
    return consent.is_trusted(profile_path, env)


# --------------------------------------------------------------------------- the command


def run(opts: Options, progress=None, confirm: Callable[[ApplyResult], bool] | None = None) -> ApplyResult:
    """``tfrebuild apply``. ``confirm(preview)`` decides whether to build (``opts.yes`` skips it)."""
    progress = progress or NULL
    start = time.monotonic()
    profile_path = Path(opts.profile).absolute()
    profile = prof.load(profile_path)
    target = Path(os.path.abspath(os.path.expanduser(opts.env))) if opts.env else default_env_path()
    check_path(target)
    new_env = not os.path.lexists(target)
    if not new_env:
        loc = locate(target)
        if loc.bare or os.path.isfile(target):
            raise UserError(
                f"{target} is an interpreter, not an environment folder.",
                "apply builds virtual environments; pass a venv folder (new or existing) with --env.",
            )
        target = loc.path
    elif not _nearest_parent(target.parent).is_dir():
        raise UserError(
            f"Cannot create {target}: {_nearest_parent(target.parent)} is a file, not a folder.",
            "Choose another --env.",
        )
    elif not target.parent.exists() and not os.access(_nearest_parent(target), os.W_OK):
        raise UserError(f"Cannot create {target}: {_nearest_parent(target)} is not writable.", "Choose another --env.")
    trusted = is_trusted(profile_path, target)
    portability.check_urls(profile, None, opts.allow_insecure_index)
    consent.check(
        profile,
        profile_path,
        trusted=trusted,
        kinds=("sources",) if opts.offline else ("sources", "index"),
        command="apply",
        allowed=consent.Allowed(sources=opts.allow_sources, index=opts.allow_index),
    )
    commands = list(profile.smoke.commands)
    models.refuse_untrusted(models.from_paths(opts.models), target)  # a --model that is not a model, or not
    # the user's: refused before anything is created (the profile's own models: below, once consent is known)
    if not opts.yes and confirm is None:
        shown = portability.index_urls(profile) + [f"smoke command: {c}" for c in commands]
        raise UserError(
            "tfrebuild apply needs confirmation, and there is no terminal to ask on.",
            "Review the profile's index URLs and smoke commands (below), then run again with --yes.",
            details="\n".join(shown),
        )
    created_parent = None
    if new_env and not target.parent.exists():
        created_parent = _nearest_missing(target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(target) or Store.unmanaged(target)
    created_state = not store.state.exists()
    owned = created_state
    try:
        with store.lock(_command_line(profile_path)):
            owned = owned or not store.managed  # we hold the lock: an unmanaged state folder is ours to tidy
            recovered = generations.recover(store)  # a recovered generation gets its profile too
            if store.managed and not os.path.lexists(target):
                raise UserError(
                    f"{target} does not exist, but tfrebuild has a state folder for it ({store.state}).",
                    f"Move {store.state} away (it holds the old generations), then apply again.",
                )
            new_env = not os.path.lexists(target)
            return _run_locked(
                opts,
                profile,
                profile_path,
                target,
                store,
                new_env,
                trusted,
                commands,
                recovered,
                progress,
                confirm,
                start,
            )
    except UserError as exc:  # the state folder goes (below): keep the log the error names, and say where it went
        if owned and not store.managed:
            for log in sorted((store.state / "logs").glob("*.log")):
                if str(log) in exc.hint + exc.details:
                    kept = transaction.rescue_log(log)
                    if kept is not None:
                        exc.log_moved(log, kept)
        raise
    finally:
        if owned and not store.managed:
            shutil.rmtree(store.state, ignore_errors=True)
            if created_parent is not None and not os.path.lexists(target):
                shutil.rmtree(created_parent, ignore_errors=True)


def _nearest_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _nearest_missing(path: Path) -> Path:
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _run_locked(
    opts: Options,
    profile: prof.Profile,
    profile_path: Path,
    target: Path,
    store: Store,
    new_env: bool,
    trusted: bool,
    commands: list[str],
    recovered: str | None,
    progress,
    confirm,
    start: float,
) -> ApplyResult:
    command = _command_line(profile_path)
    op = new_op_id("apply")
    log = store.log_path(op) if store.managed else store.state / "logs" / f"{op}.log"
    result = ApplyResult(
        profile=str(profile_path),
        env=str(target),
        new_env=new_env,
        trusted=trusted,
        index_urls=portability.index_urls(profile),
        smoke_commands=commands,
        recovered=recovered,
        state_dir=str(store.state),
        log=str(log),
    )
    allowed = trusted or opts.allow_commands
    result.commands_run = allowed and bool(commands)
    if commands and not allowed:
        result.notes.append(
            f"{len(commands)} smoke command(s) from this profile are shown but not run: tfrebuild did "
            "not write it for this environment (pass --allow-commands to run them)"
        )

    progress.stage("interpreter", f"Python {opts.python or profile.interpreter.version}")
    interp = _interpreter(opts, profile)
    data = probe.run(interp.path)
    result.python, result.python_path = interp.version, str(interp.path)
    index = indexconf.override(lockmake.usable_index(profile.index), find_links=opts.find_links, offline=opts.offline)
    lock = _lock_that_fits(opts, profile, profile_path, interp, data, index, log, result, progress)
    pins = lock.pins()
    tf = portability.tf_distribution(pins, profile)
    result.tensorflow = f"{tf} {pins[tf]}" if tf else ""
    result.packages = len(pins)
    result.hashes = (
        "required: every package has hashes (--require-hashes)"
        if lock.all_hashed
        else "checked where the lock has them (some packages have none)"
    )

    current = None
    if not new_env:
        current = snapshot.take(target)
        old = {p.name: p.version for p in current.packages if p.location == "env"}
        result.env_changes = [
            planning.Change(n, a, b, k, n in set(profile.requested)) for n, a, b, k in planning.diff(old, pins)
        ]
        if not result.env_changes and current.interpreter.version == interp.version:
            result.notes.append("the environment already holds exactly this set: nothing to do")
            result.seconds = time.monotonic() - start
            return result

    if not opts.yes and not confirm(result):
        raise UserError("Apply cancelled; nothing was changed.", exit_code=1)
    run_commands = commands if allowed else []
    listed = profile.smoke.models if allowed else []  # loading a model can run code: consent, as for commands
    if profile.smoke.models and not allowed:
        result.notes.append(
            f"{len(profile.smoke.models)} model(s) of this profile's [[smoke.models]] are not loaded "
            "(loading a model can run code): tfrebuild did not write it for this environment (pass "
            "--allow-commands to check them)"
        )
    checked = models.merged(listed, models.from_paths(opts.models))
    models.refuse_untrusted(checked, target)  # before anything is built
    like = models.with_models(profile, checked)
    requested: set[str] = {canonicalize_name(n) for n in profile.requested if n not in SEED_PACKAGES}
    transaction.run(
        transaction.Spec(
            store=store,
            op=op,
            kind="apply",
            command=command,
            python=Path(interp.path),
            python_version=interp.version,
            tensorflow=result.tensorflow,
            pylock=lock.text(),
            index=index,
            build=BuildOptions(
                offline=opts.offline,
                require_hashes=lock.all_hashed,
                compile_bytecode=not opts.no_compile,
                log=log,
                requested=requested,
            ),
            checks=Checks(tf_version=pins.get(tf, ""), imports=list(profile.smoke.imports), commands=run_commands),
            write_profile=generations.write_profile,
            like=like,
            commands=run_commands,
            log=log,
            new_env=new_env,
            adopt=_adoption(current),
            before_swap=lambda: generations.refuse_if_in_use(store.env, opts.force),
            progress=progress,
            deep_check=opts.check == "import",
            models=models.Gate(
                checked, current=None if new_env else target, index=index, offline=opts.offline, log=log
            ),
        ),
        result,
    )
    result.seconds = time.monotonic() - start
    return result


def _interpreter(opts: Options, profile: prof.Profile):
    """``--python``, else the profile's own Python (which must be installed here)."""
    from rebuild.env import interpreters

    if opts.python:
        return interpreters.find(opts.python, allow_download=opts.allow_python_download)
    if not profile.interpreter.version:
        raise UserError("The profile does not say which Python it was made with.", "Pass --python X.Y.")
    try:
        return lockmake.find_interpreter(profile.interpreter.version)
    except UserError as exc:
        raise UserError(
            f"The profile was made with Python {profile.interpreter.version}, and no Python "
            f"{profile.interpreter.minor} was found here.",
            f"Install Python {profile.interpreter.minor} (e.g. `pyenv install "
            f"{profile.interpreter.minor}`), or pass --python X.Y to build on another one "
            "(with --resolve if the lock's wheels do not fit it).",
            details=exc.message,
        ) from None


def _adoption(current) -> transaction.Adoption | None:
    """The env that is there, as generation 1 if tfrebuild does not manage it yet (None: a new path)."""
    if current is None:
        return None
    old_tf = current.tensorflow
    return transaction.Adoption(
        tensorflow=f"{old_tf.distribution} {old_tf.version}" if old_tf.distribution else "",
        python=current.interpreter.version,
        like=current,
    )


def _lock_that_fits(
    opts: Options,
    profile: prof.Profile,
    profile_path: Path,
    interp,
    data: Probed,
    index,
    log: Path,
    result: ApplyResult,
    progress,
) -> locks.Lock:
    """The profile's lock (or its pins, locked), checked against this machine; re-resolved with ``--resolve``."""
    portability.check_urls(profile, None, opts.allow_insecure_index)
    progress.stage("lock", "reading the profile's lock")
    lock_file = locks.profile_lock_path(profile, profile_path)
    pins_of_profile, direct, skipped = lockmake.lockable(profile)
    sources.check_present(lockmake.direct_sources(profile), result.env)  # a local source that has gone: say so first
    result.notes += skipped
    if lock_file is not None:
        lock = locks.read_lock(lock_file)
        result.lock_source = f"the profile's lock {lock_file}"
        _check_consistent(lock, pins_of_profile, lock_file)
    else:
        lock = None
        try:
            lock = lockmake.lock_pins(
                pins_of_profile,
                interp.path,
                index,
                offline=opts.offline,
                log=log,
                where=f"the profile {profile_path.name}",
                direct=direct,
            )
            result.lock_source = "the profile's pins, locked with uv (uv pip compile --no-deps: not re-resolved)"
        except UserError as exc:
            if not opts.resolve:
                portable = portability.check_portability_no_lock(profile, data)
                if portable.differences:
                    exc.message += f" The profile was made on {portable.profile}; this is {portable.here}."
                raise
    portability.check_urls(profile, lock, opts.allow_insecure_index)
    consent.check_builds(
        lock,
        profile_path,
        trusted=result.trusted,
        command="apply",
        allowed=consent.Allowed(sources=opts.allow_sources, index=opts.allow_index),
    )

    if lock is not None:
        lock = _local_files(lock, lock_file, opts, result)
        fit = portability.check_portability(lock, profile, data)
    else:
        fit = portability.check_portability_no_lock(profile, data)
        fit.incompatible.append("the profile's exact pins cannot be locked for this interpreter")
    result.portability = fit
    if fit.differences:
        result.notes.append(f"the profile was made on {fit.profile}; this is {fit.here}")
    for name in fit.from_source:
        result.notes.append(f"{name} has no wheel for this machine: uv builds it from its sdist")

    if not fit.incompatible:
        if opts.resolve:
            result.notes.append("--resolve was not needed: the lock installs here as it is")
        return lock
    if not opts.resolve:
        raise portability.portability_error(fit, profile.interpreter.minor)
    progress.stage("resolve", f"re-resolving for Python {interp.version} (--resolve)")
    pins_before = lock.pins() if lock is not None else pins_of_profile
    lock, result.changes = portability.re_resolve(
        profile, pins_before, interp.path, data, index, offline=opts.offline, log=log
    )
    lock, _, _ = locks.localize(lock, [Path(f) for f in opts.find_links])
    result.resolved = True
    result.lock_source = "re-resolved for this machine with uv (--resolve), the profile's versions preferred"
    return lock


def _local_files(lock: locks.Lock, lock_file: Path | None, opts: Options, result: ApplyResult) -> locks.Lock:
    """The lock pointed at the --find-links files; every locked file must be here or fetchable, hashes matching."""
    lock, remote, missing = locks.localize(lock, [Path(f) for f in opts.find_links])
    if missing:
        names = ", ".join(m.split(":")[0] for m in missing)
        raise UserError(
            f"{len(missing)} locked file(s) are not here: {names}. Nothing was built.",
            "The bundle is incomplete or was not copied whole: make it again with `tfrebuild bundle`, "
            "or pass --find-links to the folder that has the files.",
            details="\n".join(f"  {m}" for m in missing),
        )
    if remote and opts.offline:
        result.notes.append(
            f"--offline: {len(remote)} locked file(s) are not in a --find-links folder and must come from uv's cache"
        )
    hosts = sorted({urlsplit(f.url).netloc for p in lock.packages for f in p.files if f.remote})
    result.index_urls += [f"lock files from: {indexconf.redact(h)}" for h in hosts]
    bad = locks.verify_local(lock)
    if bad:
        raise locks.hash_error(bad, str(lock_file or "the lock"))
    return lock


def _check_consistent(lock: locks.Lock, pins: dict[str, str], lock_file: Path) -> None:
    """The lock must pin what the profile records (an edited lock is refused)."""
    locked = lock.pins()
    differ = [
        f"{n}: profile {pins[n]}, lock {locked[n]}" for n in sorted(set(pins) & set(locked)) if pins[n] != locked[n]
    ]
    if differ:
        raise UserError(
            f"The lock {lock_file} and its profile disagree on {len(differ)} version(s): "
            f"{', '.join(d.split(':')[0] for d in differ)}. Nothing was built.",
            "One of them was edited by hand. " + locks.NEW_LOCK_HINT,
            details="\n".join(differ),
        )
