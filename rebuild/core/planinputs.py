"""The first stages of a plan: the env surveyed (where it is, what the probe saw, its profile and the user's
``--profile``, checked for consent), the interpreter the new env is built on (``--python auto`` included), and uv's
inputs made from them (requested packages, pins, constraints, direct sources, build constraint files). Split from
:mod:`rebuild.core.plan` (same code), which runs them.
"""

from __future__ import annotations

import atexit
import functools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from rebuild.core import consent, resolve, sources
from rebuild.core.plannotes import requirement_name
from rebuild.env import interpreters, probe, refusals
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation, locate
from rebuild.env.probed import Probed
from rebuild.env.snapshot import build_profile
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.knowledge.tf import SEED_PACKAGES, TF_DISTRIBUTIONS

if TYPE_CHECKING:
    from rebuild.core.plan import Options


def base_interpreter(current: prof.Profile) -> interpreters.Interpreter:
    """The interpreter the env was made from (its base), verified to run."""
    minor = current.interpreter.minor
    base = Path(current.interpreter.base_prefix)
    ran = os.path.realpath(current.interpreter.executable) if current.interpreter.executable else ""
    for name in (f"bin/python{minor}", "bin/python3", "python.exe"):
        candidate = base / name
        if candidate.exists():
            # the env's python is a link to this very file: the probe just ran it, and said its version
            same = bool(ran) and os.path.realpath(candidate) == ran and current.interpreter.version.count(".") == 2
            version = current.interpreter.version if same else interpreters.version_of(candidate)
            if version:
                return interpreters.Interpreter(candidate, version, "base of the env")
    return interpreters.find(current.interpreter.version)


def _requested_requirements(current: prof.Profile, override: prof.Profile | None) -> list[str]:
    source = override or current
    names = [n for n in source.requested if n not in TF_DISTRIBUTIONS]
    names += [p.name for p in current.packages if p.name in SEED_PACKAGES and p.location == "env"]
    return sorted(dict.fromkeys(names))


def _python_auto(
    current: prof.Profile, tf: str, extras: list[str], target: resolve.TargetSpec, index: prof.Index, opts: Options
) -> tuple[interpreters.Interpreter, str]:
    """``--python auto``: the newest interpreter on this machine for which the target has a wheel."""
    found = interpreters.discover()
    minors: dict[str, interpreters.Interpreter] = {}
    for interp in found:  # newest first; one per minor, skipping Pythons older than 3.8
        if interp.minor not in minors and Version(interp.version) >= Version("3.8"):
            minors[interp.minor] = interp
    listing = ", ".join(f"{i.version} ({i.path}, {i.source})" for i in minors.values()) or "none"
    for interp in minors.values():
        probe_inputs = resolve.Inputs(
            python=interp.path,
            tf_distribution=tf,
            requested=[],
            pins={},
            index=index,
            offline=opts.offline,
            pre=opts.pre,
            extras=extras,
        )
        try:
            version = resolve.find_target(probe_inputs, target)
        except resolve.ResolutionFailed:
            continue
        return interp, (
            f"--python auto: interpreters found: {listing}; chose {interp.version} ({interp.path}), "
            f"the newest that {tf} {version} has a wheel for"
        )
    raise UserError(
        f"No interpreter on this machine can run {tf} {target.raw}.",
        f"Interpreters found: {listing}. Install a Python that `tfrebuild releases` lists for it.",
    )


@dataclass
class _Survey:
    """The env as it is (stage "snapshot"): where, what the probe saw, its profile, its TensorFlow."""

    loc: EnvLocation
    data: Probed
    current: prof.Profile
    override: prof.Profile | None  # --profile
    tf: str  # the TensorFlow distribution installed (or the profile's)
    no_build: bool = False  # a foreign --profile without --allow-sources: uv builds nothing
    intent: prof.Profile | None = None  # whose [smoke] and [constraints] count: --profile, else the generation's
    own: str = ""  # a driven project's own package: its requirements are the project's, moved with TensorFlow
    own_requirements: list[str] = field(default_factory=list)  # the project's [project].dependencies

    @property
    def pins(self) -> dict[str, str]:
        return {p.name: p.version for p in self.current.packages if p.location == "env" and p.name != self.own}

    @property
    def requires(self) -> dict[str, list[str]]:
        return {d["canonical"]: d.get("requires", []) for d in self.data.distributions if d.get("location") == "env"}


def load_override(opts: Options, loc: EnvLocation, *, runs_commands: bool = False) -> tuple[prof.Profile | None, bool]:
    """``--profile``, checked (every field, and consent when it is not this env's own), and whether it is trusted.

    ``runs_commands``: the caller (upgrade) runs the profile's ``[smoke].commands``, which then need consent too."""
    if not opts.profile:
        return None, True
    override = prof.load(Path(opts.profile))
    trusted = consent.is_trusted(opts.profile, loc.path)
    consent.check(
        override,
        Path(opts.profile).absolute(),
        trusted=trusted,
        kinds=("sources", "commands") if runs_commands else ("sources",),
        allowed=consent.Allowed(sources=opts.allow_sources, commands=opts.allow_commands),
        command="upgrade" if runs_commands else "plan",
    )
    return override, trusted


