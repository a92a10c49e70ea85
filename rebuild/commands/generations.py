"""Generation commands: ``rollback`` and the store opening and recovery every generation command starts with
(``history``, ``diff`` and ``status`` are :mod:`rebuild.commands.history`, ``gc`` is :mod:`rebuild.commands.gc`).

They work on the store that ``upgrade`` creates beside a managed env. None of
them uses the network or uv.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rebuild.core import models, smoke
from rebuild.env import fsguard, inuse, refusals
from rebuild.env import profile as prof
from rebuild.env.locate import locate
from rebuild.errors import UserError
from rebuild.project import files as project_files
from rebuild.store import recovery
from rebuild.store.location import state_dir
from rebuild.store.records import Generation
from rebuild.store.store import Store
from rebuild.util import signals


def _open_recovered(path: Path) -> tuple[Store | None, str | None]:
    """``Store.open(path)`` and what opening it recovered: first, an interrupted ``apply`` to this new path (a
    journal in a state folder that is not managed yet) is finished or undone, whatever the command (what was done
    is reported with the command's own recovery: :func:`_and_opened`)."""
    store, done = Store.open(path), None
    if store is None and Store.unmanaged(path).journal_path.exists():
        unmanaged = Store.unmanaged(path)
        done = recovery.recover_if_idle(unmanaged, finished=complete_profile)
        store = Store.open(path)
        if store is None and unmanaged.state.is_dir() and _only_bookkeeping(unmanaged.state):
            import shutil

            shutil.rmtree(unmanaged.state, ignore_errors=True)  # nothing left of the apply: no state folder either
    elif store is None and not os.path.lexists(path) and os.path.isdir(state_dir(path)):
        done = _tidy_killed_apply(Store.unmanaged(path))
    return store, done or None


def _tidy_killed_apply(store: Store) -> str | None:
    """A state folder for a path that does not exist, with no store and no journal: an ``apply`` into a new path
    killed before it wrote its journal. Under the lock (a live apply holds it: then nothing is touched), its
    staging and trash are deleted (never through a link) and the folder goes."""
    import shutil

    from rebuild.store.trees import safe_rmtree

    try:
        with store.lock("tfrebuild: remove what a killed apply left"):
            if store.managed or os.path.lexists(store.journal_path) or os.path.lexists(store.env):
                return None
            for folder in (store.staging_root, store.trash_root):
                if os.path.isdir(folder) and not os.path.islink(folder):
                    for entry in list(os.scandir(folder)):
                        safe_rmtree(Path(entry.path), store.state)
            if not _only_bookkeeping(store.state):
                return None
            shutil.rmtree(store.state, ignore_errors=True)
    except UserError:
        return None  # busy (a live apply) or not ours: left alone, and the command says what it says
    return "removed the state folder an apply into this new path left when it was killed before it began"


def _only_bookkeeping(state: Path) -> bool:
    """Whether a state folder holds nothing but tfrebuild's own bookkeeping (its creation record, the lock, the
    ``.gitignore``, empty staging/trash/logs folders, the logs of the undone apply)."""
    import os

    for entry in os.scandir(state):
        if entry.name in ("created", "lock", ".gitignore", "logs"):
            continue
        if (
            entry.name in ("staging", "trash")
            and entry.is_dir(follow_symlinks=False)
            and not any(os.scandir(entry.path))
        ):
            continue
        return False
    return True


def _and_opened(at_open: str | None, done: str | None) -> str | None:
    """``done`` together with what opening the store recovered (``at_open``)."""
    parts = [p for p in (at_open, done) if p]
    return "; ".join(parts) or None


def env_path(env) -> Path:
    """The env path of a command on generations: :func:`locate`'s; where locate refuses, a path whose state
    folder holds a store or a journal still is one (issue 23, point 6): a managed env whose ``bin/python``
    dangles (its kept generations are whole), or an ``apply`` into a new path killed before its rename."""
    try:
        return locate(env).path
    except UserError:
        if env is None:
            raise
        import os

        from rebuild.store.location import env_path as real, state_dir

        try:
            path = real(os.path.expanduser(os.fspath(env)))
            state = state_dir(path)
            found = not os.path.islink(state) and any(
                os.path.isfile(state / name) for name in ("store.toml", "journal.json", "created")
            )
        except (OSError, ValueError):
            found = False
        if not found:
            raise
        return path


def open_store(env) -> tuple[Store, str | None]:
    """The store of ``env`` and what opening it recovered (an interrupted apply into this path, finished)."""
    path = env_path(env)
    store, done = _open_recovered(path)
    if store is None:  # ``done``: an interrupted apply into this new path, undone
        raise UserError(
            f"{path} is not managed by tfrebuild yet: it has no generations" + (f" ({done})." if done else "."),
            "Generations are made by `tfrebuild upgrade`; the first upgrade keeps the env as generation 1.",
        )
    return store, done


def recover(store: Store, at_open: str | None = None) -> str | None:
    """:meth:`Store.recover`; a generation finished that way gets its profile (:func:`complete_profile`); the
    message names what opening the store recovered too (``at_open``, from :func:`open_store`)."""
    return _and_opened(at_open, store.recover(finished=complete_profile))


def write_profile(
    store: Store,
    number: int,
    profile: prof.Profile | None = None,
    *,
    like: prof.Profile | None = None,
    commands: list[str] | None = None,
    index: prof.Index | None = None,
) -> None:
    """Each generation keeps the profile of its environment.

    Without ``profile`` it is a fresh snapshot of the env at the real path, pointing at the
    generation's lock when it has one, and carrying over ``like``'s user edits: its
    ``[constraints]``, smoke imports and smoke commands (or ``commands``, when only some of
    them may be kept, as for a foreign profile in ``apply``). ``index`` (redacted) gives the
    constraints the generation was resolved with (``--constraint`` files included).
    """
    from rebuild.env import snapshot

    folder = store.generation_dir(number)
    if profile is None:
        profile = snapshot.take(store.env)
        if (folder / "pylock.toml").exists():
            profile.lock = "pylock.toml"
        if index is not None:
            profile.index.constraints = list(index.constraints)
            profile.index.constraint_lines = list(index.constraint_lines)
            profile.index.settings += [
                s
                for s in index.settings
                if s.key in ("constraints", "constraint_lines") and s not in profile.index.settings
            ]
        if like is not None:
            profile.constraints = dict(like.constraints)
            profile.smoke.imports = list(like.smoke.imports) or profile.smoke.imports
            profile.smoke.commands = list(like.smoke.commands if commands is None else commands)
            profile.smoke.models = list(like.smoke.models)
    store.make_dir(folder)
    snapshot.write(profile, folder / "profile.toml")


def complete_profile(store: Store) -> None:
    """Every generation keeps a profile; recovery can finish an upgrade before its profile was written.
    Project files that were to follow a swap are written too, and work folders a killed run left beside the
    project are removed (:func:`rebuild.project.files.recover`)."""
    if not (store.generation_dir(store.current_number) / "profile.toml").exists():
        try:
            write_profile(store, store.current_number)
        except UserError:  # the env cannot be probed now (broken interpreter): the next command tries again
            pass
    project_files.recover(store)


def _tf_version(gen: Generation) -> str:
    return gen.tensorflow.split()[-1] if gen.tensorflow else ""


def refuse_if_in_use(env: Path, force: bool) -> list[inuse.User]:
    users = inuse.processes_using(env)
    if users and not force:
        raise refusals.in_use(env, users)
    return users


# --- rollback -----------------------------------------------------------------


@dataclass
class RollbackResult:
    env: str
    from_generation: int
    to_generation: int
    tensorflow: str
    python: str
    swap_ms: float
    checks: list[smoke.Check] = field(default_factory=list)
    recovered: str | None = None
    forced_users: list[inuse.User] = field(default_factory=list)
    swap_method: str = ""  # the exchange that ran: "renameat2" (atomic) or "rename" (three renames)
    project: str | None = None  # what happened to the project files (pyproject.toml, uv.lock), if any
    notes: list[str] = field(default_factory=list)


def rollback(
    env=None,
    to: int | None = None,
    *,
    yes: bool = False,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    deep: bool = False,
) -> RollbackResult:
    """Swap generation ``to`` (default: the previous one) back in, then check it at the path.

    The generation returned to was proven at this path when it was current, so the check is cheap by default
    (:func:`rollback_check`); ``deep`` (``--check import``) imports TensorFlow there as well."""
    if not yes and confirm is None:
        raise UserError(
            "tfrebuild rollback needs confirmation, and there is no terminal to ask on.",
            "See `tfrebuild history`, then run `tfrebuild rollback --yes`.",
        )
    store, at_open = open_store(env)
    with store.lock("tfrebuild rollback" + (f" --to {to}" if to is not None else "")):
        recovered = recover(store, at_open)
        from rebuild.commands import outside

        adopted = outside.adopt_text(store, outside.adopt(store, write_profile))  # changed by hand: adopt first
        recovered = "; ".join(filter(None, (recovered, adopted))) or None
        current = store.current
        target_n = to if to is not None else store.previous_number
        if target_n is None:
            raise UserError(f"{store.env} has no earlier generation to roll back to.", "See `tfrebuild history`.")
        if target_n == current.number:
            raise UserError(f"Generation {target_n} is already current at {store.env}.", "See `tfrebuild history`.")
        numbers = [g.number for g in store.generations()]
        if target_n not in numbers:
            store.generation(target_n)  # one that is there but cannot be read says so
            raise UserError(
                f"There is no generation {target_n} of {store.env}.",
                f"Existing generations: {', '.join(map(str, numbers))} (see `tfrebuild history`).",
            )
        target = store.generation(target_n)
        target_tf = _tf_version(target)
        project = project_files.load(store, target_n) is not None
        edits = project_files.edits(store) if project and not force else None  # rollback would put older files back
        shown = (
            ""
            if edits is None
            else (
                "\nYour edits to the project files since generation "
                f"{current.number} are replaced by generation {target_n}'s (saved first in "
                "the state folder's project-edits/):\n" + "\n".join(d for _, d in edits[1])
            )
        )
        if not yes and not confirm(
            f"Swap generation {target_n} ({target.tensorflow}, Python {target.python}) "
            f"in at {store.env}? Generation {current.number} is kept.{shown}"
        ):
            raise UserError(
                "Rollback cancelled; the env was not changed."
                + (f" ({adopted[0].upper() + adopted[1:]}: it stays recorded.)" if adopted else ""),
                exit_code=1,
            )
        files_force = force or (edits is not None and not yes)  # asked, with the diff, and answered yes
        users = refuse_if_in_use(store.env, force)
        fsguard.refuse_mount_point(store.env)
        notes = project_files.refuse_edited(store, force=files_force, doing="the rollback") if project else []
        written = None
        t0 = time.monotonic()
        with signals.deferred():  # after the swap, the check (and a swap back) finish before a signal ends it
            if project:  # the project files follow the env (recovery finishes them after a crash)
                project_files.begin(store)
            method = store.rollback_to(target_n).method
            swap_ms = (time.monotonic() - t0) * 1000
            written = project_files.finish(store, force=files_force)
            report = rollback_check(store, target_n, target_tf, deep)
            if report.ok and project:
                notes += _settle_project(store)
            if not report.ok:
                if project:
                    project_files.begin(store)
                store.rollback_to(current.number)
                project_files.finish(store)
        if not report.ok:
            from rebuild.util import failtext

            failed = failtext.check_details(report.failed)  # the cause (innermost frames), not the last 2000 chars
            raise UserError(
                f"Generation {target_n} does not work at {store.env}; tfrebuild swapped generation "
                f"{current.number} back in.",
                "See the check output; `tfrebuild history` lists the others.",
                exit_code=1,
                details=failed,
            )
        return RollbackResult(
            str(store.env),
            current.number,
            target_n,
            target.tensorflow,
            target.python,
            swap_ms,
            report.checks,
            recovered,
            users,
            method,
            written,
            notes,
        )


def _settle_project(store: Store) -> list[str]:
    """A uv project after a rollback: ``uv sync --locked --offline`` (uv rebuilds the project's own editable
    package when its pyproject.toml was rewritten, nothing else) and ``--check``; a Poetry project:
    ``poetry sync`` that changes nothing but the project's own package; a failure is a note."""
    from rebuild.project import uvproject
    from rebuild.project.detect import detect

    project = detect(store.env)
    if project is not None and project.manager == "requirements" and project.drivable:
        from rebuild.project import requirements

        try:
            return [f"{requirements.settle(project, store.env, offline=True, log=None)} in {project.root}"]
        except UserError as exc:
            return [f"{exc.message}: run `uv pip sync {project.files[1]}` in {project.root}"]
    if project is not None and project.manager == "poetry" and project.drivable:
        from rebuild.project import poetryproject

        try:
            return [
                f"{poetryproject.settle(project, store.env, log=None)} in {project.root}: poetry.lock and the env match"
            ]
        except UserError as exc:
            return [f"{exc.message}: run `poetry sync` in {project.root}"]
    if project is None or project.manager != "uv":
        return []
    try:
        return [
            f"{uvproject.settle(project, store.env, offline=True, log=None)} in {project.root}: uv.lock and the env match"
        ]
    except UserError as exc:
        return [
            f"{exc.message}: run `uv sync` in {project.root} ({exc.details.strip().splitlines()[-1] if exc.details else ''})"
        ]


def rollback_check(store: Store, number: int, tf_version: str, deep: bool) -> smoke.Report:
    """The check at the path after a rollback: the generation's tree (inode), its interpreter starting there and
    reporting the Python and TensorFlow versions its record names (those the deep check verified when it was
    current: packages the user changed in place since are not held against it); with ``deep``, TensorFlow's
    import too."""
    gen = store.generation(number)
    dist = gen.tensorflow.split()[0] if gen.tensorflow and tf_version else ""
    inode = (gen.device, gen.inode) if gen.inode else None
    report = smoke.run_at_path(
        store.env,
        deep=deep,
        tf_version=tf_version,
        versions={dist: tf_version} if dist else {},
        inode=inode,
        python=gen.python,
    )
    if deep and report.ok:  # --check import: the generation's [[smoke.models]] load and run a batch there too
        report.checks += models.as_checks(_load_models(store, number))
    return report


def _load_models(store: Store, number: int) -> list:
    """Generation ``number``'s models (its profile's ``[[smoke.models]]``) loaded and run at the env's path."""
    import tempfile

    try:
        listed = prof.load(store.generation_dir(number) / "profile.toml").smoke.models
    except (OSError, UserError):
        return []
    if not listed:
        return []
    with tempfile.TemporaryDirectory(prefix="tfrebuild-models-") as tmp:
        return models.load_check(store.env, listed, Path(tmp))
