"""The import checks in the current env, before the upgrade (issue 20, point 6).

They run read-only (no bytecode written) in the env as it is, and only when an answer is needed: the first time an
import or an op library fails in the new env (:meth:`Baseline.failing`). An import that fails there already is
"already failing before the upgrade" and does not block the new env: only regressions do. An upgrade whose checks
pass imports nothing in the current env (run beside the build, these imports slowed it on a 2-CPU machine). Where
checks also run at the path after the swap (a driven project's), :meth:`Baseline.start` runs them at once, while the
path still holds the env as it is; and they never run in another tree than the one they were made for.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.store.trees import venv_identity
from rebuild.util import proc

if TYPE_CHECKING:
    from rebuild.core.smoke import Check


class Baseline:
    """``failing()``: import name -> the error it already raises in the current env (run at the first call, once;
    the checks' side thread and the main thread may both ask)."""

    def __init__(self, env: Path, imports: list[str], timeout: float = 300.0, run: bool = True):
        self._env, self._names, self._timeout = Path(env), [m for m in imports if m], timeout
        # run=False (--no-reference-checks): nothing is already failing
        self._run = run and (self._env / "bin" / "python").exists()
        self._identity = venv_identity(self._env)  # the tree the answers are about: the env as it is now
        self._result: dict[str, str] = {}
        self._ran = False
        self._once = threading.Lock()
        self._thread: threading.Thread | None = None
        self.seconds: float | None = None  # how long the checks ran (None: not run)
        self.waited = 0.0  # how long callers waited for them (when they run at the first question: all of it)

    def start(self) -> None:
        """Run them now, in a thread (``failing()`` then waits for it): for checks that also run at the path after
        the swap, when the tree there is no longer the env as it is now."""
        if self._run and self._thread is None:
            self._thread = threading.Thread(target=self._once_only, name="tfrebuild-baseline", daemon=True)
            self._thread.start()

    def failing(self) -> dict[str, str]:
        began = time.monotonic()
        self._once_only()
        with self._once:
            self.waited += time.monotonic() - began
        return dict(self._result)

    def _once_only(self) -> None:
        with self._once:
            if not self._run or self._ran:
                return
            self._ran = True
            began = time.monotonic()
            try:
                if venv_identity(self._env) == self._identity:  # else another tree is at the path: nothing is known
                    self._checks(self._env / "bin" / "python", self._env, self._names, self._timeout)
            finally:
                self.seconds = time.monotonic() - began

    def _checks(self, python: Path, env: Path, names: list[str], timeout: float) -> None:
        from rebuild.core import oplibs
        from rebuild.doctor.checks_imports import failing_imports

        failed = failing_imports(python, env, names, timeout) if names else {}
        if failed is None:
            return  # the interpreter itself fails: nothing is known about the imports
        self._result = dict(failed)
        environ = proc.clean_environ(
            PYTHONDONTWRITEBYTECODE="1",
            VIRTUAL_ENV=str(env),
            PATH=f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        found = oplibs.find(env)  # the op libraries too: one that already fails to load is not a regression
        owner = {str(p): n for n, libs in found.items() for p in libs}
        if not owner:
            return
        result = proc.run(
            [str(python), "-I", "-B", "-c", oplibs.LOAD_SCRIPT, *owner], env=environ, timeout=timeout, cwd=env
        )
        try:
            failed = json.loads(result.stdout.strip().splitlines()[-1]) if result.ok else {}
        except (ValueError, IndexError):
            failed = {}
        self._result.update({oplibs.key(owner[p], p): why for p, why in failed.items() if p in owner})

    def timing(self) -> dict[str, Any]:
        """For ``--json``: whether the checks ran (only when a check in the new env failed), how long, and how long
        anyone waited for them."""
        return {"ran": self._ran, "seconds": self.seconds, "waited_seconds": round(self.waited, 3)}


def judge(check: Check, failed: dict[str, str], before: dict[str, str]) -> None:
    """Imports that already failed before the upgrade do not fail ``check``; they are named in its output."""
    before = {k: v for k, v in before.items() if not k.startswith("oplib:")}
    old = [name for name in failed if name in before]
    if not old:
        return
    new = [name for name in failed if name not in before]
    note = "\n".join(
        f"import {name}: already failing before the upgrade ({before[name]}); not held against the new env"
        for name in old
    )
    check.output = f"{note}\n{check.output}" if check.output else note
    if not new:
        check.ok = True
        check.name = f"imports: {len(old)} already failing before the upgrade ({', '.join(old)}), the others import"
