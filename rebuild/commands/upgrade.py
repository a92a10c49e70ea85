"""``tfrebuild upgrade``: plan → build beside → smoke-check → atomic swap → generation record.

The environment at the user's path is not touched until the new one has been
built and has passed its checks in the staging folder. Any failure before the
swap removes the staging folder and leaves the environment byte-for-byte as it
was; a crash leaves a journal that the next command finishes or undoes.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rebuild.core import build
from rebuild.commands import generations
from rebuild.core import plan as planning
from rebuild.core import smoke
from rebuild.env.locate import locate
from rebuild.errors import UserError
from rebuild.knowledge.tf import SEED_PACKAGES
from rebuild.store.store import Generation, Store, fault_point, new_op_id


@dataclass
class UpgradeResult:
    plan: planning.Plan
    changed: bool
    generation: int | None = None
    previous: int | None = None
    state_dir: str = ""
    log: str = ""
    build_seconds: float = 0.0
    checks: list[smoke.Check] = field(default_factory=list)
    after_swap: list[smoke.Check] = field(default_factory=list)
    swap_method: str = ""
    swap_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    recovered: str | None = None
    seconds: float = 0.0


def _command_line() -> str:
    return "tfrebuild " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "tfrebuild upgrade"


def run(opts: planning.Options, progress=None, confirm: Callable[[planning.Plan], bool] | None = None) -> UpgradeResult:
    """Upgrade the env described by ``opts``. ``confirm(plan)`` decides whether to go on."""
    from rebuild.cli.render import Progress

    progress = progress or Progress(enabled=False)
    start = time.monotonic()
    if not opts.yes and confirm is None:
        raise UserError("tfrebuild upgrade needs confirmation, and there is no terminal to ask on.",
                        "Look at `tfrebuild plan` first, then run `tfrebuild upgrade --yes`.")
    loc = locate(opts.env)  # bad paths fail here, before anything is created
    store = Store.open(loc.path) or Store.unmanaged(loc.path)
    created_state = not store.state.exists()
    command = _command_line()
    try:
        with store.lock(command):
            recovered = generations.recover(store) if store.managed else None
            if recovered:
                progress.note(f"recovered: {recovered}")
            op = new_op_id("upgrade")
            log = store.log_path(op) if store.managed else store.state / "logs" / f"{op}.log"
            the_plan = planning.make_plan(opts, progress, log=log)
            result = UpgradeResult(plan=the_plan, changed=False, recovered=recovered, log=str(log),
                                   state_dir=str(store.state))
            if the_plan.nothing_to_do:
                result.seconds = time.monotonic() - start
                return result
            if not opts.yes and not confirm(the_plan):
                raise UserError("Upgrade cancelled; nothing was changed.", exit_code=1)
            return _apply(store, the_plan, opts, op, log, progress, result, start, command)
    finally:
        if created_state and not store.managed:
            shutil.rmtree(store.state, ignore_errors=True)


def _apply(store: Store, the_plan: planning.Plan, opts: planning.Options, op: str, log: Path, progress,
           result: UpgradeResult, start: float, command: str) -> UpgradeResult:
    adopted_now = not store.managed
    if adopted_now:
        store.adopt(Generation.new(1, command="adopted (the env as it was before tfrebuild)",
                                   tensorflow=f"{the_plan.tf_distribution} {the_plan.tf_old}",
                                   python=the_plan.python_old))
        generations.write_profile(store, 1, the_plan.current)
    staging = store.staging_dir(op)
    number = store.next_number()
    cache_note = _cache_filesystem_note(staging)
    if cache_note:
        result.notes.append(cache_note)
        progress.note(cache_note)
    store.begin({"op": "upgrade", "id": op, "step": "building", "staging": str(staging), "new": number})
    try:
        progress.stage("build", f"new env in {staging}")
        built = build.build(staging, Path(the_plan.python_path), the_plan.pylock, the_plan.index_live,
                            offline=opts.offline, compile_bytecode=not opts.no_compile, log=log,
                            requested={n for n in the_plan.new_requested if n not in SEED_PACKAGES}
                            | {the_plan.tf_distribution}, legacy_keras=the_plan.keras_legacy)
        result.build_seconds = built.seconds
        fault_point("upgrade.built")
        progress.stage("checks", "smoke checks in the new env")
        imports = the_plan.current.smoke.imports
        report = smoke.run_checks(built.env, tf_version=the_plan.tf_new, imports=imports,
                                  commands=the_plan.current.smoke.commands,
                                  keras_major=2 if the_plan.keras_legacy else None,
                                  gpu_required=the_plan.gpu_required)
        result.checks = report.checks
        fault_point("upgrade.checked")
        if not report.ok:
            raise smoke.failure(report, "before the swap", log, "Your environment was not changed.")
        gen_dir = store.generation_dir(number)
        gen_dir.mkdir(parents=True, exist_ok=True)
        (gen_dir / "pylock.toml").write_text(the_plan.pylock, encoding="utf-8")
    except BaseException:
        store.discard_staging(op)
        shutil.rmtree(store.generation_dir(number), ignore_errors=True)
        store.commit()
        if adopted_now:  # leave no trace: the env was not managed before this run
            shutil.rmtree(store.state, ignore_errors=True)
        raise
    try:
        generations.refuse_if_in_use(store.env, opts.force)
    except UserError:
        store.discard_staging(op)
        shutil.rmtree(store.generation_dir(number), ignore_errors=True)
        store.commit()
        if adopted_now:
            shutil.rmtree(store.state, ignore_errors=True)
        raise
    progress.stage("swap", f"{store.env} ← generation {number}")
    gen = Generation.new(number, command=command, tensorflow=f"{the_plan.tf_distribution} {the_plan.tf_new}",
                         python=the_plan.python_new)
    t0 = time.monotonic()
    store.switch_to(built.env, gen)
    result.swap_ms = (time.monotonic() - t0) * 1000
    result.swap_method = store.last_swap_method or ""
    result.generation, result.previous = number, store.previous_number
    progress.stage("verify", f"quick check at {store.env}")
    after = smoke.run_checks(store.env, tf_version=the_plan.tf_new, imports=[], quick=True)
    result.after_swap = after.checks
    if not after.ok:
        store.rollback_to(result.previous)
        raise smoke.failure(after, f"at {store.env} after the swap", log,
                             f"tfrebuild swapped generation {result.previous} back in; your environment is as it was.")
    generations.write_profile(store, number, like=the_plan.current)
    result.changed = True
    result.seconds = time.monotonic() - start
    return result


def _cache_filesystem_note(staging: Path) -> str:
    """uv hard-links from its cache only on the same filesystem; otherwise every file is copied."""
    import os

    from rebuild.core import uvcmd

    try:
        cache = Path(uvcmd.run(["cache", "dir"], timeout=30).stdout.strip())
        cache_dev = os.stat(cache if cache.exists() else cache.parent).st_dev
    except (UserError, uvcmd.UvFailed, OSError):
        return ""
    if cache_dev != os.stat(staging).st_dev:
        return (f"uv's cache ({cache}) is on another filesystem than the env: files are copied, not hard-linked, "
                "so each generation costs its full size on disk (set UV_CACHE_DIR to a folder on the env's filesystem)")
    return ""


