"""The plan's part for a project that owns the env: the project's own package set aside, the newest release ``uv lock``
can lock for a driven uv project (at most ``MAX_LOCK_TRIES`` minors down), and the project's TensorFlow requirement
moved. Split from :mod:`rebuild.core.plan` (same code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from packaging.version import Version

from rebuild.core import resolve
from rebuild.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from rebuild.core.plan import Options
    from rebuild.core.planinputs import _Survey
    from rebuild.project.detect import Project


def _own_package(survey: _Survey) -> Project | None:
    """The manager that owns the env (``None`` for a plain env); a driven project's own package is set
    aside in ``survey`` (its requirements are the project's own, which move with TensorFlow)."""
    import tomllib

    from rebuild.project.detect import detect

    project = detect(survey.loc.path)
    if project is not None and project.drivable and project.name:
        survey.own = project.name
        try:
            data = tomllib.loads((project.root / "pyproject.toml").read_text(encoding="utf-8"))
            deps = data.get("project", {}).get("dependencies", [])
            survey.own_requirements = [d for d in deps if isinstance(d, str)]
            if project.manager == "poetry":  # [tool.poetry.dependencies] are Poetry constraints, not PEP 508
                from rebuild.project.poetryproject import requirements

                survey.own_requirements = requirements(data)
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            pass
    return project


MAX_LOCK_TRIES = 8


def _lockable_target(
    project: Project | None,
    survey: _Survey,
    inputs: resolve.Inputs,
    target: resolve.TargetSpec,
    tf_new: str,
    opts: Options,
    log: Path | None,
) -> tuple[str, str]:
    """For a driven uv project: the newest release (from ``tf_new`` down, one minor at a time) that ``uv lock``
    can lock for every Python the project supports, and a note when it is not ``tf_new``."""
    if project is None or not project.drivable or project.manager != "uv":
        return tf_new, ""
    from rebuild.project import uvproject
    from rebuild.store.journal import new_op_id
    from rebuild.store.location import state_dir

    skip = {state_dir(survey.loc.path).name, survey.loc.path.name}
    tf, old = inputs.tf_distribution, survey.current.tensorflow.version
    version = tf_new
    first: uvproject.LockFailed | None = None
    for _ in range(MAX_LOCK_TRIES):
        try:
            uvproject.try_lock(project, tf, version, new_op_id("plan"), offline=opts.offline, log=log, skip=skip)
        except uvproject.LockFailed as exc:
            first = first or exc
            lower = None if target.kind == "exact" else _next_lower(inputs, version, old)
            if lower is None:
                raise first from None
            version = lower
            continue
        except UserError as exc:  # the lock could not even be tried (a read-only folder, the network): say so
            if first is not None:
                raise first from None
            return tf_new, f"tfrebuild could not check that uv can lock the project with {tf} {tf_new}: {exc.message}"
        if first is None:
            return version, ""
        cause = next((line.strip() for line in first.reason.splitlines() if line.strip().startswith("cause:")), "")
        why = cause or "see `uv lock`"
        return version, (
            f"{tf} {tf_new} cannot be locked for every Python the uv project supports ({why}); "
            f"{version} is the newest that locks. {uvproject.lock_hint(first.reason)}"
        )
    assert first is not None  # every try failed to lock (a lock that works returned above)
    raise first


def _next_lower(inputs: resolve.Inputs, version: str, floor: str) -> str | None:
    """The newest release of the minor below ``version``'s that resolves here, not below ``floor``."""
    v = Version(version)
    for minor in range(v.minor - 1, -1, -1):
        spec = resolve.parse_target(f"{v.major}.{minor}")
        try:
            found = resolve.find_target(inputs, spec)
        except (resolve.ResolutionFailed, UserError):
            continue
        return found if not floor or Version(found) >= Version(floor) else None
    return None


def _project(project: Project | None, tf: str, tf_new: str) -> tuple[Project | None, str]:
    """The project's TensorFlow requirement after the upgrade when tfrebuild drives it."""
    from rebuild.project.poetryproject import move_text
    from rebuild.project.requirement import move_requirement

    if project is None or not project.drivable or not project.requirement:
        return project, ""
    # poetry: `tensorflow-cpu = "^2.15"` or a PEP 508 string
    move = move_text if project.manager == "poetry" else move_requirement
    try:
        return project, move(project.requirement, tf_new)
    except (UserError, ValueError) as exc:
        from dataclasses import replace

        return replace(
            project,
            drivable=False,
            fix=f"tfrebuild cannot move its TensorFlow requirement "
            f"({project.requirement}): {getattr(exc, 'message', exc)}",
        ), ""
