"""The upgrade of an env that a project owns: the refusal for a manager tfrebuild does not drive, and for uv, Poetry
and requirement-file projects the transaction step that re-locks (or recompiles) the project's files beside it, with
the checks run before the swap. Nothing of the project changes before the swap. Split from
:mod:`rebuild.commands.upgrade` (same code), which runs these steps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from rebuild.core import lockfile
from rebuild.core import plan as planning
from rebuild.core.options import Strategy
from rebuild.core.smoke import Checks
from rebuild.errors import UserError
from rebuild.knowledge.tf import SEED_PACKAGES
from rebuild.project import uvproject

if TYPE_CHECKING:
    from rebuild.commands.upgrade import Attempt
    from rebuild.core.projectstep import ProjectStep

S = TypeVar("S", bound="ProjectStep")
T = TypeVar("T")


def _refuse_undriven(env: Path, opts: planning.Options) -> None:
    """A manager tfrebuild does not drive (conda, a workspace …) refuses before anything is resolved or printed."""
    from rebuild.project.detect import detect

    found = detect(env)
    if found is not None and not found.drivable and not opts.force:
        raise project_refusal(found)


def project_refusal(project) -> UserError:
    """``upgrade`` of an env whose manager tfrebuild does not drive: the upgrade would be undone there."""
    return UserError(
        f"{project.root} is a {project.label.split(' at ')[0]}: {project.reverts}, undoing an upgrade "
        "of the environment alone.",
        f"To upgrade: {project.fix}"
        + (
            ""
            if "--force" in project.fix
            else "; or pass --force to upgrade the env alone (the project's "
            "tool will put its TensorFlow back at its next run)"
        )
        + ". Nothing was changed.",
        exit_code=1,
    )


def _project_step(run: Attempt, checks: Checks):
    """The driven project's transaction step (nothing of the project changes before the swap)."""
    from rebuild.project import workdir

    workdir.sweep(run.project.root)  # work folders a killed run left beside the project
    makers = {"uv": _uv_step, "poetry": _poetry_step, "requirements": _requirements_step}
    return makers[run.project.manager](run, checks)


def _staging_checks(run: Attempt, checks: Checks) -> Checks:
    """The checks that run before the swap in a driven project: without the imports of the project's own package
    and local path packages (installed only at the real path) and without [smoke].commands (run there too)."""
    project, the_plan = run.project, run.plan
    local = {p.name for p in the_plan.current.packages if p.source in ("editable", "path")}
    own = uvproject.local_imports(run.store.env, local | {project.name} if project.name else local)
    return replace(checks, imports=[i for i in checks.imports if i.split(".")[0] not in own], commands=[])


def _step(kind: type[S], run: Attempt, checks: Checks, staging: Checks, **own: Any) -> S:
    """A manager's transaction step: the fields every step takes from this try, and ``own``, the manager's."""
    the_plan, opts = run.plan, run.opts
    return kind(
        project=run.project,
        python=Path(the_plan.python_path),
        prompt=_prompt(run.store.env),
        offline=opts.offline,
        compile_bytecode=not opts.no_compile,
        log=run.log,
        checks=checks,
        staging_checks=staging,
        force=opts.force,
        **own,
    )


def _moved(file: Path, done: Any, how: str) -> str:
    """The step's note: the TensorFlow requirement moved in ``file``, and ``how`` the rest was re-locked (``done``: the
    manager's lock or compile result)."""
    return (
        f"{file}: {done.old_requirement} → {done.new_requirement}; "
        f"{how} ({'; '.join(done.changes) or 'no other change'})"
    )


def _lock_beside(run: Attempt, stage: str, what: str, lock: Callable[..., T], **own: Any) -> T:
    """Run a manager's lock (or compile) of the project beside it, as the progress ``stage``: each takes the project,
    the planned TensorFlow, the operation id, the log and the folders its copy leaves out; ``own``: the manager's own."""
    the_plan, store = run.plan, run.store
    run.progress.stage(stage, f"{what} with {the_plan.project_requirement}")
    skip = {store.state.name, store.env.name}
    return lock(run.project, the_plan.tf_distribution, the_plan.tf_new, run.op, log=run.log, skip=skip, **own)


