"""Which TensorFlow release a plan can target, and why not: wheels for this Python, a newer release for
another Python, constraints that hold it, conflicts that block it."""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from rebuild.core import resolve
from rebuild.env import interpreters
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.knowledge.tf import SEED_PACKAGES

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

    from rebuild.core.plan import Options
    from rebuild.doctor.findings import Finding
    from rebuild.env.locate import EnvLocation
    from rebuild.env.probed import Probed
    from rebuild.env.profile import Index


@dataclass
class NewerRelease:
    """A newer TensorFlow release that matches ``--to`` but has no wheel for the new env's Python."""

    version: str
    pythons: list[str]  # CPython minors it has wheels for on this platform ("3.10", ...)
    python_option: str  # the --python that gets it: an installed interpreter's minor, else the newest minor
    interpreter: str = ""  # that installed interpreter's path; "" when none is installed here

    @property
    def text(self) -> str:
        where = (
            f"--python {self.python_option} ({self.interpreter}) or --python auto gets it"
            if self.interpreter
            else f"no such Python is installed here; install one (e.g. `pyenv install {self.python_option}`) and "
            f"pass --python {self.python_option}"
        )
        return f"{self.version} exists for Python {', '.join(self.pythons)}: {where}"


def _tf_files(inputs: resolve.Inputs) -> list[Any]:
    """The TensorFlow distribution's files on the configured index and find-links folders."""
    from rebuild.index import simple as indexinfo

    return indexinfo.list_files(
        inputs.tf_distribution,
        indexinfo.Sources(
            index_urls=[] if inputs.index.no_index else [inputs.index.index_url] + inputs.index.extra_index_urls,
            find_links=inputs.index.find_links,
            offline=inputs.offline,
        ),
    )


def no_wheel_error(
    inputs: resolve.Inputs, target: resolve.TargetSpec, python_version: str, explanation: str
) -> UserError:
    """The target has no wheel for this interpreter: say which Pythons it supports and which are here."""
    from rebuild.index import simple as indexinfo
    from rebuild.index import tags as wheel_tags

    supported: list[str] = []
    try:
        files = _tf_files(inputs)
        wanted = [
            v
            for v in indexinfo.versions(files, prereleases=inputs.pre)
            if not target.specifier or v in _specifier(target)
        ]
        if wanted:
            supported = wheel_tags.python_versions_with_wheels(files, wanted[0], "Linux", os.uname().machine)
    except (UserError, OSError):
        pass
    local = [i for i in interpreters.discover() if i.minor in supported]
    hint = ""
    if local:
        hint = (
            f"Interpreters here that qualify: {', '.join(f'{i.version} ({i.path})' for i in local)}. "
            f"Move the env to one with --python {local[0].minor}."
        )
    elif supported:
        hint = f"None of them is installed here; install one (e.g. `pyenv install {supported[-1]}`) and pass --python."
    else:
        hint = "Pick another --to, or move the env to another interpreter with --python."
    what = f"{inputs.tf_distribution} {target.raw}"
    where = f" It has wheels for Python {', '.join(supported)}." if supported else ""
    return UserError(
        f"{what} has no wheel for Python {python_version} on this platform.{where}", hint, details=explanation
    )


def newer_for_other_python(
    inputs: resolve.Inputs, target: resolve.TargetSpec, tf_new: str, python_version: str, system: str, machine: str
) -> NewerRelease | None:
    """The newest release matching ``target`` above ``tf_new`` that has wheels for this platform but not for
    ``python_version`` (so the env's Python is what limits the target), with the ``--python`` that gets it."""
    from rebuild.index import simple as indexinfo
    from rebuild.index.tags import python_versions_with_wheels

    if target.kind == "exact":
        return None
    try:
        files = _tf_files(inputs)
    except (UserError, OSError):
        return None
    minor = ".".join(python_version.split(".")[:2])
    for version in indexinfo.versions(files, prereleases=inputs.pre):
        if version <= Version(tf_new):
            break
        if target.specifier and version not in _specifier(target):
            continue
        pythons = python_versions_with_wheels(files, version, system or "Linux", machine or os.uname().machine)
        if not pythons or minor in pythons:
            continue  # no wheel for this platform at all, or the Python is not what excludes it
        local = [i for i in interpreters.discover() if i.minor in pythons]
        if local:
            return NewerRelease(str(version), pythons, local[0].minor, str(local[0].path))
        return NewerRelease(str(version), pythons, pythons[-1])
    return None


