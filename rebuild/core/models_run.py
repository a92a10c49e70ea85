"""Running the model script (``_models.py``) in an env for the model-parity gate of :mod:`rebuild.core.models`: one
:class:`Job` per model, all of one env's jobs in one process of that env's interpreter (:func:`run_batch`), a model
that ends the process answered by that failure and the rest run again in a new one. Split from
:mod:`rebuild.core.models` (same code).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
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


def _answers(result: proc.Result, count: int) -> list[dict[str, Any] | None]:
    """The marked answers of one process, by their index in its jobs (None: not given)."""
    answers: list[dict[str, Any] | None] = [None] * count
    for line in (result.stdout or "").splitlines():
        if line.startswith(MARK):
            try:
                answer = json.loads(line[len(MARK) :])
                answers[int(answer["index"])] = answer
            except (ValueError, KeyError, IndexError, TypeError):
                continue
    return answers


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
        jobs_file.write_text(json.dumps([_timed(job.spec(extra_path), timeout) for job in batch]), encoding="utf-8")
        result = proc.run(
            [str(env / "bin" / "python"), "-I", "-B", str(SCRIPT), str(jobs_file)],
            env=_environ(env, extra),
            timeout=timeout * len(batch),
            cwd=batch[0].folder,
            log=log,
            cancel=cancel,
        )
        for i, answer in zip(pending, _answers(result, len(batch)), strict=True):
            answers[i] = answer
        missing = [i for i in pending if answers[i] is None]
        if not missing:
            break
        answers[missing[0]] = _process_failure(result, timeout, jobs[missing[0]].loader)
        pending = missing[1:]
    return [a or {} for a in answers]


def _timed(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A job's spec with its own timeout: the script ends itself when one model runs past it (:func:`_timed_out`)."""
    return {**spec, "timeout": timeout}


def _timed_out(result: proc.Result) -> bool:
    """The process ran past a timeout: the parent's, or the script's own (faulthandler prints ``Timeout (0:05:00)!``)."""
    return result.timed_out or bool(re.search(r"^Timeout \(\d+:\d\d:\d\d(\.\d+)?\)!", result.stderr or "", re.M))


def _process_failure(result: proc.Result, timeout: float, loader: str) -> dict[str, Any]:
    tail = [line for line in ((result.stderr or "") + (result.stdout or "")).strip().splitlines() if line.strip()]
    if _timed_out(result):
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


