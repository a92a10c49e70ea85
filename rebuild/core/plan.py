"""``tfrebuild plan``: everything up to and including resolution; changes nothing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from packaging.version import InvalidVersion, Version

from rebuild.core import carry, companionstep, resolve, sources
from rebuild.core.carry import Carry
from rebuild.core.changes import Change, diff
from rebuild.core.changes import kind as kind_of
from rebuild.core.gpuroute import check_driver, gpu_route
from rebuild.core.kerasplan import _keras_major, _keras_notes, _keras_switch, keras2_dependents
from rebuild.core.options import Gpu, Keras, PathCheck, Route, Strategy
from rebuild.core.planinputs import _inputs, _interpreter, _Survey, _survey
from rebuild.core.plannotes import (
    _dropped_notes,
    _reason,
    _requested_notes,
    _route_notes,
    _source_notes,
    _switch_reason,
    requirement_name,
)
from rebuild.core.planproject import _lockable_target, _own_package, _project
from rebuild.core.targets import (
    NewerRelease,
    _target_version,
    blocking_companions,
    conflict_error,
    constraint_note,
    doctor_preflight,
    newer_for_other_python,
)
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.knowledge.tf import TF_DISTRIBUTIONS
from rebuild.project.detect import Project
from rebuild.util.progress import NULL

if TYPE_CHECKING:
    from rebuild.core.preflight import Background
    from rebuild.core.reuse import Reuse
    from rebuild.core.search import Blocker
    from rebuild.doctor.findings import Finding
    from rebuild.util.progress import Progress


@dataclass(frozen=True)
class Options:
    """The options ``plan`` and ``upgrade`` share, built once; the choices are checked on construction."""

    env: str | os.PathLike[str] | None = None
    to: str = "latest"
    profile: str | os.PathLike[str] | None = None
    python: str | None = None
    strategy: Strategy = Strategy.MINIMAL
    pre: bool = False
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)  # --constraint files, on top of the configured ones
    offline: bool = False
    no_compile: bool = False
    allow_python_download: bool = False
    yes: bool = False
    force: bool = False  # swap even while processes run from the env
    allow_sources: bool = False  # a foreign --profile's non-index sources, and building sdists for it
    allow_commands: bool = False  # a foreign --profile's [smoke].commands, which upgrade runs in the new env
    keras: Keras = Keras.AUTO
    gpu: Gpu = Gpu.AUTO
    check: PathCheck = PathCheck.VERSIONS  # what runs at the path after the swap (upgrade)
    allow_downgrade: bool = False  # upgrade --yes may move a requested package backwards
    holds: list[str] = field(default_factory=list)  # requirement lines a search's fix adds ("setuptools<81")
    build_constraints: list[str] = field(default_factory=list)  # --build-constraint files (sdists' build deps)
    search: bool = True  # --to latest: try lower releases when the checks fail (core/search.py)
    explain: bool = True  # a conflict names the newest release that resolves (resolutions; the search skips it)
    models: list[str] = field(default_factory=list)  # --model PATH: saved models the new env must load the same
    no_reference_checks: bool = False  # the old env's reference checks (imports, models): off

    def __post_init__(self) -> None:
        for name, choice in (("strategy", Strategy), ("keras", Keras), ("gpu", Gpu), ("check", PathCheck)):
            object.__setattr__(self, name, choice.parse(getattr(self, name)))
        for name in ("extra_index_urls", "find_links", "constraints", "holds", "build_constraints"):
            object.__setattr__(self, name, [str(v) for v in getattr(self, name) or []])


@dataclass
class Plan:
    env: str
    tf_distribution: str
    tf_old: str
    tf_new: str
    target: str
    downgrade: bool
    python_old: str
    python_new: str
    python_path: str
    strategy: Strategy
    changes: list[Change]
    unchanged: int
    capped: list[str]
    notes: list[str]
    index: prof.Index
    seconds: float
    newer_release: NewerRelease | None = None  # the env's Python limits the target: what a newer one gets
    # Not rendered: what build needs.
    current: prof.Profile = field(repr=False, default=None)  # type: ignore[assignment]  # set by make_plan
    keras_legacy: bool = False
    keras2_dependents: list[str] = field(default_factory=list)
    preflight: list[Finding] = field(default_factory=list)  # doctor findings that matter for this upgrade
    gpu_route: Route | str = ""  # a Route ("" only before a plan chose one)
    gpu_required: bool = False  # smoke checks must see a GPU
    new_requested: list[str] = field(repr=False, default_factory=list)
    tf_old_distribution: str = ""  # the TensorFlow distribution installed now (differs on a variant switch)
    tf_switch: str = ""  # why the variant changes (tensorflow-cpu → tensorflow), "" when it does not
    # [smoke] and [constraints] the user asked for (set by make_plan)
    intent: prof.Profile = field(repr=False, default=None)  # type: ignore[assignment]
    pylock: str = field(repr=False, default="")
    index_live: prof.Index = field(repr=False, default=None)  # type: ignore[assignment]  # set by make_plan
    project: Project | None = field(repr=False, default=None)  # the manager that owns the env
    project_requirement: str = ""  # the project's TensorFlow requirement after the upgrade (a drivable project)
    companions: dict[str, str] = field(default_factory=dict)  # installed companion -> why it moves with TensorFlow
    requested_downgrades: list[str] = field(default_factory=list)  # "name old → new" of requested packages moved back
    keras_needed_by: list[str] = field(default_factory=list)  # why Keras 2 is kept (--keras auto)
    landing_note: str = ""  # --to latest held below the newest release by the companion table
    blocked_above: list[Blocker] = field(default_factory=list)  # search.Blocker: --to latest found no release above the
    # installed one that passes (this plan changes nothing): what stood in the way of each
    carry: Carry | None = None  # the user's own files and settings outside the lock, carried or not
    resolution_reused: list[str] = field(default_factory=list)  # upgrade after plan: the plan's resolution(s) reused

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and self.python_old == self.python_new


def _preflight(
    loc: EnvLocation,
    data: Probed,
    tf_new: str,
    tf: str,
    python_version: str,
    index: prof.Index,
    opts: Options,
    **more: Any,
) -> list[Finding]:
    """Doctor's findings for this upgrade: what would also break the new env, and what the rebuild cures."""
    from rebuild import doctor

    try:
        findings = doctor_preflight(loc, data, tf_new, tf, python_version, index, opts, **more)
    except (UserError, OSError) as exc:
        return [doctor.FindingId.PREFLIGHT_SKIPPED.make(f"pre-flight checks skipped: {exc}")]
    return [
        f for f in findings if f.affects_new_env or f.fixed_by_rebuild or f.dropped_by_rebuild or f.severity == "error"
    ]


