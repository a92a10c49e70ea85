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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from rebuild.commands import generations
from rebuild.env import graph
from rebuild.index import config as indexconf
from rebuild.index import simple as indexinfo
from rebuild.env import probe
from rebuild.core import resolve
from rebuild.core import transaction
from rebuild.env import snapshot
from rebuild.core import lockfile as locks
from rebuild.core import plan as planning
from rebuild.env import profile as prof
from rebuild.env.locate import default_env_path, locate
from rebuild.errors import UserError
from rebuild.store.store import Generation, Store, new_op_id, safe_rmtree, state_dir
from rebuild.util.progress import NULL
from rebuild.knowledge.tf import SEED_PACKAGES, TF_DISTRIBUTIONS


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
    allow_insecure_index: bool = False  # accept http:// index and file URLs
    no_compile: bool = False
    force: bool = False  # swap even while processes run from the env
    allow_python_download: bool = False


@dataclass
class Portability:
    profile: str  # "CPython 3.11.7 on Linux x86_64 (glibc 2.36)"
    here: str
    differences: list[str] = field(default_factory=list)
    incompatible: list[str] = field(default_factory=list)  # "numpy 1.24.3: numpy-1.24.3-cp311-...whl"
    from_source: list[str] = field(default_factory=list)  # packages only an sdist fits: built here

    @property
    def same(self) -> bool:
        return not self.differences


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
    portability: Portability | None = None
    resolved: bool = False  # --resolve changed versions
    changes: list[planning.Change] = field(default_factory=list)  # lock -> what is installed (--resolve)
    env_changes: list[planning.Change] = field(default_factory=list)  # the env that was there -> the new one
    index_urls: list[str] = field(default_factory=list)
    smoke_commands: list[str] = field(default_factory=list)
    commands_run: bool = False


# --------------------------------------------------------------------------- small helpers


def _command_line(profile: Path) -> str:
    if sys.argv[1:2] == ["apply"]:
        return "tfrebuild " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"tfrebuild apply {shlex.quote(str(profile))}"


def is_trusted(profile_path: Path, env: Path) -> bool:
    """tfrebuild wrote this profile for this env: it lies inside the env's own state folder."""
    real = os.path.realpath(profile_path)
    state = os.path.realpath(state_dir(env))
    return real.startswith(state.rstrip(os.sep) + os.sep)


def _describe(t: indexinfo.Target) -> str:
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get((t.implementation or "cpython").lower(), t.implementation)
    libc = f" ({t.libc} {t.libc_version})" if t.libc else ""
    return f"{impl} {t.version} on {t.system or '?'} {t.machine or '?'}{libc}"


def _insecure(url: str) -> bool:
    return url.strip().lower().startswith("http://")


def index_urls(profile: prof.Profile) -> list[str]:
    """Every index and find-links location a profile names (credentials redacted), for the user to see."""
    i = profile.index
    unused = " (not used: the profile says no-index)" if i.no_index else ""
    urls = ([f"index: {i.index_url}{unused}"] if i.index_url else []) + \
        [f"extra index: {u}{unused}" for u in i.extra_index_urls] + [f"find-links: {u}" for u in i.find_links]
    return [indexconf.redact(u) for u in urls]


def check_urls(profile: prof.Profile, lock: locks.Lock | None, allow_insecure: bool) -> None:
    """Refuse plain-http indexes and files: anyone on the way could swap the packages (hashes aside)."""
    if allow_insecure:
        return
    i = profile.index
    bad = [u for u in ([i.index_url] + i.extra_index_urls + i.find_links) if u and _insecure(u)]
    if lock is not None:
        bad += [f.url for p in lock.packages for f in p.files if _insecure(f.url)]
    if bad:
        shown = sorted({indexconf.redact(u) for u in bad})
        raise UserError(f"The profile uses {len(shown)} plain-http location(s): {', '.join(shown[:3])}"
                        f"{' ...' if len(shown) > 3 else ''}. Nothing was built.",
                        "Packages fetched over http can be replaced on the way. Use https (file:// and local "
                        "folders are fine), or pass --allow-insecure-index if you trust the network.",
                        details="\n".join(shown))


def _markers(data: dict) -> dict[str, str]:
    return graph.marker_environment(data.get("interpreter", {}), data.get("platform", {}))


