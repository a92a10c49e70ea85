"""The upgrade of an env that a project owns: the refusal for a manager tfrebuild does not drive, and for uv, Poetry
and requirement-file projects the transaction step that re-locks (or recompiles) the project's files beside it, with
the checks run before the swap. Nothing of the project changes before the swap. Split from
:mod:`rebuild.commands.upgrade` (same code), which runs these steps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rebuild.core import lockfile
from rebuild.core import plan as planning
from rebuild.core.options import Strategy
from rebuild.core.smoke import Checks
from rebuild.errors import UserError
from rebuild.knowledge.tf import SEED_PACKAGES
from rebuild.project import uvproject

if TYPE_CHECKING:
    from rebuild.commands.upgrade import Attempt


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


def _uv_step(run: Attempt, checks: Checks):
    """Re-lock the uv project beside it (nothing of the project changes yet) and prepare its transaction step."""
    store, the_plan, opts, op, log, progress = run.store, run.plan, run.opts, run.op, run.log, run.progress
    from rebuild.core.projectstep import UvStep

    project = run.project
    progress.stage("lock", f"uv lock of {project.root} with {the_plan.project_requirement}")
    locked = uvproject.lock(
        project,
        the_plan.tf_distribution,
        the_plan.tf_new,
        op,
        offline=opts.offline,
        log=log,
        skip={store.state.name, store.env.name},
    )
    staging = _staging_checks(run, checks)
    step = UvStep(
        project=project,
        new_files=locked.files,
        locked=locked,
        python=Path(the_plan.python_path),
        prompt=_prompt(store.env),
        offline=opts.offline,
        compile_bytecode=not opts.no_compile,
        log=log,
        checks=checks,
        staging_checks=staging,
        force=opts.force,
        chosen=uvproject.selection(project, store.env),
    )
    step.notes.append(
        f"{project.root / 'pyproject.toml'}: {locked.old_requirement} → {locked.new_requirement}; "
        f"uv.lock re-locked by uv ({'; '.join(locked.changes) or 'no other change'})"
    )
    return step


def _requirements_step(run: Attempt, checks: Checks):
    """Move the TensorFlow line of the .in and recompile the .txt beside the project (nothing of it changes yet)."""
    store, the_plan, opts, op, log, progress = run.store, run.plan, run.opts, run.op, run.log, run.progress
    from rebuild.core.projectstep import RequirementsStep
    from rebuild.project import requirements

    project = run.project
    in_name, txt_name = project.files
    progress.stage("compile", f"uv pip compile of {project.root / in_name} with {the_plan.project_requirement}")
    compiled = requirements.compile(
        project,
        the_plan.tf_distribution,
        the_plan.tf_new,
        op,
        python=Path(the_plan.python_path),
        python_version=the_plan.python_new,
        offline=opts.offline,
        find_links=list(opts.find_links),
        eager=opts.strategy == Strategy.EAGER,
        log=log,
        skip={store.state.name, store.env.name},
    )
    pinned = requirements.pins(compiled.files[txt_name].decode("utf-8"))
    seeds = {
        p.name: p.version
        for p in the_plan.current.packages
        if p.name in SEED_PACKAGES and p.location == "env" and p.name not in pinned
    }
    step = RequirementsStep(
        project=project,
        new_files=compiled.files,
        compiled=compiled,
        python=Path(the_plan.python_path),
        prompt=_prompt(store.env),
        offline=opts.offline,
        compile_bytecode=not opts.no_compile,
        log=log,
        checks=checks,
        staging_checks=checks,
        find_links=list(opts.find_links),
        seeds=seeds,
        force=opts.force,
    )
    step.notes.append(
        f"{project.root / in_name}: {compiled.old_requirement} → {compiled.new_requirement}; "
        f"{txt_name} recompiled by uv pip compile{' with hashes' if compiled.hashed else ''} "
        f"({'; '.join(compiled.changes) or 'no other change'})"
    )
    return step


def _poetry_step(run: Attempt, checks: Checks):
    """Re-lock the Poetry project beside it with the user's Poetry and prepare its transaction step."""
    store, the_plan, opts, op, log, progress = run.store, run.plan, run.opts, run.op, run.log, run.progress
    from rebuild.core.projectstep import PoetryStep
    from rebuild.project import poetryproject

    project = run.project
    progress.stage("lock", f"poetry lock of {project.root} with {the_plan.project_requirement}")
    locked = poetryproject.lock(
        project,
        the_plan.tf_distribution,
        the_plan.tf_new,
        op,
        current=store.env,
        log=log,
        skip={store.state.name, store.env.name},
    )
    staging = _staging_checks(run, checks)
    planned = lockfile.read_pins(the_plan.pylock) or {}
    in_lock = poetryproject.locked_versions(locked.files["poetry.lock"])
    # pip stays beside the lock's packages at `poetry sync` (setuptools and wheel go): the new env keeps it too
    seeds = {n: v for n, v in planned.items() if n in poetryproject.KEPT_BY_SYNC and n not in in_lock}
    step = PoetryStep(
        project=project,
        new_files=locked.files,
        locked=locked,
        python=Path(the_plan.python_path),
        prompt=_prompt(store.env),
        offline=opts.offline,
        compile_bytecode=not opts.no_compile,
        log=log,
        checks=checks,
        staging_checks=staging,
        seeds=seeds,
        index=the_plan.index_live,
        force=opts.force,
    )
    step.notes.append(
        f"{project.root / 'pyproject.toml'}: {locked.old_requirement} → {locked.new_requirement}; "
        f"poetry.lock re-locked by Poetry ({'; '.join(locked.changes) or 'no other change'})"
    )
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