def _resolve(
    inputs: resolve.Inputs,
    survey: _Survey,
    tf_new: str,
    python_version: str,
    index: prof.Index,
    opts: Options,
    target_requires: Callable[[], list[str] | None] | None = None,
) -> tuple[resolve.Resolved, str]:
    """Resolve with uv. If companions pull ``tensorflow`` in beside another variant, resolve again with
    ``tensorflow`` alone (``inputs.tf_distribution`` changes) and say why in the note."""
    tf, tf_old = inputs.tf_distribution, survey.current.tensorflow.version
    try:
        resolved = resolve.resolve(inputs, tf_new, target_requires)
    except resolve.ResolutionFailed as exc:
        companions = blocking_companions(survey.loc, survey.data, tf_new, tf, python_version, index, opts)
        err = conflict_error(
            inputs,
            tf_new,
            tf_old,
            exc.explanation,
            companions,
            look_lower=opts.explain,
            env=survey.loc.path,
            profile=Path(opts.profile) if opts.profile else None,
        )
        err.inputs, err.tf_new, err.tf_old = inputs, tf_new, tf_old  # for the target search (commands/upgrade)
        raise err from None
    variants = [v for v in TF_DISTRIBUTIONS if v in resolved.pins]
    if not (len(variants) > 1 and "tensorflow" in variants and tf != "tensorflow"):
        return resolved, ""
    # Companions (tf-keras, tensorflow-text ...) require `tensorflow`: with tensorflow-cpu both would be
    # installed over each other. Keep one: `tensorflow`, which they accept.
    wanting = sorted(p for p in resolved.via.get("tensorflow", []) if p not in ("(requested)", tf))
    note = (
        f"{', '.join(wanting) or 'a requested package'} require(s) `tensorflow`, so {tf} and tensorflow "
        f"would both be installed, overwriting each other's files; the new env has tensorflow "
        f"{tf_new} only (the same TensorFlow, published under the other name)"
    )
    inputs.tf_distribution = "tensorflow"
    inputs.requested = [r for r in inputs.requested if requirement_name(r) not in TF_DISTRIBUTIONS]
    try:
        return resolve.resolve(inputs, tf_new), note
    except resolve.ResolutionFailed as exc:
        raise conflict_error(
            inputs,
            tf_new,
            tf_old,
            exc.explanation,
            env=survey.loc.path,
            profile=Path(opts.profile) if opts.profile else None,
        ) from None


