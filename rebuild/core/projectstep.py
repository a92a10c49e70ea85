"""The project's part of one upgrade transaction (see :mod:`rebuild.core.transaction`).

A :class:`ProjectStep` is handed to the transaction, which calls it at fixed points:

* ``build(staging)``: the new env, from the project's new lock (each manager's own tool);
* ``prepare(store, number)`` before the swap: the current generation keeps the project files as they
  are now (if it has none yet), the new generation keeps the new ones, and a marker says that the
  project files follow the swap (recovery finishes the write after a crash: :func:`files.finish`);
* ``after_swap(store)``: the new files are written, the manager confirms that env and files agree
  (:meth:`ProjectStep.settle`), then the full smoke checks run at the real path;
* ``undo(store)`` after a swap back: the old files are written back;
* ``cleanup()``: the work folder beside the project goes.

:class:`UvStep` drives a uv project (:mod:`rebuild.project.uvproject`), :class:`PoetryStep` a Poetry
project (:mod:`rebuild.project.poetryproject`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.core import smoke
from rebuild.core.build import BuildResult
from rebuild.errors import UserError
from rebuild.project import files, uvproject
from rebuild.project.detect import Project
from rebuild.project.newenv import NewEnv

if TYPE_CHECKING:
    from rebuild.store.store import Store


@dataclass
class ProjectStep:
    project: Project
    new_files: dict[str, bytes]  # the project files the new generation gets
    python: Path
    prompt: str
    offline: bool
    compile_bytecode: bool
    log: Path | None
    checks: smoke.Checks  # the full smoke checks (run at the real path, after the project is installed)
    staging_checks: smoke.Checks  # those that run before the swap (without the project's own imports)
    force: bool = False  # --force: the files are written over hand edits (saved first by files.refuse_edited)
    notes: list[str] = field(default_factory=list)

    settle_name = "the project's own sync"  # what settle runs, for the progress line

    # --- what each manager provides
    def build_env(self, staging: Path) -> Path:
        raise NotImplementedError

    def settle(self, store: Store) -> str:
        """After the files are written: make the manager agree with the env (or raise ``UserError``)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        pass

    def pylock(self) -> str | None:
        """The new env as ``pylock.toml`` (the generation's record), ``None`` when the manager cannot say."""
        return None

    # --- the same for every manager
    def new_env(self, staging: Path) -> NewEnv:
        """Where and how :meth:`build_env` builds: ``staging/env`` on the plan's interpreter."""
        return NewEnv(staging, self.python, self.prompt, self.offline, self.compile_bytecode, self.log)

    def build(self, staging: Path) -> BuildResult:
        start = time.monotonic()
        env = self.build_env(staging)
        return BuildResult(env=env, pylock=staging / "pylock.toml", seconds=time.monotonic() - start, estimate=0)

    def prepare(self, store: Store, number: int) -> None:
        root, manager = self.project.root, self.project.manager
        if files.load(store, store.current_number) is None:
            now = {n: d for n, d in files.on_disk(root, self.project.files).items() if d is not None}
            files.save(store, store.current_number, manager, root, now)
        files.save(store, number, manager, root, self.new_files)
        files.begin(store)

    def after_swap(self, store: Store) -> list[smoke.Check]:
        t0 = time.monotonic()
        written = files.finish(store, force=self.force)
        if written and "changed by hand" in written:
            raise UserError(
                f"The project files changed while the environment was being built: {written}.",
                "Run the upgrade again.",
                exit_code=1,
            )
        settled = self.settle(store)
        checks = [smoke.Check(f"project files written; {settled}", True, time.monotonic() - t0)]
        report = self.checks.run(store.env)
        if not report.ok:
            raise smoke.failure(report, f"at {store.env} with the project installed", self.log or Path(""), "")
        return checks + report.checks

    def begin_undo(self, store: Store) -> None:
        """Before the swap back: recovery writes the old files if a kill comes before :meth:`undo`."""
        files.begin(store)

    def undo(self, store: Store) -> None:
        """After the swap back: the old generation's files again (over files this run wrote; never over hand edits)."""
        files.begin(store)
        files.finish(store)


@dataclass
class UvStep(ProjectStep):
    settle_name = "uv sync --locked"
    locked: uvproject.Locked | None = None
    chosen: list[str] = field(default_factory=list)  # --extra/--group flags: what the old env held of them

    def build_env(self, staging: Path) -> Path:
        assert self.locked is not None, "locked by prepare() before the build"
        return uvproject.build(self.locked, self.new_env(staging), chosen=self.chosen)

    def settle(self, store: Store) -> str:
        return uvproject.settle(self.project, store.env, offline=self.offline, log=self.log, chosen=self.chosen)

    def cleanup(self) -> None:
        uvproject.discard(self.locked)

    def pylock(self) -> str | None:
        assert self.locked is not None, "locked by prepare() before the build"
        return uvproject.export_pylock(self.locked, self.log)


@dataclass
class RequirementsStep(ProjectStep):
    """A ``requirements.in`` + compiled ``requirements.txt`` (:mod:`rebuild.project.requirements`)."""

    settle_name = "uv pip sync --dry-run"

    compiled: Any = None  # rebuild.project.requirements.Compiled
    find_links: list[str] = field(default_factory=list)
    seeds: dict[str, str] = field(default_factory=dict)  # the old env's pip/setuptools/wheel the .txt does not pin

    def build_env(self, staging: Path) -> Path:
        from rebuild.project import requirements

        return requirements.build(self.compiled, self.new_env(staging), find_links=self.find_links, seeds=self.seeds)

    def settle(self, store: Store) -> str:
        from rebuild.project import requirements

        return requirements.settle(
            self.project, store.env, offline=self.offline, find_links=self.find_links, log=self.log
        )

    def cleanup(self) -> None:
        from rebuild.project import requirements

        requirements.discard(self.compiled)

    def pylock(self) -> str | None:
        from rebuild.project import requirements

        return requirements.export_pylock(self.compiled, offline=self.offline, find_links=self.find_links, log=self.log)


@dataclass
class PoetryStep(ProjectStep):
    """A Poetry project through the user's own ``poetry`` (:mod:`rebuild.project.poetryproject`)."""

    settle_name = "poetry sync"

    locked: Any = None  # rebuild.project.poetryproject.Locked
    seeds: dict[str, str] = field(default_factory=dict)  # pip & co. the env had that the lock does not hold
    index: Any = None  # the plan's index settings (for the seeds)
    pylock_text: str | None = None  # the record when Poetry's lock differs from the plan

    def build_env(self, staging: Path) -> Path:
        from rebuild.project import poetryproject

        return poetryproject.build(self.locked, self.new_env(staging), seeds=self.seeds, index=self.index)

    def pylock(self) -> str | None:
        return self.pylock_text

    def settle(self, store: Store) -> str:
        from rebuild.project import poetryproject

        return poetryproject.settle(self.project, store.env, log=self.log)

    def cleanup(self) -> None:
        from rebuild.project import poetryproject

        poetryproject.discard(self.locked)
