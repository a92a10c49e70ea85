"""Imports that already fail in the env as it is (issue 20, point 6): an error of its own, so that a failure the
upgrade's checks see is not taken for one the upgrade caused. Read-only: no bytecode is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from rebuild.doctor.findings import Finding
from rebuild.doctor.findings import FindingId as F
from rebuild.util import proc

SCRIPT = proc.each_argument_script(
    "import importlib", "importlib.import_module(arg)", '(str(exc).strip().splitlines() or [""])[-1]'
)


def failing_imports(
    python: Path, env: Path, names: list[str], timeout: float = 300.0, environ: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Import name -> the error it raises in ``env`` now; ``None`` when the interpreter itself does not run."""
    base = dict(os.environ if environ is None else environ)
    run_env = proc.clean_environ(
        base,
        PYTHONDONTWRITEBYTECODE="1",
        VIRTUAL_ENV=str(env),
        PATH=f"{Path(env) / 'bin'}{os.pathsep}{base.get('PATH', '')}",
    )
    result = proc.run([str(python), "-I", "-B", "-c", SCRIPT, *names], env=run_env, timeout=timeout, cwd=env)
    if not result.ok:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def check_imports(ctx) -> list[Finding]:
    """``import-failing``: each of the env's smoke imports (its requested packages) that fails today."""
    names = [m for m in ctx.profile.smoke.imports if m]
    if not names or ctx.loc.bare:
        return []
    failed = failing_imports(ctx.loc.python, ctx.loc.path, names, environ=ctx.environ) or {}
    return [
        F.IMPORT_FAILING.make(
            f"import {name} fails in the env as it is",
            [why],
            "this is not caused by an upgrade: fix or reinstall the package (`tfrebuild upgrade` reports it as "
            "'already failing before the upgrade' and does not hold it against the new env)",
            fixed_by_rebuild=False,
            affects_new_env=False,
        )
        for name, why in failed.items()
    ]