def _changes(survey: _Survey, resolved: resolve.Resolved, tf: str, tf_new: str, switch: str = "") -> list[Change]:
    requested = set(survey.current.requested)
    tf_versions = {n: v for n, v in survey.pins.items() if n in TF_DISTRIBUTIONS}
    changes = [
        Change(
            name,
            old,
            new,
            kind,
            name in requested,
            _reason(
                name,
                old,
                new,
                tf,
                resolved.via,
                survey.requires,
                tf_new,
                requested,
                survey.current.tensorflow.version,
                tf_versions,
            ),
        )
        for name, old, new, kind in diff(survey.pins, resolved.pins)
    ]
    if switch:  # the variant switch is one row, old variant → new, with its reason; the old one's removal says so
        old_version = survey.pins[survey.tf]
        for c in changes:
            if c.name == tf and c.old is None:
                c.old, c.kind, c.replaces = old_version, kind_of(old_version, c.new), survey.tf
                c.requested = survey.tf in requested
                c.reason = f"the upgrade target; variant switch: {switch}"
            elif c.name == survey.tf and c.new is None:
                c.reason = f"replaced by {tf} (variant switch, see {survey.tf} → {tf})"
    changes.sort(key=lambda c: (not c.requested, c.name != tf, c.name))
    return changes


def _checked_findings(
    survey: _Survey,
    resolved: resolve.Resolved,
    tf_new: str,
    tf: str,
    python_version: str,
    index: prof.Index,
    opts: Options,
    started: Background | None = None,
) -> list[Finding]:
    """The pre-flight's findings (``started``: the one running in the background, when it checked ``tf``)."""
    if started is not None and started.tf_distribution == tf:
        findings = started.findings()
    else:
        findings = _preflight(survey.loc, survey.data, tf_new, tf, python_version, index, opts)
    if len([v for v in TF_DISTRIBUTIONS if v in resolved.pins]) == 1:
        for f in findings:  # the new env has one variant: the overlap is cured by the rebuild
            if f.id == "tensorflow-variants":
                f.fixed_by_rebuild, f.affects_new_env = True, False
            # "<name> <version> does not allow <target>" (or "… need incompatible versions of <dep>"): the
            # resolution moved (or dropped) a package that holds the conflict, so the new env does not have it;
            # otherwise it stays an error that blocks the upgrade.
            elif f.id in ("target-blocked", "dependency-conflict") and f.holders:
                if any(resolved.pins.get(name) != version for name, version in f.holders.items()):
                    f.fixed_by_rebuild, f.affects_new_env = True, False
    from rebuild.doctor import judge

    findings = judge.agree(findings, resolved.pins, opts.strategy)  # what the pre-flight says is what this plan does
    return findings + judge.numpy_abi(resolved.pins, survey.data.distributions)


def blocking_findings(findings: list[Finding]) -> list[Finding]:
    """Pre-flight errors that the new env would have too: ``upgrade`` refuses on them before building."""
    return [f for f in findings if f.severity == "error" and f.affects_new_env and not f.fixed_by_rebuild]


def preflight_refusal(the_plan: Plan) -> UserError | None:
    """One paragraph naming the pre-flight errors that block the upgrade, with their fixes."""
    blocking = blocking_findings(the_plan.preflight)
    if not blocking:
        return None
    names = "; ".join(f"{f.id}: {f.title}" for f in blocking)
    fixes = " ".join(f"{f.id}: {f.fix}." for f in blocking if f.fix)
    details = "\n\n".join(f"[{f.id}] {f.title}\n" + "\n".join(f"  {e}" for e in f.evidence) for f in blocking)
    return UserError(
        f"The pre-flight checks found error(s) that the new env would have too, so the upgrade of "
        f"{the_plan.env} stops before building: {names}.",
        f"{fixes} Then run `tfrebuild doctor --env {the_plan.env} --to {the_plan.tf_new}` again. Nothing was changed.",
        exit_code=1,
        details=details,
    )


