"""Running the model script (``_models.py``) in an env for the model-parity gate of :mod:`rebuild.core.models`: one
:class:`Job` per model, all of one env's jobs in one process of that env's interpreter (:func:`run_batch`), a model
that ends the process answered by that failure and the rest run again in a new one. Split from
:mod:`rebuild.core.models` (same code).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.core import smoke
from rebuild.env import profile as prof
from rebuild.util import proc

SCRIPT = Path(__file__).with_name("_models.py")
SEED = 20240
BATCH = 8


def _environ(env: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    environ = smoke.clean_environ(env)
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environ.update(extra or {})
    return environ


@dataclass
class Job:
    """One model to run in one env: where its inputs and outputs live, how to load it, what to do."""

    folder: Path
    model: prof.SmokeModel
    loader: str
    mode: str  # reference | compare | load
    tag: str  # the name of this run's outputs

    def spec(self, extra_path: str = "") -> dict[str, Any]:
        m = self.model
        return {
            "mode": self.mode,
            "path": m.path,
            "loader": self.loader,
            "inputs": m.inputs,
            "folder": str(self.folder),
            "tag": self.tag,
            "rtol": m.rtol,
            "atol": m.atol,
            "imports": list(m.imports),
            "seed": SEED,
            "batch": BATCH,
            "extra_path": extra_path,
        }


MARK = "@@tfrebuild-model@@ "


def run_batch(
    env: Path,
    jobs: list[Job],
    *,
    timeout: float,
    extra: dict[str, str] | None = None,
    extra_path: str = "",
    log: Path | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``env``'s interpreter: one process for all of them (TensorFlow imported once, each model
    loaded once). A model that ends the process (a crash, the timeout: each model has ``timeout``) gets that as its
    answer, and the models after it run in a new process. One JSON answer per job, in order. ``cancel`` set: the
    running process group is killed and no further process starts."""
    answers: list[dict[str, Any] | None] = [None] * len(jobs)
    env = Path(os.path.abspath(env))
    pending = list(range(len(jobs)))
    while pending and not (cancel is not None and cancel.is_set()):
        batch = [jobs[i] for i in pending]
        for job in batch:
            job.folder.mkdir(exist_ok=True)  # not its parents: a discarded operation's folder is never made again
        jobs_file = batch[0].folder / f"jobs-{batch[0].tag}.json"
        jobs_file.write_text(json.dumps([job.spec(extra_path) for job in batch]), encoding="utf-8")
        result = proc.run(
            [str(env / "bin" / "python"), "-I", "-B", str(SCRIPT), str(jobs_file)],
            env=_environ(env, extra),
            timeout=timeout * len(batch),
            cwd=batch[0].folder,
            log=log,
            cancel=cancel,
        )
        for line in (result.stdout or "").splitlines():
            if line.startswith(MARK):
                try:
                    answer = json.loads(line[len(MARK) :])
                    answers[pending[int(answer["index"])]] = answer
                except (ValueError, KeyError, IndexError, TypeError):
                    continue
        missing = [i for i in pending if answers[i] is None]
        if not missing:
            break
        answers[missing[0]] = _process_failure(result, timeout, jobs[missing[0]].loader)
        pending = missing[1:]
    return [a or {} for a in answers]


def _process_failure(result: proc.Result, timeout: float, loader: str) -> dict[str, Any]:
    tail = [line for line in ((result.stderr or "") + (result.stdout or "")).strip().splitlines() if line.strip()]
    if result.timed_out:
        error = f"timed out after {timeout:.0f} s (TFREBUILD_SMOKE_TIMEOUT)"
    elif result.error:
        error = f"the interpreter could not be started: {result.error}"
    else:
        error = (tail[-1] if tail else f"exit code {result.returncode}")[:600]
    return {"ok": False, "stage": "process", "error": error, "outputs": [], "loader": loader, "keras": ""}


def run_script(
    env: Path,
    folder: Path,
    model: prof.SmokeModel,
    loader: str,
    mode: str,
    tag: str,
    *,
    timeout: float,
    extra: dict[str, str] | None = None,
    extra_path: str = "",
    log: Path | None = None,
) -> dict[str, Any]:
    """One model alone in ``env`` (:func:`run_batch`)."""
    return run_batch(
        env, [Job(folder, model, loader, mode, tag)], timeout=timeout, extra=extra, extra_path=extra_path, log=log
    )[0]