def check_portability(lock: locks.Lock, profile: prof.Profile, data: dict) -> Portability:
    """Compare the profile's interpreter and platform with the probed target; check every locked wheel's tags."""
    from rebuild.commands.bundle import profile_target

    here = indexinfo.Target.from_probe(data)
    there = profile_target(profile)
    result = Portability(_describe(there), _describe(here))
    if there.python_version != here.python_version:
        result.differences.append(f"Python {'.'.join(map(str, there.python_version))} → "
                                  f"{'.'.join(map(str, here.python_version))}")
    if (there.implementation or "cpython").lower() != (here.implementation or "cpython").lower():
        result.differences.append(f"implementation {there.implementation} → {here.implementation}")
    if there.system and there.system != here.system:
        result.differences.append(f"OS {there.system} → {here.system}")
    if there.machine and indexinfo._linux_arch(there.machine) != indexinfo._linux_arch(here.machine):
        result.differences.append(f"architecture {there.machine} → {here.machine}")
    if there.libc and (there.libc, there.libc_version) != (here.libc, here.libc_version):
        older = ""
        try:
            if there.libc == here.libc and Version(here.libc_version) < Version(there.libc_version):
                older = " (older here: wheels built for the newer one do not load)"
        except InvalidVersion:
            pass
        result.differences.append(f"libc {there.libc} {there.libc_version} → {here.libc} {here.libc_version}{older}")
    tags = set(indexinfo.supported_tags(here))
    env = _markers(data)
    requires_python = lock.data.get("requires-python")
    if isinstance(requires_python, str) and requires_python:
        try:
            if not SpecifierSet(requires_python).contains(here.version, prereleases=True):
                result.incompatible.append(f"the whole lock requires Python {requires_python}")
        except InvalidSpecifier:
            pass
    for pkg in lock.packages:
        if pkg.marker:
            try:
                if not Marker(pkg.marker).evaluate(env):
                    continue  # not for this platform: uv skips it too
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                pass
        if pkg.requires_python:
            try:
                if not SpecifierSet(pkg.requires_python).contains(here.version, prereleases=True):
                    result.incompatible.append(f"{pkg.name} {pkg.version}: requires Python {pkg.requires_python}")
                    continue
            except InvalidSpecifier:
                pass
        fits = False
        for wheel in pkg.wheels:
            try:
                fits = fits or not tags.isdisjoint(parse_wheel_filename(wheel.filename)[3])
            except ValueError:
                continue
        if fits:
            continue
        if pkg.sdist is not None:
            result.from_source.append(f"{pkg.name} {pkg.version}")
        else:
            result.incompatible.append(f"{pkg.name} {pkg.version}: {', '.join(w.filename for w in pkg.wheels)}")
    return result


def portability_error(p: Portability, profile_minor: str) -> UserError:
    names = [line.split(":")[0] for line in p.incompatible]
    what = "; ".join(p.differences) or "the same interpreter and platform"
    return UserError(
        f"{len(p.incompatible)} locked distribution(s) have no wheel for this machine ({p.here}): "
        f"{', '.join(names)}. The profile was made on {p.profile} ({what}). Nothing was built.",
        f"Apply with --python {profile_minor} if that Python is installed here, or add --resolve to re-resolve the "
        "requested packages for this machine, keeping versions as close as possible (the differences are shown "
        "before anything is built).",
        details="No matching wheel:\n" + "\n".join(f"  {line}" for line in p.incompatible))


def _tf_of(pins: dict[str, str], profile: prof.Profile) -> str:
    if profile.tensorflow.distribution and profile.tensorflow.distribution in pins:
        return profile.tensorflow.distribution
    return next((n for n in TF_DISTRIBUTIONS if n in pins), "")


# --------------------------------------------------------------------------- re-resolution (--resolve)


def _tf_candidates(tf: str, pinned: str, index: prof.Index, offline: bool, tags: set, here_version: str) -> list[str]:
    """TensorFlow versions with a wheel for this machine, nearest to ``pinned`` first (newer before older)."""
    try:
        files = indexinfo.list_files(tf, indexinfo.Sources(
            index_urls=[] if index.no_index else [index.index_url or indexconf.PYPI] + index.extra_index_urls,
            find_links=index.find_links, offline=offline))
    except (UserError, OSError):
        return [pinned]
    ok: set[Version] = set()
    for f in files:
        if f.yanked or not indexinfo.wheel_supports(f, tags):
            continue
        if f.requires_python:
            try:
                if not SpecifierSet(f.requires_python).contains(here_version, prereleases=True):
                    continue
            except InvalidSpecifier:
                pass
        ok.add(f.version)
    try:
        base = Version(pinned)
    except InvalidVersion:
        return sorted(map(str, ok), reverse=True)[:1] or [pinned]
    ok = {v for v in ok if not v.is_prerelease or base.is_prerelease}
    newer = sorted(v for v in ok if v >= base)
    older = sorted((v for v in ok if v < base), reverse=True)
    return [str(v) for v in newer + older]


