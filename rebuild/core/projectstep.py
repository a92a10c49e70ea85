"""The project's part of one upgrade transaction (see :mod:`rebuild.core.transaction`).

:class:`UvStep` is handed to the transaction, which calls it at fixed points:

* ``build(staging)``: the new env, from the project's new lock (:func:`rebuild.project.uvproject.build`);
* ``prepare(store, number)`` before the swap: the current generation keeps the project files as they
  are now (if it has none yet), the new generation keeps the new ones, and a marker says that the
  project files follow the swap (recovery finishes the write after a crash: :func:`files.finish`);
* ``after_swap(store)``: the new files are written, ``uv sync --locked`` installs the project's own
  package at the real path and ``--check`` confirms; then the full smoke checks run there;
* ``undo(store)`` after a swap back: the old files are written back;
* ``cleanup()``: the work folder beside the project goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.core import smoke
from rebuild.core.build import BuildResult
from rebuild.errors import UserError
from rebuild.project import files, uvproject
from rebuild.project.detect import Project


@dataclass
class UvStep:
    project: Project
    locked: uvproject.Locked
    python: Path
    prompt: str
    offline: bool
    compile_bytecode: bool
    log: Path | None
    checks: dict[str, Any]  # the full smoke checks (run at the real path, after the project is installed)
    staging_checks: dict[str, Any]  # those that run before the swap (without the project's own imports)
    notes: list[str] = field(default_factory=list)

    def build(self, staging: Path) -> BuildResult:
        start = time.monotonic()
        env = uvproject.build(self.locked, staging, self.python, prompt=self.prompt, offline=self.offline,
                              compile_bytecode=self.compile_bytecode, log=self.log)
        return BuildResult(env=env, pylock=staging / "pylock.toml", seconds=time.monotonic() - start, estimate=0)

    def prepare(self, store, number: int) -> None:
        root = self.project.root
        if files.load(store, store.current_number) is None:
            now = {n: d for n, d in files.on_disk(root, self.project.files).items() if d is not None}
            files.save(store, store.current_number, "uv", root, now)
        files.save(store, number, "uv", root, self.locked.files)
        files.begin(store)

    def after_swap(self, store) -> list[smoke.Check]:
        t0 = time.monotonic()
        written = files.finish(store)
        if written and "changed by hand" in written:
            raise UserError(f"The project files changed while the environment was being built: {written}.",
                            "Run the upgrade again.", exit_code=1)
        settled = uvproject.settle(self.project, store.env, offline=self.offline, log=self.log)
        checks = [smoke.Check("project files written and uv sync --locked agrees", True,
                              time.monotonic() - t0, settled)]
        report = smoke.run_checks(store.env, **self.checks)
        failed = [c for c in report.checks if not c.ok]
        if failed:
            raise smoke.failure(report, f"at {store.env} with the project installed", self.log or Path(""), "")
        return checks + report.checks

    def undo(self, store) -> None:
        files.begin(store)
        files.finish(store)

    def cleanup(self) -> None:
        uvproject.discard(self.locked)
