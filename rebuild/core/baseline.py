"""The import checks in the current env, before the upgrade (issue 20, point 6).

They run read-only (no bytecode written) in the env as it is, in a thread beside the build; an import that fails
there already is "already failing before the upgrade" and does not block the new env: only regressions do.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.util import proc

if TYPE_CHECKING:
    from rebuild.core.smoke import Check


class Baseline:
    """``failing()``: import name -> the error it already raises in the current env (waits for the thread)."""

    def __init__(self, env: Path, imports: list[str], timeout: float = 300.0, run: bool = True):
        self._result: dict[str, str] = {}
        self.seconds: float | None = None  # how long the checks ran (None: not finished, or not run)
        self.waited = 0.0  # how long the caller waited for them (the part on the critical path)
        names = [m for m in imports if m]
        python = Path(env) / "bin" / "python"
        self._thread = threading.Thread(target=self._work, args=(python, Path(env), names, timeout), daemon=True)
        if python.exists() and run:  # run=False (--no-reference-checks): nothing is already failing
            self._thread.start()

    def _work(self, python: Path, env: Path, names: list[str], timeout: float) -> None:
        began = time.monotonic()
        try:
            self._checks(python, env, names, timeout)
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

    def failing(self) -> dict[str, str]:
        if self._thread.is_alive() or self._thread.ident is not None:
            began = time.monotonic()
            self._thread.join()
            self.waited += time.monotonic() - began
        return dict(self._result)

    def timing(self) -> dict[str, Any]:
        """For ``--json``: whether the checks ran, how long, and how long anyone waited for them."""
        return {"ran": self._thread.ident is not None, "seconds": self.seconds, "waited_seconds": round(self.waited, 3)}


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