def re_resolve(profile: prof.Profile, pins: dict[str, str], python: Path, data: dict, index: prof.Index, *,
               offline: bool, log: Path | None) -> tuple[locks.Lock, list[planning.Change]]:
    """Resolve the profile's requested packages for ``python`` with its pins as preferences."""
    tf = _tf_of(pins, profile)
    seeds = [n for n in SEED_PACKAGES if n in pins]
    requested = sorted({canonicalize_name(r) for r in profile.requested} - set(TF_DISTRIBUTIONS) | set(seeds))
    if not requested and not tf:
        requested = sorted(pins)
    inputs = resolve.Inputs(python=python, tf_distribution=tf, requested=requested, pins=dict(pins),
                            constraints=dict(profile.constraints), index=index, offline=offline, log=log)
    explanation = ""
    if tf:
        here = indexinfo.Target.from_probe(data)
        tags = set(indexinfo.supported_tags(here))
        resolved = None
        for version in _tf_candidates(tf, pins[tf], index, offline, tags, here.version)[:6]:
            try:
                resolved = resolve.resolve(inputs, version)
                break
            except resolve.ResolutionFailed as exc:
                explanation = exc.explanation
        if resolved is None:
            raise UserError(f"No {tf} near {pins[tf]} resolves for Python {here.version} together with the "
                            "profile's requested packages.", "Relax the profile's [constraints], or build on the "
                            "profile's Python with --python.", exit_code=1,
                            details="uv says:\n" + explanation if explanation else "")
        new_pins, text = resolved.pins, resolved.pylock
    else:
        with tempfile.TemporaryDirectory(prefix="tfrebuild-apply-") as tmp:
            try:
                new_pins, _ = resolve._compile(inputs, requested, [], Path(tmp))
                text = resolve.lock(inputs, new_pins, Path(tmp))
            except resolve.ResolutionFailed as exc:
                raise UserError("The profile's requested packages do not resolve for this machine.",
                                "Relax the profile's [constraints], or build on the profile's Python with --python.",
                                exit_code=1, details="uv says:\n" + exc.explanation) from None
    lock = locks.parse_lock(text, "the re-resolved lock")
    changes = [planning.Change(n, a, b, k, n in set(profile.requested), "re-resolved for this machine")
               for n, a, b, k in planning.diff(pins, lock.pins())]
    return lock, changes


# --------------------------------------------------------------------------- build and checks


def _recover_new(store: Store) -> str | None:
    """Finish or undo an ``apply`` into a new path that was interrupted (the state folder is not managed yet)."""
    journal = store.journal()
    if journal is None:
        leftovers = store.leftover_staging()
        for path in leftovers:
            safe_rmtree(path, store.state)
        return f"removed leftover staging folder(s) {', '.join(map(str, leftovers))}" if leftovers else None
    staging = journal.get("staging")
    key = (journal.get("apply_device"), journal.get("apply_inode"))
    try:
        st = os.lstat(store.env)
        here = (st.st_dev, st.st_ino)
    except OSError:
        here = None
    done = "undid an interrupted apply: removed its staging folder"
    if journal.get("apply_new_env") and key[1] is not None and here == key:
        store.adopt(Generation.new(1, command=str(journal.get("command", "tfrebuild apply")),
                                   tensorflow=str(journal.get("tensorflow", "")),
                                   python=str(journal.get("python", ""))))
        built_lock = Path(staging or "") / "pylock.toml"
        if staging and built_lock.is_file():
            shutil.copyfile(built_lock, store.generation_dir(1) / "pylock.toml")
        done = "finished an interrupted apply: adopted the new environment as generation 1"
    if staging and Path(staging).parent == store.staging_root:
        safe_rmtree(Path(staging), store.state)
    store.commit()
    return done


# --------------------------------------------------------------------------- the command