def make_plan(
    opts: Options, progress: Progress | None = None, log: Path | None = None, reuse: Reuse | None = None
) -> Plan:
    """Snapshot, pick the target, resolve with uv, and describe the difference. ``reuse``: a
    :class:`rebuild.core.reuse.Reuse` (``plan`` keeps its resolution, ``upgrade`` reuses the plan's)."""
    progress = progress or NULL
    start = time.monotonic()
    target = resolve.parse_target(opts.to)
    progress.stage("snapshot")
    survey = _survey(opts)
    current, tf_old = survey.current, survey.current.tensorflow.version
    project = _own_package(survey)
    direct = sources.direct_sources(survey.data)
    direct.pop(survey.own, None)
    sources.check_present(direct, survey.loc.path)
    tf, extras, route = gpu_route(opts.gpu, survey.tf, current)
    index = indexconf.override(
        indexconf.discover(prefix=survey.loc.path),
        index_url=opts.index_url,
        extra_index_urls=opts.extra_index_urls,
        find_links=opts.find_links,
        offline=opts.offline,
        constraints=opts.constraints,
    )
    interp, python_note = _interpreter(opts, current, tf, extras, target, index)
    inputs = _inputs(opts, survey, interp, tf, extras, index, log)
    inputs.reuse = reuse
    if reuse is not None:
        reuse.env = str(survey.loc.path)
    progress.stage(
        "resolve", f"{tf}{'[' + ','.join(extras) + ']' if extras else ''} {target.raw} for Python {interp.version}"
    )
    tf_new = _target_version(inputs, target, interp.version, opts.pre)
    tf_new, lock_note = _lockable_target(project, survey, inputs, target, tf_new, opts, log)
    from dataclasses import replace as _copy

    from rebuild.core.preflight import Background

    frozen = _copy(inputs, requested=list(inputs.requested), reuse=None)  # the resolution may change inputs meanwhile
    newer_job = Background(
        lambda _: newer_for_other_python(
            frozen, target, tf_new, interp.version, current.platform.system, current.platform.machine
        ),
        tf,
    )
    if route == Route.CUDA:
        check_driver(current.gpu, tf_new)
    tf_new, landing_note = _companion_ceiling(survey, inputs, target, tf_new, tf_old)
    step = companionstep.apply(
        inputs, survey.pins, survey.data, tf_new, current.interpreter.version, interp.version, opts.holds
    )
    keras_legacy = _keras_switch(opts.keras, survey.data, inputs, tf_new, step.keras2, tf_old)
    started = Background(
        lambda requires: _preflight(
            survey.loc, survey.data, tf_new, tf, interp.version, index, opts, target_requires=requires, extras=extras
        ),
        tf,
    )
    resolved, variant_note = _resolve(
        inputs, survey, tf_new, interp.version, index, opts, target_requires=started.target_requires
    )
    resolved, backwards = _forward(inputs, survey, resolved, tf_new)
    tf = inputs.tf_distribution
    switch = _switch_reason(survey, resolved, tf, route, variant_note)
    changes = _changes(survey, resolved, tf, tf_new, switch)
    for c in changes:  # the companions' (and the new Python's) moves say why
        if c.name in step.reasons and c.new and c.name != tf:
            c.reason = step.reasons[c.name] + (f"; {c.reason}" if c.reason else "")
    downgrade = Version(tf_new) < Version(tf_old) if tf_old else False
    notes = [f"downgrade: {tf} {tf_old} → {tf_new} (lower than what is installed)"] if downgrade else []
    if tf_old == tf_new and not lock_note:
        notes.append(f"{tf} is already at {tf_new}, the newest release that matches --to {target.raw}")
    notes += [python_note] if python_note else []
    notes += [lock_note] if lock_note else []
    notes += _source_notes(survey, direct)
    held = constraint_note(inputs, target, tf_new) if target.kind != "exact" else ""
    notes += [held] if held else []
    notes = (
        [
            f"moves backwards, requested by you: {', '.join(backwards)} (no plan keeps them; `upgrade` asks, "
            "and refuses under --yes unless --allow-downgrade)"
        ]
        if backwards
        else []
    ) + notes
    notes += [landing_note] if landing_note else []
    notes += step.notes
    notes += _route_notes(survey, tf, extras, route, variant_note)
    dependents = keras2_dependents(survey.requires)
    notes += _keras_notes(tf_old, tf_new, keras_legacy, resolved.pins.get("tf-keras", ""), dependents)
    if keras_legacy and opts.keras == Keras.AUTO and step.keras2 and _keras_major(tf_old) == 2:
        notes.append(
            f"Keras 2 kept (--keras auto): {', '.join(step.keras2)} need(s) it (the companion table, "
            "rebuild/knowledge/data/companions.toml); --keras 3 forces Keras 3"
        )
    notes += _dropped_notes(survey.pins, resolved, tf_old, tf_new)
    notes += _requested_notes(survey)
    project, project_requirement = _project(project, tf, tf_new)
    notes += list(project.notes) if project is not None and project.drivable else []
    if project is not None and project.drivable:  # the user's edits to the project files: the starting point
        from rebuild.project import files as project_files

        notes += project_files.edits_note(survey.loc.path)
    progress.stage("pre-flight", "doctor checks (run alongside the resolution)")
    findings = _checked_findings(survey, resolved, tf_new, tf, interp.version, index, opts, started)
    carried = carry.survey(
        survey.data,
        survey.loc.path,
        built_by_project=project is not None and project.drivable,
        locked=frozenset(resolved.pins),
    )
    findings = carry.mark(findings, carried)
    newer = newer_job.result()
    reused = list(reuse.used) if reuse is not None else []
    notes += [f"resolution reused: {text}" for text in reused]
    notes += [f"resolution not reused: {text}" for text in (reuse.refused if reuse is not None else [])]
    notes += [
        f"{name} kept below its next major version ({resolved.pins.get(name)}): a newer major also "
        "resolves; use --strategy eager to take it"
        for name in resolved.capped
    ]
    return Plan(
        env=str(survey.loc.path),
        tf_distribution=tf,
        tf_old=tf_old,
        tf_new=tf_new,
        target=target.raw,
        downgrade=downgrade,
        python_old=current.interpreter.version,
        python_new=interp.version,
        python_path=str(interp.path),
        strategy=opts.strategy,
        changes=changes,
        unchanged=len(set(survey.pins) & set(resolved.pins))
        - sum(1 for c in changes if c.old and c.new and not c.replaces),
        capped=resolved.capped,
        notes=notes,
        index=indexconf.redacted(index),
        seconds=time.monotonic() - start,
        newer_release=newer,
        keras_legacy=keras_legacy,
        keras2_dependents=dependents,
        preflight=findings,
        gpu_route=route,
        gpu_required=route == Route.CUDA,
        current=current,
        new_requested=inputs.requested,
        pylock=resolved.pylock,
        index_live=index,
        tf_old_distribution=survey.tf,
        tf_switch=switch,
        intent=survey.intent or current,
        project=project,
        project_requirement=project_requirement,
        companions={n: r for n, r in step.reasons.items()},
        requested_downgrades=backwards,
        keras_needed_by=step.keras2 if keras_legacy else [],
        landing_note=landing_note,
        resolution_reused=reused,
        carry=carried,
    )