def _specifier(target: resolve.TargetSpec) -> SpecifierSet:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(target.specifier)


def newest_resolvable(inputs: resolve.Inputs, installed: str, ceiling: str) -> str | None:
    """The newest TensorFlow above ``installed`` and below ``ceiling`` that resolves with everything kept."""
    from rebuild.index import simple as indexinfo

    try:
        files = _tf_files(inputs)
    except (UserError, OSError):
        return None
    # every release between them, newest first (not only each minor's newest patch: a companion may pin an
    # exact release, as tensorflow-decision-forests 1.12.0 pins tensorflow==2.19.0 while 2.19.1 exists)
    between = [
        v for v in indexinfo.versions(files, prereleases=inputs.pre) if Version(installed) < v < Version(ceiling)
    ]
    same = repr(dataclasses.replace(inputs, log=None))  # what the resolution depends on
    for version in between[:10]:
        key = (same, str(version))
        if key not in _RESOLVES:  # a target search asks again for the same releases: resolve each once
            try:
                resolve.resolve(inputs, str(version))
                _RESOLVES[key] = True
            except resolve.ResolutionFailed:
                _RESOLVES[key] = False
        if _RESOLVES[key]:
            return str(version)
    return None


#: (inputs, version) -> whether it resolved, for this process (one command): :func:`newest_resolvable`.
#: A memo of facts, like ``functools.cache`` (the key holds every input the answer depends on), not state that
#: changes what a command does: the target search re-plans and asks again for the same releases.
_RESOLVES: dict[tuple[str, str], bool] = {}


def conflict_error(
    inputs: resolve.Inputs,
    tf_version: str,
    installed: str,
    explanation: str,
    companions: Sequence[str] = (),
    look_lower: bool = True,
    *,
    env: Path | None = None,
    profile: Path | None = None,
) -> UserError:
    """Why the target does not resolve: uv's words, the blocking packages (companions by name, with the
    newest release of each that accepts the target or the newest TensorFlow it allows), and the choices."""
    text = explanation.lower()
    blockers = [n for n in inputs.requested if canonicalize_name(Requirement(n).name) in text]
    blockers = [n for n in blockers if n not in SEED_PACKAGES]
    constraints = [f"{n}{s}" for n, s in inputs.constraints.items() if n in text]
    configured = [c for c in indexconf.constraints_of(inputs.index) if c.name in text]
    ok = newest_resolvable(inputs, installed, tf_version) if look_lower else None
    choices = []
    if ok:
        choices.append(f"--to {ok} (the newest {inputs.tf_distribution} that resolves with everything else kept)")
    for c in constraints:
        choices.append(f"relax the constraint `{c}` in the profile's [constraints]")
    for con in configured:
        choices.append(f"relax the constraint `{con.text}` ({con.where})")
    constraints += [f"the constraint `{con.text}` ({con.where})" for con in configured]
    for b in blockers:  # no release of it resolves with the target (uv would have taken one): keep it, or drop it
        name = canonicalize_name(Requirement(b).name)
        if profile is not None:
            choices.append(
                f"drop {name} from `requested` (and its modules from `[smoke].imports`) in the profile {profile}"
            )
        elif env is not None:
            where = shlex.quote(str(env))
            choices.append(
                f"drop {name}: `tfrebuild snapshot --env {where} -o profile.toml`, delete {name} from "
                "`requested` (and its modules from `[smoke].imports`) in profile.toml, then "
                f"`tfrebuild upgrade --env {where} --profile profile.toml`"
            )
    stand = f" Standing in the way: {', '.join(blockers + constraints)}." if blockers or constraints else ""
    why = ("\n".join(companions) + "\n\n") if companions else ""
    return UserError(
        f"{inputs.tf_distribution} {tf_version} cannot be installed together with what this env needs.{stand}",
        ("Choices: " + "; ".join(choices) + ".")
        if choices
        else "No newer TensorFlow resolves with the current packages.",
        exit_code=1,
        details=why + "uv says:\n" + explanation,
    )