def run(opts: Options, progress=None, confirm: Callable[[ApplyResult], bool] | None = None) -> ApplyResult:
    """``tfrebuild apply``. ``confirm(preview)`` decides whether to build (``opts.yes`` skips it)."""
    progress = progress or NULL
    start = time.monotonic()
    profile_path = Path(opts.profile).absolute()
    profile = prof.load(profile_path)
    target = Path(os.path.abspath(os.path.expanduser(opts.env))) if opts.env else default_env_path()
    new_env = not os.path.lexists(target)
    if not new_env:
        loc = locate(target)
        if loc.bare:
            raise UserError(f"{target} is an interpreter, not an environment folder.",
                            "apply builds virtual environments; pass a venv folder (new or existing) with --env.")
        target = loc.path
    elif not target.parent.exists() and not os.access(_nearest_parent(target), os.W_OK):
        raise UserError(f"Cannot create {target}: {_nearest_parent(target)} is not writable.",
                        "Choose another --env.")
    trusted = is_trusted(profile_path, target)
    commands = list(profile.smoke.commands)
    if not opts.yes and confirm is None:
        shown = index_urls(profile) + [f"smoke command: {c}" for c in commands]
        raise UserError("tfrebuild apply needs confirmation, and there is no terminal to ask on.",
                        "Review the profile's index URLs and smoke commands (below), then run again with --yes.",
                        details="\n".join(shown))
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
            recovered = store.recover() if store.managed else _recover_new(store)
            if store.managed and not os.path.lexists(target):
                raise UserError(f"{target} does not exist, but tfrebuild has a state folder for it ({store.state}).",
                                f"Move {store.state} away (it holds the old generations), then apply again.")
            new_env = not os.path.lexists(target)
            return _run_locked(opts, profile, profile_path, target, store, new_env, trusted, commands, recovered,
                               progress, confirm, start)
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


