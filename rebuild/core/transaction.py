"""The one transaction that replaces an environment: build beside → checks → swap → check again → record.

``upgrade``, ``apply`` to a new path and ``apply`` to an existing env all run :func:`run`:

1. an existing env tfrebuild does not manage yet is adopted as generation 1 (its profile kept);
2. the journal is begun (``step: building``) and the new env is built in ``<state>/staging/<op>``;
3. the full smoke checks run in the staging env (fault points ``upgrade.built``, ``upgrade.checked``, ``apply.built``);
4. an existing env: the lock is kept in the new generation's folder, the swap is refused while
   processes use the env, and :meth:`Store.switch_to` exchanges the trees atomically;
   a new path: the journal gets the new tree's inode (``step: renaming``) and the tree is
   renamed into place (the path did not exist, so the rename is atomic; ``apply.renamed``);
5. a quick check runs at the real path; on failure the old tree is swapped back (a new path
   is taken away again);
6. the generation's profile (and, for a new path, its lock and the adoption) is recorded
   (``apply.recorded``) and the journal committed.

From the swap (or the move) to the record, SIGINT and SIGTERM are deferred
(:func:`rebuild.util.signals.deferred`): the bookkeeping is finished, then the interrupt ends the
command and the CLI names the generation the env is on.  A generation's profile is written after
the record; recovery (which every command runs first) writes it when a kill came in between.

Any failure or interrupt before the swap goes through one cleanup path: the staging folder and
the new generation's folder are removed, the journal is committed and, if this run adopted the
env, the state folder is removed again: the env is byte-for-byte as it was. A crash leaves the
journal, which the store's recovery finishes or undoes on the next command.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rebuild.core import build, discard, lockfile, models, smoke
from rebuild.core.projectstep import ProjectStep
from rebuild.env.profile import Index, Profile
from rebuild.errors import UserError
from rebuild.env import fsguard
from rebuild.store.faults import fault_point
from rebuild.store.records import Generation
from rebuild.store.store import Store
from rebuild.store.trees import safe_rmtree
from rebuild.util import fs, signals
from rebuild.util.progress import NULL, Progress


@dataclass(kw_only=True)
class TransactionResult:
    """What every command that builds a generation reports (``upgrade`` and ``apply``)."""

    changed: bool = False
    generation: int | None = None
    previous: int | None = None
    state_dir: str = ""
    log: str = ""
    build_seconds: float = 0.0
    checks: list[smoke.Check] = field(default_factory=list)
    after_swap: list[smoke.Check] = field(default_factory=list)
    swap_method: str = ""  # what really ran ("" when the store does not say)
    swap_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    recovered: str | None = None
    seconds: float = 0.0
    models: list[models.ModelRow] = field(default_factory=list)  # the model-parity gate's rows


@dataclass(frozen=True)
class Adoption:
    """The env as it was before tfrebuild, recorded as generation 1 when the store does not manage it yet."""

    tensorflow: str
    python: str
    like: Profile  # the env's snapshot: generation 1's profile.toml


ADOPTED = "adopted (the env as it was before tfrebuild)"


@dataclass(frozen=True)
class Spec:
    """Everything one transaction needs; :func:`run` fills a :class:`TransactionResult`."""

    store: Store
    op: str  # the operation id (staging folder and log name)
    kind: str  # fault-point prefix: "upgrade" or "apply"
    command: str  # the command line recorded in the generation
    python: Path  # the interpreter to build on
    python_version: str  # recorded in the generation
    tensorflow: str  # "tensorflow 2.18.0", recorded in the generation ("" when none)
    pylock: str  # the lock to install
    index: Index
    build: build.BuildOptions  # how build.build installs the lock (offline, log, requested, ...)
    checks: smoke.Checks  # the full checks before the swap (tf_version, imports, ...)
    write_profile: Callable[..., None]  # write_profile(store, n, profile=None, *, like=, commands=): n's profile
    like: Profile  # the profile whose user edits (constraints, smoke checks) the new generation's profile keeps
    log: Path
    commands: list[str] | None = None  # the smoke commands to keep (None: like's)
    new_env: bool = False  # nothing at the path: build, check, rename into place, adopt as generation 1
    adopt: Adoption | None = None  # for an existing env tfrebuild does not manage yet
    before_swap: Callable[[], object] | None = None  # last refusal before the swap (e.g. processes use the env)
    progress: Progress = NULL
    project: ProjectStep | None = None  # a driven project's step (UvStep …): builds the env, its files follow the swap
    deep_check: bool = False  # --check import: the TensorFlow import again at the path after the swap
    models: models.Gate | None = None  # the user's models load and answer the same before the swap
    keep_state: bool = False  # an env adopted by this try: a failure clears the try's records but keeps the state
    # folder (its lock, held by this process, and its creation record) for the next try; the caller removes it


def run(spec: Spec, result: TransactionResult) -> TransactionResult:
    """Build, check, swap (or move into place), check again, record. Raises ``UserError`` on failure."""
    store, progress = spec.store, spec.progress
    adopted_now = not spec.new_env and not store.managed
    if not spec.new_env:
        fsguard.refuse_mount_point(store.env)  # a mount point cannot be renamed: say so before building
    owner = fsguard.foreign_owner(store.env if not spec.new_env else store.env.parent)
    if adopted_now:
        _adopt_existing(spec)
    staging = store.staging_dir(spec.op)
    number = 1 if spec.new_env else store.next_number()
    store.begin(_journal(spec, staging, number))
    # where a GPU is used, the current env's model answers come while the new env is built (beside its checks the
    # two TensorFlows would share the GPU's memory); elsewhere beside the new env's checks (uv's build uses every CPU)
    gpu = bool(spec.models) and (spec.checks.gpu_required or bool(spec.like.gpu.gpus))
    try:
        if spec.models and gpu:
            spec.models.start(staging / "models")
        progress.stage("build", f"new env in {staging}")
        if spec.project is not None:
            built = spec.project.build(staging)
        else:
            built = build.build(
                staging,
                spec.python,
                spec.pylock,
                spec.index,
                spec.build,
                current=None if spec.new_env else store.env,
                progress=progress,
            )
        result.build_seconds = built.seconds
        fault_point("upgrade.built") if spec.kind == "upgrade" else fault_point("apply.built")
        if spec.models and not gpu:
            spec.models.start(staging / "models")
        progress.stage(
            "checks",
            "smoke checks in the new env"
            + (f": importing TensorFlow {spec.checks.tf_version}" if spec.checks.tf_version else ""),
        )
        if spec.models:  # one process of the new env for TensorFlow's check and the models, but where a GPU is used
            spec.models.begin(built.env, spec.checks.tf_version, gpu=gpu)
        report = spec.checks.run(built.env, tf_check=spec.models.tf_probe() if spec.models else None)
        if spec.models and report.ok:
            _check_models(spec, built.env, report, result)
        result.checks = report.checks
        if spec.kind == "upgrade":  # names stay literal: tests list every fault point from the source
            fault_point("upgrade.checked")
        if not report.ok:
            where, after = (
                ("before it was moved into place", f"Nothing was created at {store.env}.")
                if spec.new_env
                else ("before the swap", "Your environment was not changed.")
            )
            failed = smoke.failure(report, where, spec.log, after)
            failed.report = report  # what failed, for the target search (core/search.py)
            failed.models = result.models  # the model rows, for --json
            raise failed
        if owner is not None:  # root on another user's env: the new tree is theirs, as the old one was
            fsguard.keep_owner(built.env, owner)
        if not spec.new_env:
            _keep_lock(store, number, spec.pylock)
            if result.models:
                models.record(store.generation_dir(number), result.models)
            if spec.before_swap is not None:
                spec.before_swap()
            if spec.project is not None:  # the generations keep the project files; they follow the swap
                spec.project.prepare(store, number)
    except BaseException as exc:
        if spec.models:
            spec.models.stop()
        kept_log = _discard(spec, number, adopted_now)
        if kept_log is not None and isinstance(exc, UserError):
            exc.log_moved(spec.log, kept_log)
        raise
    st = os.lstat(built.env)
    proven = (st.st_dev, st.st_ino)  # the tree the checks ran in: the check at the path looks for this one
    # From the swap (or the move) to the record, a SIGINT/SIGTERM waits: the bookkeeping is finished first,
    # then the CLI says which generation the env is on (a SIGKILL leaves the journal to recovery).
    with signals.deferred():
        if spec.new_env:
            try:
                _move_into_place(spec, built.env, result)
            except BaseException:
                if os.path.lexists(built.env):  # not moved: the path is as it was
                    _discard(spec, number, adopted_now)
                raise
        else:
            _swap(spec, built.env, number, result)
        _verify(spec, staging, result, proven)
        _record(spec, number, result)
    if owner is not None:  # and so is the state folder (parked generations keep their own owner)
        fsguard.keep_owner(
            store.state,
            owner,
            skip=lambda path: Path(path).parent.parent == store.generations_dir and Path(path).name == "env",
        )
    result.changed = True
    return result


def rescue_log(log: Path | None) -> Path | None:
    """Move ``log`` out of a state folder that is about to be removed; the path it now has (or ``None``)."""
    import tempfile

    if log is None or not os.path.isfile(log) or os.path.islink(log):
        return None
    try:
        folder = Path(tempfile.gettempdir()) / "tfrebuild-logs"
        folder.mkdir(mode=0o700, exist_ok=True)
        dest = folder / Path(log).name
        shutil.move(str(log), dest)
    except OSError:
        return None
    return dest


def _adopt_existing(spec: Spec) -> None:
    """Record the env at the path, as it is, as generation 1 (with its profile)."""
    if spec.adopt is None:
        raise ValueError("an unmanaged env needs an Adoption to be recorded first")
    a = spec.adopt
    spec.store.adopt(Generation.new(1, command=ADOPTED, tensorflow=a.tensorflow, python=a.python))
    spec.write_profile(spec.store, 1, a.like)


def _journal(spec: Spec, staging: Path, number: int) -> dict[str, Any]:
    fields = {"op": "upgrade", "id": spec.op, "step": "building", "staging": str(staging)}
    if spec.new_env:  # what recovery needs to adopt a tree that was renamed into place
        return {
            **fields,
            "apply_new_env": True,
            "command": spec.command,
            "tensorflow": spec.tensorflow,
            "python": spec.python_version,
        }
    return {**fields, "new": number}


def _check_models(spec: Spec, env: Path, report: smoke.Report, result: TransactionResult) -> None:
    """The model-parity gate (:mod:`rebuild.core.models`): one check per model, added to the report."""
    gate = spec.models
    assert gate is not None  # run only when the spec has models
    spec.progress.stage("models", f"{len(gate.models)} model(s): loading and comparing in the new env")
    result.models = gate.check(env, spec.checks.tf_version)
    report.checks += models.as_checks(result.models)


def _keep_lock(store: Store, number: int, pylock: str) -> None:
    gen_dir = store.make_dir(store.generation_dir(number))
    fs.atomic_write(gen_dir / "pylock.toml", pylock)


def _discard(spec: Spec, number: int, adopted_now: bool) -> Path | None:
    """The one cleanup before the swap: the env at the path is as it was; returns where the log was kept
    when the state folder went with it."""
    store = spec.store
    discard.staging(store, spec.op)  # within a target search: deleted by a thread while the next try runs
    if not spec.new_env:
        shutil.rmtree(store.generation_dir(number), ignore_errors=True)
    store.commit()
    kept = None
    if adopted_now and spec.keep_state:  # the target search goes on under the same lock: only the records go
        _unadopt(store)
    elif adopted_now:  # leave no trace: the env was not managed before this run (but keep the log it names)
        kept = rescue_log(spec.log)
        shutil.rmtree(store.state, ignore_errors=True)
    return kept


def _unadopt(store: Store) -> None:
    """Undo this run's adoption (the env is not managed again) inside a state folder that stays: its lock file (still
    flock'd, as the folder is), its creation record and the run's log are kept; staging, generations and
    ``store.toml`` go."""
    try:
        os.unlink(store.store_file)
    except FileNotFoundError:
        pass
    for folder in (store.staging_root, store.generations_dir, store.trash_root):
        if folder != store.trash_root or not discard.pending():  # a try's staged env still being deleted: its own
            safe_rmtree(folder, store.state)


def _move_into_place(spec: Spec, tree: Path, result: TransactionResult) -> None:
    """A new path: rename the checked tree into place (atomic: nothing was there)."""
    env = spec.store.env
    if os.path.lexists(env):
        raise UserError(
            f"{env} appeared while the environment was being built.",
            "Another program created it; nothing was changed. Apply again to replace it.",
        )
    st = os.lstat(tree)
    spec.store.update_journal(step="renaming", apply_inode=st.st_ino, apply_device=st.st_dev)
    spec.progress.stage("move", f"{tree} → {env}")
    t0 = time.monotonic()
    os.rename(tree, env)
    fs.fsync_dir(env.parent)
    result.swap_ms = (time.monotonic() - t0) * 1000
    result.swap_method = "rename"
    fault_point("apply.renamed")  # only apply makes new envs


def _swap(spec: Spec, tree: Path, number: int, result: TransactionResult) -> None:
    store = spec.store
    spec.progress.stage("swap", f"{store.env} ← generation {number}")
    gen = Generation.new(number, command=spec.command, tensorflow=spec.tensorflow, python=spec.python_version)
    t0 = time.monotonic()
    swapped = store.switch_to(tree, gen)
    result.swap_ms = (time.monotonic() - t0) * 1000
    result.swap_method = swapped.method
    result.generation, result.previous = number, store.previous_number


def _verify(spec: Spec, staging: Path, result: TransactionResult, proven: tuple[int, int]) -> None:
    """The check at the real path (:func:`smoke.run_at_path`); on failure the path gets back what it held."""
    store, env = spec.store, spec.store.env
    if spec.project is not None and not spec.new_env:
        spec.progress.stage("project", f"project files, {spec.project.settle_name} and the checks at {env}")
        try:
            result.after_swap = spec.project.after_swap(store)
        except Exception as exc:  # a failed check, or the disk (a file that cannot be written): both go back
            spec.project.begin_undo(store)  # the marker first: a kill during the swap back is finished by recovery
            store.rollback_to(result.previous)
            spec.project.undo(store)
            after = (
                f"tfrebuild swapped generation {result.previous} back in and restored the project files; "
                "your environment and project are as they were."
            )
            if isinstance(exc, UserError):
                exc.message = f"{exc.message.rstrip('. ')}. {after}"
                raise
            raise UserError(
                f"Writing the project files failed after the swap ({exc}). {after}",
                "Check that the project's files can be written, then run the upgrade again.",
                exit_code=1,
            ) from exc
        return
    tf_version = spec.checks.tf_version
    spec.progress.stage(
        "verify",
        f"check at {env}"
        + (": importing TensorFlow" if spec.deep_check and tf_version else ": interpreter and versions"),
    )
    at_path = smoke.run_at_path(
        env,
        deep=spec.deep_check,
        tf_version=tf_version,
        versions=lockfile.read_pins(spec.pylock, unconditional=True) or {},
        inode=proven,
    )
    result.after_swap = at_path.checks
    if at_path.ok:
        return
    if spec.new_env:
        os.rename(env, staging / "env")  # it did not exist before: take it away again
        store.discard_staging(spec.op)
        store.commit()
        raise smoke.failure(
            at_path, f"at {env} after the move", spec.log, f"It was removed again; nothing exists at {env}."
        )
    store.rollback_to(result.previous)
    raise smoke.failure(
        at_path,
        f"at {env} after the swap",
        spec.log,
        f"tfrebuild swapped generation {result.previous} back in; your environment is as it was.",
    )


def _record(spec: Spec, number: int, result: TransactionResult) -> None:
    store = spec.store
    if not spec.new_env:  # switch_to recorded the generation and committed the journal
        spec.write_profile(store, number, like=spec.like, commands=spec.commands)
        return
    # The generation's lock and profile first, then the adoption that makes it a generation: a crash in
    # between leaves a complete env and an unmanaged state folder that the next apply finishes.
    _keep_lock(store, 1, spec.pylock)
    if result.models:
        models.record(store.generation_dir(1), result.models)
    spec.write_profile(store, 1, like=spec.like, commands=spec.commands)
    fault_point("apply.recorded")
    store.adopt(Generation.new(1, command=spec.command, tensorflow=spec.tensorflow, python=spec.python_version))
    store.discard_staging(spec.op)
    store.commit()
    result.generation, result.previous = 1, None
    signals.changed(
        str(store.env),
        f"{store.env} was created as generation 1 ({spec.tensorflow or 'the profile'}); "
        f"remove {store.env} and {store.state} to undo",
    )
