"""``tfrebuild upgrade``: plan → build beside → smoke-check → atomic swap → generation record.

The environment at the user's path is not touched until the new one has been
built and has passed its checks in the staging folder. Any failure before the
swap removes the staging folder and leaves the environment byte-for-byte as it
was; a crash leaves a journal that the next command finishes or undoes.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rebuild.commands import generations, outside, starter
from rebuild.commands.upgrade_project import _project_step, _refuse_undriven, project_refusal
from rebuild.core import lockfile, models, planinputs, search, sources, transaction
from rebuild.core import plan as planning
from rebuild.core.build import BuildOptions
from rebuild.core.smoke import Checks
from rebuild.env import profile as prof
from rebuild.env import refusals
from rebuild.env.locate import locate
from rebuild.errors import UserError
from rebuild.knowledge.tf import SEED_PACKAGES
from rebuild.project import files as project_files
from rebuild.project.detect import Project
from rebuild.store.journal import new_op_id
from rebuild.store.store import Store
from rebuild.util import proc
from rebuild.util.progress import NULL, Progress


@dataclass(kw_only=True)
class UpgradeResult(transaction.TransactionResult):
    plan: planning.Plan
    reused: int | None = None  # the existing generation that already held the planned set, switched to
    tries: list = field(default_factory=list)  # search.Try: every target tried (--to latest), the last one landed
    started: starter.Started | None = None  # no env here: this run built one from the bundled profile first
    adopted: str | None = None  # the env was recreated or changed outside tfrebuild: adopted first, as a generation
    stages: dict = field(default_factory=dict)  # stage name -> seconds (the progress stages, timed)
    overlap: dict = field(default_factory=dict)  # the old env's reference checks: their time, and the time waited


@dataclass(frozen=True)
class Attempt:
    """One try at building a plan: the context its steps share (the project steps and the transaction take this,
    not the same seven parameters each)."""

    store: Store
    plan: planning.Plan
    opts: planning.Options
    op: str  # the operation id (staging folder and log name)
    log: Path
    progress: Progress
    command: str  # the command line recorded in the generation
    usage: Any = None  # the current env's disk usage, computed while planning (core.build.usage_later)
    # the current env's reference import checks (core.baseline), by the names checked: the env does not change
    # between the tries of one run (a failed try never touches it), so a target search runs them at most once
    baselines: dict = field(default_factory=dict)
    searching: bool = False  # a try of the target search (a lower release is tried if this one fails)

    @property
    def project(self) -> Project:
        """The driven project (its steps run only for one)."""
        assert self.plan.project is not None
        return self.plan.project


def _command_line() -> str:
    """The command as recorded in the generation, the lock file and the journal: credentials redacted."""
    if not sys.argv[1:]:
        return "tfrebuild upgrade"
    return proc.redact_line("tfrebuild " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


def run(opts: planning.Options, progress=None, confirm: Callable[[planning.Plan], bool] | None = None) -> UpgradeResult:
    """Upgrade the env described by ``opts``. ``confirm(plan)`` decides whether to go on. The result's ``stages``
    say how long each stage took."""
    from rebuild.util.progress import StageClock

    clock = StageClock(progress or NULL)
    result = _upgrade(opts, clock, confirm)
    result.stages = clock.finish()
    return result


def _upgrade(opts: planning.Options, progress, confirm: Callable[[planning.Plan], bool] | None) -> UpgradeResult:
    start = time.monotonic()
    if not opts.yes and confirm is None:
        raise UserError(
            "tfrebuild upgrade needs confirmation, and there is no terminal to ask on.",
            "Look at `tfrebuild plan` first, then run `tfrebuild upgrade --yes`.",
        )
    planning.resolve.parse_target(opts.to)  # a bad --to fails before anything is created (the starter's env too)
    given_models = models.from_paths(opts.models)  # and a --model that is not a model
    if opts.env:  # or is not the user's (loading a model can run code): before the starter makes anything
        models.refuse_untrusted(given_models, opts.env)
    started = starter.create(opts, progress) if opts.yes and starter.applies(opts) else None  # a fresh machine
    loc = locate(opts.env)  # bad paths fail here, before anything is created
    planinputs.load_override(opts, loc, runs_commands=True)  # so does a bad or refused --profile
    models.refuse_untrusted(given_models, loc.path)  # or is not the user's (loading a model can run code)
    sources.refuse_self_upgrade(loc.path)  # tfrebuild cannot swap out the env it runs from
    if not loc.bare:  # what stops the swap is known now: refuse before planning and building, not after
        refusals.refuse(loc.path, force=opts.force)
    _refuse_undriven(loc.path, opts)  # a project tfrebuild does not drive: known before any resolution
    from rebuild.core.build import usage_later

    store = Store.open(loc.path) or Store.unmanaged(loc.path)
    first_run = not store.managed  # the state folder goes at the end unless an upgrade landed
    command = _command_line()
    log = the_plan = None
    held = False  # only the run that took the lock removes the state folder (never one refused by the lock)
    try:
        with store.lock(command):
            held = True
            # an interrupted apply to this path (not managed yet) is finished or undone too
            recovered = generations.recover(store) if store.managed or store.journal_path.exists() else None
            if recovered:
                progress.note(f"recovered: {recovered}")
            adopted = _adopt_outside(store, progress)
            # the build's free-space estimate walks the env (as recovery left it, under the lock): while planning
            usage = None if loc.bare else usage_later(loc.path)
            op = new_op_id("upgrade")
            log = store.log_path(op) if store.managed else store.state / "logs" / f"{op}.log"
            the_plan, tries = _first_plan(opts, progress, log)
            # what every try's result says of this run
            fresh = functools.partial(
                UpgradeResult,
                recovered=recovered,
                log=str(log),
                state_dir=str(store.state),
                started=started,
                adopted=adopted,
            )
            result = fresh(plan=the_plan, tries=tries)
            if the_plan.nothing_to_do:
                result.seconds = time.monotonic() - start
                return _kept_log(result, log, first_run and not store.managed)
            refusal = planning.preflight_refusal(the_plan)
            if refusal is not None:
                raise refusal
            project = the_plan.project
            if project is not None and not project.drivable and not opts.force:
                raise project_refusal(project)
            driven = project is not None and project.drivable
            same = _generation_with(store, the_plan) if store.managed and not driven else None
            if same is not None:
                note = (
                    f"generation {same} already holds this set (same lock): switching to it instead of building a copy"
                )
                the_plan.notes.append(note)
            models.refuse_untrusted((the_plan.intent or the_plan.current).smoke.models, store.env)  # before building
            if not opts.yes and not confirm(the_plan):
                raise UserError(
                    "Upgrade cancelled; the env was not changed."
                    + (f" ({adopted[0].upper() + adopted[1:]}: it stays recorded.)" if adopted else ""),
                    exit_code=1,
                )
            if project is not None and project.drivable and store.managed:  # hand edits: the starting point
                result.notes += project_files.carry_edits(store)

            baselines: dict = {}  # shared by the tries of this run (Attempt.baselines)

            def attempt(p: planning.Plan) -> UpgradeResult:
                _refuse_backwards(p, opts, asked=p is the_plan and not opts.yes)  # later tries were not shown
                mine = result if p is the_plan else fresh(plan=p)
                again = (
                    same if p is the_plan else (_generation_with(store, p) if store.managed and not driven else None)
                )
                if again is not None:
                    return _switch(store, again, p, opts, progress, mine, start)
                # a first upgrade's failed try clears its records but keeps the state folder, its lock and its
                # creation record for the next try (transaction.Spec.keep_state); the end of the run removes it
                return _apply(
                    Attempt(store, p, opts, op, log, progress, command, usage, baselines, searching),
                    mine,
                    start,
                    given_models,
                )

            searching = _searching(opts, the_plan)

            outcome = search.run(
                the_plan,
                opts,
                attempt=attempt,
                replan=lambda o: planning.make_plan(o, progress, log=log),
                listing=lambda: _listing(the_plan, opts),
                on_try=lambda t: progress.note(f"try: {search.tries_text([t])[len('try 1: ') :]}"),
                searching=searching,
            )
            landed = outcome.result
            if landed is None:  # no release above the installed one passed: nothing to do, nothing recorded
                result.plan, result.tries = _as_plan(outcome.blocked), tries + outcome.tries
                result.seconds = time.monotonic() - start
                return _kept_log(result, log, first_run and not store.managed)
            assert isinstance(landed, UpgradeResult)
            landed.tries = tries + outcome.tries
            return landed
    except UserError as exc:
        exc.plan = exc.plan or the_plan  # the plan that failed, for the error document
        if held and first_run and not store.managed:  # the state folder goes: keep the log the error names
            kept = transaction.rescue_log(log)
            if kept is not None:
                exc.log_moved(log, kept)
        raise
    finally:
        if held and first_run and not store.managed:
            transaction.rescue_log(log)  # an interrupt: the log goes where failures' logs go
            shutil.rmtree(store.state, ignore_errors=True)


def _as_plan(plan: object) -> planning.Plan:
    assert isinstance(plan, planning.Plan)
    return plan


def _kept_log(result: UpgradeResult, log: Path, leaving: bool) -> UpgradeResult:
    """Nothing to do because no release above the installed one passed: the tries' log outlives a state folder that
    goes (a first run records nothing)."""
    if leaving and result.plan.blocked_above:
        kept = transaction.rescue_log(log)
        result.log = str(kept) if kept is not None else ""
    return result


def _searching(opts: planning.Options, the_plan: planning.Plan) -> bool:
    """The search runs for ``--to latest`` on envs tfrebuild builds from a lock (a driven project locks its own)."""
    project = the_plan.project
    return opts.search and str(opts.to or "latest") == "latest" and not (project is not None and project.drivable)


def _first_plan(opts: planning.Options, progress, log: Path) -> tuple[planning.Plan, list]:
    from typing import cast

    from rebuild.core.reuse import Reuse

    # right after `tfrebuild plan` with the same inputs, the plan's resolution is reused (and the plan says so)
    plan, tries = search.first_plan(
        opts, lambda o: planning.make_plan(o, progress, log=log, reuse=Reuse("reuse")), progress.note
    )
    return cast(planning.Plan, plan), tries


def _listing(the_plan: planning.Plan, opts: planning.Options) -> list[str]:
    from rebuild.core import resolve

    inputs = resolve.Inputs(
        python=Path(the_plan.python_path),
        tf_distribution=the_plan.tf_distribution,
        requested=[],
        pins={},
        index=the_plan.index_live,
        offline=opts.offline,
        pre=opts.pre,
    )
    return search.versions(inputs, opts.pre)


def _refuse_backwards(the_plan: planning.Plan, opts: planning.Options, asked: bool) -> None:
    """A plan that moves a requested package backwards: asked interactively (the plan's first note says so);
    refused under --yes unless --allow-downgrade (the search then tries a lower release)."""
    if not the_plan.requested_downgrades or opts.allow_downgrade or asked:
        return
    err = UserError(
        f"The plan for {the_plan.tf_distribution} {the_plan.tf_new} moves requested package(s) "
        f"backwards: {', '.join(the_plan.requested_downgrades)}.",
        "Run without --yes to see the plan and decide, or pass --allow-downgrade. Nothing was changed.",
        exit_code=1,
    )
    err.downgrade = True
    err.plan = the_plan
    raise err


def _adopt_outside(store: Store, progress) -> str | None:
    """An env recreated or changed outside tfrebuild becomes a new generation before anything else is done."""
    if not store.managed:
        return None
    return outside.adopt_text(store, outside.adopt(store, generations.write_profile, progress))


def _apply(run: Attempt, result: UpgradeResult, start: float, given_models=()) -> UpgradeResult:
    store, the_plan, op, progress = run.store, run.plan, run.op, run.progress
    cache_note = _cache_filesystem_note(store.staging_dir(op))
    if cache_note:
        result.notes.append(cache_note)
        progress.note(cache_note)
    intent = the_plan.intent or the_plan.current
    intent = models.with_models(intent, models.merged(intent.smoke.models, list(given_models)))  # carried forward
    from rebuild.core.baseline import Baseline

    from rebuild.core import carry

    carry.refuse_lost(store.env, the_plan.carry)  # a broken distribution that imports: repaired first
    kept = dict(the_plan.carry.imports) if the_plan.carry is not None else {}  # must import as before (carry.py)
    imports = list(intent.smoke.imports) + [m for m in kept if m not in intent.smoke.imports]
    names = tuple(m for m in imports if m != "tensorflow")
    before = run.baselines.get(names)
    if before is None:  # run when a check first needs it; a later try of a search reuses the first try's answers
        before = run.baselines[names] = Baseline(store.env, list(names), run=not run.opts.no_reference_checks)
    if the_plan.project is not None and the_plan.project.drivable:
        before.start()  # its checks run at the path after the swap too, where the env as it is has gone by then
    checks = Checks(
        tf_version=the_plan.tf_new,
        imports=imports,
        commands=intent.smoke.commands,
        keras_major=2 if the_plan.keras_legacy else None,
        gpu_required=the_plan.gpu_required,
        already_failing=before.failing,
        reasons=kept,
        beside=not (the_plan.gpu_required or intent.gpu.gpus),  # two processes on one GPU would fight for its memory
        stop_early=run.searching,  # a failed [smoke] command ends a try of the search (TensorFlow's check stopped)
    )
    step, pylock = None, the_plan.pylock
    project = the_plan.project
    try:  # the work folder beside the project goes whatever happens (a kill: the next command's recovery)
        if project is not None and project.drivable:
            step = _project_step(run, checks)
            pylock = step.pylock() or pylock
            result.notes += step.notes
            checks = step.staging_checks
        _run_transaction(run, result, intent, checks, step, pylock)
    finally:
        result.overlap["baseline"] = before.timing()
        if step is not None:
            step.cleanup()
    result.seconds = time.monotonic() - start
    return result


def _run_transaction(
    run: Attempt, result: UpgradeResult, intent: prof.Profile, checks: Checks, step, pylock: str
) -> None:
    store, the_plan, opts, log = run.store, run.plan, run.opts, run.log
    requested = {planning.requirement_name(n) or n for n in the_plan.new_requested if n not in SEED_PACKAGES}
    # kept only so the new env holds them (snapshot.unreached): resolved from, but not marked as asked for
    current = the_plan.current
    requested -= {p.name for p in current.packages if not p.requested and p.name in current.requested}
    requested |= {the_plan.tf_distribution}
    gate = models.Gate(
        intent.smoke.models,
        current=store.env,
        index=the_plan.index_live,
        offline=opts.offline,
        log=log,
        reference=not opts.no_reference_checks,
    )
    transaction.run(
        transaction.Spec(
            op=run.op,
            command=run.command,
            progress=run.progress,
            store=store,
            kind="upgrade",
            python=Path(the_plan.python_path),
            python_version=the_plan.python_new,
            tensorflow=f"{the_plan.tf_distribution} {the_plan.tf_new}",
            pylock=pylock,
            index=the_plan.index_live,
            build=BuildOptions(
                offline=opts.offline,
                compile_bytecode=not opts.no_compile,
                log=log,
                requested=requested,
                legacy_keras=the_plan.keras_legacy,
                build_constraints=planinputs.build_constraint_files(opts),
                current_usage=run.usage,
                carry=the_plan.carry,
            ),
            checks=checks,
            write_profile=functools.partial(generations.write_profile, index=the_plan.index),
            like=intent,
            log=log,
            adopt=transaction.Adoption(
                tensorflow=f"{the_plan.tf_old_distribution or the_plan.tf_distribution} {the_plan.tf_old}",
                python=the_plan.python_old,
                like=the_plan.current,
            ),
            before_swap=lambda: refusals.refuse(store.env, force=opts.force),
            project=step,
            keep_state=True,
            deep_check=opts.check == "import",
            models=gate,
        ),
        result,
    )
    if gate:
        result.overlap["model_reference"] = {
            "seconds": round(gate.reference_seconds, 3),
            "waited_seconds": round(gate.waited_seconds, 3),
        }


def _generation_with(store: Store, the_plan: planning.Plan) -> int | None:
    """A kept generation (not the current one) whose lock pins exactly the planned set, on the same Python."""
    wanted = lockfile.read_pins(the_plan.pylock)
    if not wanted or (the_plan.carry is not None and the_plan.carry.copied):
        return None  # files of the user's to carry: a kept tree has them as they were then, so build afresh
    for gen in sorted(store.generations(), key=lambda g: -g.number):
        folder = store.generation_dir(gen.number)
        if gen.number == store.current_number or not (folder / "env").is_dir():
            continue
        try:
            theirs = lockfile.read_pins((folder / "pylock.toml").read_text(encoding="utf-8"))
        except OSError:
            continue
        system_site = the_plan.carry is not None and the_plan.carry.system_site
        if (
            theirs == wanted
            and gen.python == the_plan.python_new
            and _keeps_keras2(folder / "env") == the_plan.keras_legacy  # same Keras mode too
            and _sees_system_site(folder / "env") == system_site  # and the same view of the system site-packages
        ):
            return gen.number
    return None


def _sees_system_site(env: Path) -> bool:
    """Whether a kept env's ``pyvenv.cfg`` says ``include-system-site-packages = true``."""
    try:
        text = (env / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(
        line.partition("=")[0].strip().lower() == "include-system-site-packages"
        and line.partition("=")[2].strip().lower() == "true"
        for line in text.splitlines()
    )


def _keeps_keras2(env: Path) -> bool:
    """Whether a generation's env keeps Keras 2 (tfrebuild's TF_USE_LEGACY_KERAS .pth file is there)."""
    from rebuild.knowledge.tf import LEGACY_KERAS_PTH

    return any(env.glob(f"lib/python*/site-packages/{LEGACY_KERAS_PTH}"))


def _switch(
    store: Store,
    number: int,
    the_plan: planning.Plan,
    opts: planning.Options,
    progress,
    result: UpgradeResult,
    start: float,
) -> UpgradeResult:
    """Swap in the generation that already holds the planned set; its checks run at the path, else swap back."""
    from rebuild.core import smoke

    intent = the_plan.intent or the_plan.current
    generations.refuse_if_in_use(store.env, opts.force)
    previous = store.current_number
    progress.stage("swap", f"{store.env} ← generation {number} (already holds this set)")
    t0 = time.monotonic()
    swapped = store.rollback_to(number)
    result.swap_ms = (time.monotonic() - t0) * 1000
    result.swap_method = swapped.method
    progress.stage("checks", f"checks at {store.env}")
    report = smoke.run_checks(
        store.env,
        tf_version=the_plan.tf_new,
        imports=intent.smoke.imports,
        commands=intent.smoke.commands,
        keras_major=2 if the_plan.keras_legacy else None,
        gpu_required=the_plan.gpu_required,
    )
    result.checks = result.after_swap = report.checks
    if not report.ok:
        store.rollback_to(previous)
        raise smoke.failure(
            report,
            f"at {store.env} after switching to generation {number}",
            Path(result.log),
            f"tfrebuild swapped generation {previous} back in; your environment is as it was.",
        )
    result.changed, result.reused = True, number
    result.generation, result.previous = number, store.previous_number
    result.notes.append(f"generation {number} already holds this set: switched to it (nothing was built)")
    result.seconds = time.monotonic() - start
    return result


def _cache_filesystem_note(staging: Path) -> str:
    """uv hard-links from its cache only on the same filesystem; otherwise every file is copied."""
    import os

    from rebuild.util import uv as uvcmd

    try:
        cache = Path(uvcmd.run(["cache", "dir"], timeout=30).stdout.strip())
        cache_dev = os.stat(cache if cache.exists() else cache.parent).st_dev
    except (UserError, uvcmd.UvFailed, OSError):
        return ""
    if cache_dev != os.stat(staging).st_dev:
        return (
            f"uv's cache ({cache}) is on another filesystem than the env: files are copied, not hard-linked, "
            "so each generation costs its full size on disk (set UV_CACHE_DIR to a folder on the env's filesystem)"
        )
    return ""