def _companion_ceiling(
    survey: _Survey, inputs: resolve.Inputs, target: resolve.TargetSpec, tf_new: str, tf_old: str
) -> tuple[str, str]:
    """``--to latest`` lands below a release that an installed companion does not reach (end of life): the newest
    release below it, with a note naming the companion and the fact's source. Other targets are kept (strict)."""
    ceiling, by = companionstep.companion_ceiling(survey.pins, set(survey.current.requested))
    if not ceiling or target.kind != "latest" or Version(tf_new) < Version(ceiling + ".0"):
        return tf_new, ""
    below = resolve.TargetSpec(target.raw, "latest", f"<{ceiling}")
    try:
        landing = resolve.find_target(inputs, below)
    except resolve.ResolutionFailed:
        return tf_new, ""
    if tf_old and Version(landing) < Version(tf_old):
        landing = tf_old
    return landing, (
        f"landing point {inputs.tf_distribution} {landing}, not {tf_new}: "
        + "; ".join(by)
        + f". To go further, drop it from the env (or pass --to {tf_new} to try anyway)"
    )


def _forward(
    inputs: resolve.Inputs, survey: _Survey, resolved: resolve.Resolved, tf_new: str
) -> tuple[resolve.Resolved, list[str]]:
    """A requested package is never moved backwards silently: resolve again holding each such package at its
    installed version or above (what holds it back then moves forward); when no plan does, say which move back."""
    requested = set(survey.current.requested) - set(TF_DISTRIBUTIONS)

    def back(res: resolve.Resolved) -> list[str]:
        out = []
        for name in sorted(requested):
            old, new = survey.pins.get(name), res.pins.get(name)
            try:
                if old and new and Version(new) < Version(old):
                    out.append(name)
            except InvalidVersion:
                continue
        return out

    names = back(resolved)
    if not names:
        return resolved, []
    saved = dict(inputs.constraints)
    for name in names:
        inputs.constraints[name] = ",".join(s for s in (saved.get(name, ""), f">={survey.pins[name]}") if s)
    try:
        return resolve.resolve(inputs, tf_new), []
    except resolve.ResolutionFailed:
        inputs.constraints = saved
        return resolved, [f"{n} {survey.pins[n]} → {resolved.pins[n]}" for n in names]