def _run_locked(opts: Options, profile: prof.Profile, profile_path: Path, target: Path, store: Store, new_env: bool,
                trusted: bool, commands: list[str], recovered: str | None, progress, confirm,
                start: float) -> ApplyResult:
    from rebuild.env import interpreters

    command = _command_line(profile_path)
    op = new_op_id("apply")
    log = store.log_path(op) if store.managed else store.state / "logs" / f"{op}.log"
    result = ApplyResult(profile=str(profile_path), env=str(target), new_env=new_env, trusted=trusted,
                         index_urls=index_urls(profile), smoke_commands=commands, recovered=recovered,
                         state_dir=str(store.state), log=str(log))
    allowed = trusted or opts.allow_commands
    result.commands_run = allowed and bool(commands)
    if commands and not allowed:
        result.notes.append(f"{len(commands)} smoke command(s) from this profile are shown but not run: tfrebuild did "
                            "not write it for this environment (pass --allow-commands to run them)")

    progress.stage("interpreter", f"Python {opts.python or profile.interpreter.version}")
    if opts.python:
        interp = interpreters.find(opts.python, allow_download=opts.allow_python_download)
    else:
        try:
            interp = locks.find_interpreter(profile.interpreter.version)
        except UserError as exc:
            raise UserError(f"The profile was made with Python {profile.interpreter.version}, and no Python "
                            f"{profile.interpreter.minor} was found here.",
                            f"Install Python {profile.interpreter.minor} (e.g. `pyenv install "
                            f"{profile.interpreter.minor}`), or pass --python X.Y to build on another one "
                            "(with --resolve if the lock's wheels do not fit it).", details=exc.message) from None
    data = probe.run(interp.path)
    result.python, result.python_path = interp.version, str(interp.path)

    index = indexconf.override(locks.usable_index(profile.index), find_links=opts.find_links, offline=opts.offline)
    check_urls(profile, None, opts.allow_insecure_index)
    progress.stage("lock", "reading the profile's lock")
    lock_file = locks.profile_lock_path(profile, profile_path)
    pins_of_profile, skipped = locks.installable_pins(profile)
    result.notes += skipped
    if lock_file is not None:
        lock = locks.read_lock(lock_file)
        result.lock_source = f"the profile's lock {lock_file}"
        _check_consistent(lock, pins_of_profile, lock_file)
    else:
        lock = None
        try:
            lock = locks.lock_pins(pins_of_profile, interp.path, index, offline=opts.offline, log=log,
                                   where=f"the profile {profile_path.name}")
            result.lock_source = "the profile's pins, locked with uv (uv pip compile --no-deps: not re-resolved)"
        except UserError as exc:
            if not opts.resolve:
                portable = check_portability_no_lock(profile, data)
                if portable.differences:
                    exc.message += f" The profile was made on {portable.profile}; this is {portable.here}."
                raise
    check_urls(profile, lock, opts.allow_insecure_index)

    if lock is not None:
        lock, remote, missing = locks.localize(lock, [Path(f) for f in opts.find_links])
        if missing:
            names = ", ".join(m.split(":")[0] for m in missing)
            raise UserError(f"{len(missing)} locked file(s) are not here: {names}. Nothing was built.",
                            "The bundle is incomplete or was not copied whole: make it again with `tfrebuild bundle`, "
                            "or pass --find-links to the folder that has the files.",
                            details="\n".join(f"  {m}" for m in missing))
        if remote and opts.offline:
            result.notes.append(f"--offline: {len(remote)} locked file(s) are not in a --find-links folder and must "
                                "come from uv's cache")
        hosts = sorted({urlsplit(f.url).netloc for p in lock.packages for f in p.files if f.remote})
        result.index_urls += [f"lock files from: {indexconf.redact(h)}" for h in hosts]
        bad = locks.verify_local(lock)
        if bad:
            raise locks.hash_error(bad, str(lock_file or "the lock"))
        portability = check_portability(lock, profile, data)
    else:
        portability = check_portability_no_lock(profile, data)
        portability.incompatible.append("the profile's exact pins cannot be locked for this interpreter")
    result.portability = portability
    if portability.differences:
        result.notes.append(f"the profile was made on {portability.profile}; this is {portability.here}")
    for name in portability.from_source:
        result.notes.append(f"{name} has no wheel for this machine: uv builds it from its sdist")

    pins_before = lock.pins() if lock is not None else pins_of_profile
    if portability.incompatible:
        if not opts.resolve:
            raise portability_error(portability, profile.interpreter.minor)
        progress.stage("resolve", f"re-resolving for Python {interp.version} (--resolve)")
        lock, result.changes = re_resolve(profile, pins_before, interp.path, data, index, offline=opts.offline,
                                          log=log)
        lock, _, _ = locks.localize(lock, [Path(f) for f in opts.find_links])
        result.resolved = True
        result.lock_source = "re-resolved for this machine with uv (--resolve), the profile's versions preferred"
    elif opts.resolve:
        result.notes.append("--resolve was not needed: the lock installs here as it is")

    pins = lock.pins()
    tf = _tf_of(pins, profile)
    result.tensorflow = f"{tf} {pins[tf]}" if tf else ""
    result.packages = len(pins)
    result.hashes = ("required: every package has hashes (--require-hashes)" if lock.all_hashed
                     else "checked where the lock has them (some packages have none)")

    current = None
    if not new_env:
        current = snapshot.take(target)
        old = {p.name: p.version for p in current.packages if p.location == "env"}
        result.env_changes = [planning.Change(n, a, b, k, n in set(profile.requested))
                              for n, a, b, k in planning.diff(old, pins)]
        if not result.env_changes and current.interpreter.version == interp.version:
            result.notes.append("the environment already holds exactly this set: nothing to do")
            result.seconds = time.monotonic() - start
            return result

    if not opts.yes and not confirm(result):
        raise UserError("Apply cancelled; nothing was changed.", exit_code=1)

    run_commands = commands if allowed else []
    requested = {canonicalize_name(n) for n in profile.requested if n not in SEED_PACKAGES}
    adoption = None
    if current is not None:
        old_tf = current.tensorflow
        adoption = transaction.Adoption(tensorflow=f"{old_tf.distribution} {old_tf.version}" if old_tf.distribution
                                        else "", python=current.interpreter.version, like=current)
    transaction.run(transaction.Spec(
        store=store, op=op, kind="apply", command=command, python=Path(interp.path), python_version=interp.version,
        tensorflow=result.tensorflow, pylock=lock.text(), index=index,
        build=dict(offline=opts.offline, require_hashes=lock.all_hashed, compile_bytecode=not opts.no_compile,
                   log=log, requested=requested),
        checks=dict(tf_version=pins.get(tf, ""), imports=list(profile.smoke.imports), commands=run_commands),
        write_profile=generations.write_profile, like=profile, commands=run_commands, log=log, new_env=new_env,
        adopt=adoption, before_swap=lambda: generations.refuse_if_in_use(store.env, opts.force),
        progress=progress), result)
    result.seconds = time.monotonic() - start
    return result


def check_portability_no_lock(profile: prof.Profile, data: dict) -> Portability:
    """Differences only (there is no lock to check wheel tags against)."""
    empty = locks.Lock({"packages": []}, [], "", None)
    return check_portability(empty, profile, data)


def _check_consistent(lock: locks.Lock, pins: dict[str, str], lock_file: Path) -> None:
    """The lock must pin what the profile records (an edited lock is refused)."""
    locked = lock.pins()
    differ = [f"{n}: profile {pins[n]}, lock {locked[n]}" for n in sorted(set(pins) & set(locked))
              if pins[n] != locked[n]]
    if differ:
        raise UserError(f"The lock {lock_file} and its profile disagree on {len(differ)} version(s): "
                        f"{', '.join(d.split(':')[0] for d in differ)}. Nothing was built.",
                        "One of them was edited by hand. " + locks.NEW_LOCK_HINT, details="\n".join(differ))