def _uv_step(run: Attempt, checks: Checks):
    """Re-lock the uv project beside it (nothing of the project changes yet) and prepare its transaction step."""
    from rebuild.core.projectstep import UvStep

    project = run.project
    locked = _lock_beside(run, "lock", f"uv lock of {project.root}", uvproject.lock, offline=run.opts.offline)
    staging = _staging_checks(run, checks)
    chosen = uvproject.selection(project, run.store.env)
    step = _step(UvStep, run, checks, staging, new_files=locked.files, locked=locked, chosen=chosen)
    step.notes.append(_moved(project.root / "pyproject.toml", locked, "uv.lock re-locked by uv"))
    return step


def _requirements_step(run: Attempt, checks: Checks):
    """Move the TensorFlow line of the .in and recompile the .txt beside the project (nothing of it changes yet)."""
    from rebuild.core.projectstep import RequirementsStep
    from rebuild.project import requirements

    project, the_plan, opts = run.project, run.plan, run.opts
    in_name, txt_name = project.files
    compiled = _lock_beside(
        run,
        "compile",
        f"uv pip compile of {project.root / in_name}",
        requirements.compile,
        python=Path(the_plan.python_path),
        python_version=the_plan.python_new,
        offline=opts.offline,
        find_links=list(opts.find_links),
        eager=opts.strategy == Strategy.EAGER,
    )
    pinned = requirements.pins(compiled.files[txt_name].decode("utf-8"))
    seeds = {
        p.name: p.version
        for p in the_plan.current.packages
        if p.name in SEED_PACKAGES and p.location == "env" and p.name not in pinned
    }
    step = _step(
        RequirementsStep,
        run,
        checks,
        checks,
        new_files=compiled.files,
        compiled=compiled,
        find_links=list(opts.find_links),
        seeds=seeds,
    )
    hashes = " with hashes" if compiled.hashed else ""
    step.notes.append(_moved(project.root / in_name, compiled, f"{txt_name} recompiled by uv pip compile{hashes}"))
    return step


def _poetry_step(run: Attempt, checks: Checks):
    """Re-lock the Poetry project beside it with the user's Poetry and prepare its transaction step."""
    from rebuild.core.projectstep import PoetryStep
    from rebuild.project import poetryproject

    project, the_plan, opts, log = run.project, run.plan, run.opts, run.log
    locked = _lock_beside(run, "lock", f"poetry lock of {project.root}", poetryproject.lock, current=run.store.env)
    staging = _staging_checks(run, checks)
    planned = lockfile.read_pins(the_plan.pylock) or {}
    in_lock = poetryproject.locked_versions(locked.files["poetry.lock"])
    # pip stays beside the lock's packages at `poetry sync` (setuptools and wheel go): the new env keeps it too
    seeds = {n: v for n, v in planned.items() if n in poetryproject.KEPT_BY_SYNC and n not in in_lock}
    step = _step(
        PoetryStep, run, checks, staging, new_files=locked.files, locked=locked, seeds=seeds, index=the_plan.index_live
    )
    step.notes.append(_moved(project.root / "pyproject.toml", locked, "poetry.lock re-locked by Poetry"))
    differ = sorted(
        f"{n} {planned[n]} (Poetry locked {', '.join(sorted(in_lock[n]))})"
        for n in planned
        if n in in_lock and planned[n] not in in_lock[n]
    )
    if differ:  # the env is built from Poetry's lock: the generation's record says what it holds
        step.pylock_text = _relock(
            the_plan,
            {**planned, **{n: sorted(in_lock[n])[-1] for n in planned if n in in_lock and len(in_lock[n]) == 1}},
            opts,
            log,
        )
        step.notes.append(
            f"Poetry's lock differs from the plan for {', '.join(differ)}: the new env holds Poetry's versions"
        )
    return step


def _relock(the_plan: planning.Plan, pins: dict[str, str], opts: planning.Options, log: Path) -> str | None:
    """A pylock.toml of exactly ``pins`` (the record of a generation built from a Poetry lock)."""
    import tempfile

    from rebuild.core import resolve

    inputs = resolve.Inputs(
        python=Path(the_plan.python_path),
        tf_distribution="",
        requested=[],
        pins={},
        index=the_plan.index_live,
        offline=opts.offline,
        log=log,
    )
    with tempfile.TemporaryDirectory(prefix="tfrebuild-lock-") as tmp:
        try:
            return resolve.lock(inputs, pins, Path(tmp))
        except resolve.ResolutionFailed:
            return None


def _prompt(env: Path) -> str:
    """The env's prompt (pyvenv.cfg), kept by the new env."""
    try:
        for line in (env / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "prompt":
                return value.strip()
    except OSError:
        pass
    return ""