def _survey(opts: Options) -> _Survey:
    loc: EnvLocation = locate(opts.env)
    if loc.bare:
        raise UserError(
            f"{loc.python} is a bare interpreter, not a virtual environment.",
            "tfrebuild upgrades venv, virtualenv, uv and conda environments; create one first.",
        )
    mounted = refusals.mount_point(loc.path)  # upgrade's refusal, said by plan too: a mount point cannot be swapped
    if mounted is not None:
        raise mounted
    data = probe.run(loc.python)
    current = build_profile(loc, data)
    override, trusted = load_override(opts, loc)
    tf = current.tensorflow.distribution or (override.tensorflow.distribution if override else "")
    if not tf:
        raise UserError(
            f"{loc.path} has no TensorFlow installed.",
            "tfrebuild upgrades TensorFlow environments; install one first or pass --profile.",
        )
    return _Survey(
        loc,
        data,
        current,
        override,
        tf,
        no_build=not trusted and not opts.allow_sources,
        intent=intent_profile(loc.path, current, override),
    )


def intent_profile(env: Path, current: prof.Profile, override: prof.Profile | None) -> prof.Profile:
    """The profile whose ``[smoke]`` and ``[constraints]`` are the user's intent.

    ``--profile`` first; else the current generation's ``profile.toml`` (where the user's
    edits live, and where each upgrade carries them forward); else the env's snapshot.
    """
    if override is not None:
        return override
    from rebuild.store.store import Store

    try:
        store = Store.open(env)
    except UserError:
        store = None
    if store is not None:
        path = store.generation_dir(store.current_number) / "profile.toml"
        if path.is_file():
            return prof.load(path)
    return current


def _interpreter(
    opts: Options, current: prof.Profile, tf: str, extras: list[str], target: resolve.TargetSpec, index: prof.Index
) -> tuple[interpreters.Interpreter, str]:
    """The interpreter the new env is built on, and a note when ``--python auto`` chose it."""
    if opts.python == "auto":
        return _python_auto(current, tf, extras, target, index, opts)
    if opts.python:
        return interpreters.find(opts.python, allow_download=opts.allow_python_download), ""
    return base_interpreter(current), ""


def _inputs(
    opts: Options,
    survey: _Survey,
    interp: interpreters.Interpreter,
    tf: str,
    extras: list[str],
    index: prof.Index,
    log: Path | None,
) -> resolve.Inputs:
    direct = sources.direct_sources(survey.data)
    requested = [
        r
        for r in _requested_requirements(survey.current, survey.override)
        if requirement_name(r) not in direct and requirement_name(r) not in sources.SELF
    ]
    if survey.own:  # a driven project: its own package stands for the project's requirements (TF moves)
        direct.pop(survey.own, None)
        requested = [r for r in requested if requirement_name(r) != survey.own]
        requested += [
            r
            for r in survey.own_requirements
            if requirement_name(r) not in TF_DISTRIBUTIONS
            and requirement_name(r) not in {requirement_name(q) for q in requested}
        ]
    inputs = resolve.Inputs(
        python=interp.path,
        tf_distribution=tf,
        requested=requested,
        pins=survey.pins,
        constraints=dict((survey.intent or survey.override or survey.current).constraints),
        index=index,
        offline=opts.offline,
        pre=opts.pre,
        strategy=opts.strategy,
        log=log,
        extras=extras,
        direct={n: s.requirement for n, s in direct.items()},
        no_build=survey.no_build,
        build_constraints=build_constraint_files(opts),
    )
    if tf != survey.tf:  # another variant: the installed one is not requested
        inputs.requested = [r for r in inputs.requested if requirement_name(r) not in TF_DISTRIBUTIONS]
    return inputs


def build_constraint_files(opts: Options) -> list[str]:
    """``--build-constraint`` files, then ``UV_BUILD_CONSTRAINT``'s (space-separated): they reach every uv call that
    may build an sdist (resolution and install; uv drops the variable from an install's environment)."""
    given = [str(Path(f).expanduser().resolve()) for f in opts.build_constraints]
    for given_path, path in zip(opts.build_constraints, given, strict=True):
        if not Path(path).is_file():
            raise UserError(
                f"The build constraint file {given_path} given with --build-constraint does not exist or "
                "is not a file.",
                "Pass an existing requirements-style file. Nothing was changed.",
            )
    from_env = [str(Path(f).expanduser().resolve()) for f in os.environ.get("UV_BUILD_CONSTRAINT", "").split() if f]
    configured = indexconf.build_constraint_dependencies()  # uv.toml / [tool.uv]: uv runs with --no-config
    from_config = [_lines_file(tuple(configured))] if configured else []
    return list(dict.fromkeys(given + from_env + from_config))


@functools.cache
def _lines_file(lines: tuple[str, ...]) -> str:
    """A private file (0600, removed at exit) holding ``lines``: uv takes build constraints as files only."""
    fd, path = tempfile.mkstemp(prefix="tfrebuild-build-constraints-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return path