class Checked:
    """The new env's smoke check "tensorflow imports and computes" and its models in ONE process of its interpreter
    (TensorFlow imported once): started as soon as the new env is built, it writes TensorFlow's answer to a file at
    once (:meth:`tf_check`, a smoke check like the others), then waits for the model jobs, which the gate hands over
    when the current env's reference run is in (:meth:`release`). Each step keeps its own timeout (the script ends
    itself when one runs past it). A model that ends the process is answered by that failure, the models after it
    run in a new process (:func:`run_batch`), and TensorFlow's answer, written before, stands."""

    def __init__(
        self, env: Path, folder: Path, *, timeout: float, models: int, log: Path | None, cancel: threading.Event
    ):
        self.env, self.folder, self.timeout, self.log, self.cancel = (
            Path(os.path.abspath(env)),
            folder,
            timeout,
            log,
            cancel,
        )
        self.answer, self.go = folder / "tf-check.json", folder / "go.json"
        self.wait = timeout * (models + 1) + 60  # the reference run's own bound, and some
        self.result: proc.Result | None = None
        self.started = time.monotonic()
        self.answered: float | None = None  # when TensorFlow's answer came
        self.released: float | None = None  # when the model jobs were handed over
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(timeout * (models + 1) + self.wait,), daemon=True)
        self.thread.start()

    def _run(self, bound: float) -> None:
        try:
            jobs = {
                "check": {"answer": str(self.answer), "timeout": self.timeout},
                "go": str(self.go),
                "wait": self.wait,
            }
            jobs_file = self.folder / "jobs-checks.json"
            jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
            self.result = proc.run(
                [str(self.env / "bin" / "python"), "-I", "-B", str(SCRIPT), str(jobs_file)],
                env=_environ(self.env),
                timeout=bound,
                cwd=self.folder,
                log=self.log,
                cancel=self.cancel,
            )
        finally:
            self._done.set()

    def tf_check(self, name: str, timeout: float) -> tuple[smoke.Check, str]:
        """TensorFlow's check, as :func:`rebuild.core.smoke.run_checks` runs it: the check and its JSON line."""
        deadline = self.started + timeout + 30  # the script's own timer ends it at ``timeout``: this is the backstop
        while not self.answer.exists() and not self._done.wait(0.02) and time.monotonic() < deadline:
            pass
        self.answered = time.monotonic()
        seconds = self.answered - self.started
        if not self.answer.exists() and not self._done.is_set():  # the failed check stops the gate: it is killed
            return smoke.Check(name, False, seconds, f"timed out after {timeout:.0f}s"), ""
        try:
            got = json.loads(self.answer.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result = self.result
            if result is None or result.cancelled:
                return smoke.Check(name, False, seconds, "stopped"), ""
            if _timed_out(result):
                return smoke.Check(name, False, seconds, f"timed out after {timeout:.0f}s\n{result.output}"), ""
            return smoke.Check(name, False, seconds, result.error or result.output), ""
        if "error" in got:
            return smoke.Check(name, False, seconds, str(got["error"])), ""
        return smoke.Check(name, True, seconds, json.dumps(got)), json.dumps(got)

    def release(self, jobs: list[Job]) -> None:
        """Hand the model jobs to the process (written whole, then renamed: the script reads all or nothing)."""
        tmp = self.go.with_suffix(".tmp")
        tmp.write_text(json.dumps([_timed(job.spec(), self.timeout) for job in jobs]), encoding="utf-8")
        for job in jobs:
            job.folder.mkdir(exist_ok=True)
        os.replace(tmp, self.go)
        self.released = time.monotonic()

    def answers(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The models' answers, in order, once the process has ended (those it did not give: see the class)."""
        self.thread.join()
        result = self.result
        assert result is not None
        answers = _answers(result, len(jobs))
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing and "no model jobs came" not in (result.stderr or "") and not result.cancelled:
            answers[missing[0]] = _process_failure(result, self.timeout, jobs[missing[0]].loader)
            missing = missing[1:]
        if missing:
            again = run_batch(
                self.env, [jobs[i] for i in missing], timeout=self.timeout, log=self.log, cancel=self.cancel
            )
            for i, answer in zip(missing, again, strict=True):
                answers[i] = answer
        return [a or {} for a in answers]


def tf_keras(
    env: Path, tf_version: str, target: Path, index: prof.Index | None, offline: bool, log: Path | None, timeout: float
) -> tuple[str, str]:
    """A folder (``target``) holding the tf-keras of ``tf_version`` for the Keras 2 retry (``""`` when the env has
    tf-keras itself), or why there is none. Installed with uv into the operation's folder: the env is not touched."""
    if list(env.glob("lib/python*/site-packages/tf_keras/__init__.py")):
        return "", ""
    parts = tf_version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return "", f"the new env's TensorFlow version is unknown ({tf_version!r}): tf-keras cannot be chosen"
    major, minor = int(parts[0]), int(parts[1])
    if (target / "tf_keras").is_dir():
        return str(target), ""
    from rebuild.errors import UserError
    from rebuild.index import config as indexconf
    from rebuild.util import uv as uvcmd

    args = [
        "pip",
        "install",
        "--no-config",
        "--no-deps",
        "--quiet",
        "--target",
        str(target),
        "--python",
        str(env / "bin" / "python"),
        f"tf-keras>={major}.{minor},<{major}.{minor + 1}",
    ]
    if index is not None:
        args += indexconf.uv_args(index, offline=offline)
    try:
        result = uvcmd.run(args, check=False, log=log, what="uv pip install tf-keras", timeout=timeout)
    except UserError as exc:
        return "", f"tf-keras for TensorFlow {major}.{minor} could not be fetched: {exc.message}"
    if result.returncode != 0:
        said = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return "", f"no tf-keras for TensorFlow {major}.{minor} ({said[-1] if said else 'uv failed'})"
    return str(target), ""