def doctor_preflight(
    loc: EnvLocation,
    data: Probed,
    tf_new: str,
    tf: str,
    python_version: str,
    index: Index,
    opts: Options,
    **more: Any,
) -> list[Finding]:
    """Doctor's pre-flight checks of an upgrade of ``loc`` to ``tf`` ``tf_new`` on ``python_version``."""
    from rebuild import doctor

    return doctor.preflight(
        loc,
        data,
        tf_new,
        tf_distribution=tf,
        python_version=python_version,
        index=index,
        offline=opts.offline,
        pre=opts.pre,
        **more,
    )


def blocking_companions(
    loc: EnvLocation, data: Probed, tf_new: str, tf: str, python_version: str, index: Index, opts: Options
) -> list[str]:
    """Doctor's account of installed packages whose requirements exclude the target (e.g. a companion
    with no release for it: "no release of tensorflow-text on the index accepts 2.20.0 ...")."""
    try:
        findings = doctor_preflight(loc, data, tf_new, tf, python_version, index, opts)
    except (UserError, OSError):
        return []
    return [f"{f.title}: " + "; ".join(f.evidence) for f in findings if f.id == "target-blocked"]


def _unconstrained_target(inputs: resolve.Inputs, target: resolve.TargetSpec) -> str | None:
    """What ``--to`` would mean without the configured constraints."""
    free = dataclasses.replace(inputs, index=dataclasses.replace(inputs.index, constraints=[], constraint_lines=[]))
    try:
        return resolve.find_target(free, target)
    except resolve.ResolutionFailed:
        return None


def _tf_constraints(inputs: resolve.Inputs) -> list[indexconf.Constraint]:
    return [c for c in indexconf.constraints_of(inputs.index) if c.name == inputs.tf_distribution]


def constraint_refusal(inputs: resolve.Inputs, target: resolve.TargetSpec, explanation: str) -> UserError | None:
    """A configured constraint on the TensorFlow distribution rules the target out: name it and where it is set."""
    from packaging.specifiers import SpecifierSet

    mine = _tf_constraints(inputs)
    wanted = _unconstrained_target(inputs, target) if mine else None
    if wanted is None:
        return None
    ruling = [c for c in mine if not SpecifierSet(c.specifier).contains(wanted, prereleases=True)] or mine
    named = "; ".join(f"the constraint `{c.text}` ({c.where})" for c in ruling)
    return UserError(
        f"{named[0].upper() + named[1:]} rules out {inputs.tf_distribution} {wanted}, which --to {target.raw} means.",
        "Relax or remove that constraint (or set PIP_CONSTRAINT/UV_CONSTRAINT to another file), "
        "or choose a --to it allows. Nothing was changed.",
        exit_code=1,
        details="uv says:\n" + explanation,
    )


def constraint_note(inputs: resolve.Inputs, target: resolve.TargetSpec, tf_new: str) -> str:
    """Say so when a configured constraint holds the target below what the index offers."""
    if not _tf_constraints(inputs):
        return ""
    wanted = _unconstrained_target(inputs, target)
    if not wanted or Version(wanted) <= Version(tf_new):
        return ""
    named = ", ".join(f"`{c.text}` ({c.where})" for c in _tf_constraints(inputs))
    return (
        f"{inputs.tf_distribution} {wanted} matches --to {target.raw}, but the constraint {named} holds it at {tf_new}"
    )


def _target_version(inputs: resolve.Inputs, target: resolve.TargetSpec, python_version: str, pre: bool) -> str:
    """The TensorFlow release ``--to`` means for this interpreter."""
    tf = inputs.tf_distribution
    try:
        tf_new = resolve.find_target(inputs, target)
    except resolve.ResolutionFailed as exc:
        refusal = constraint_refusal(inputs, target, exc.explanation)
        if refusal is not None:
            raise refusal from None
        text = exc.explanation.lower()
        if (
            "matching python abi tag" in text
            or "requires-python" in text
            or "python>=" in text
            or "we only found wheels" in text
        ):
            raise no_wheel_error(inputs, target, python_version, exc.explanation) from None
        raise UserError(
            f"No {tf} release matches --to {target.raw}.",
            "Check the version (`tfrebuild releases` lists them) or use --to latest.",
            details="uv says:\n" + exc.explanation,
        ) from None
    if Version(tf_new).is_prerelease and not pre and target.kind != "exact":
        raise UserError(
            f"The newest {tf} matching --to {target.raw} is a pre-release ({tf_new}).",
            "Pass --pre to allow pre-releases (tf-nightly only has pre-releases).",
        )
    return tf_new
