"""The model-parity gate: the user's saved models still load in the new env and answer as they did.

Models come from ``--model PATH`` and from the profile's ``[[smoke.models]]``. Once the new env is built (where a GPU
is used: while it is built), the current env loads each model and runs one batch (the given inputs, or seeded inputs
made from the model's signature), keeping inputs and outputs in the operation's folder (:meth:`Gate.start`, a
thread, beside the new env's checks). Once the reference is in,
the new env loads each model the same way, runs the same inputs and compares, in the process that also answers the
smoke check "tensorflow imports and computes" (:meth:`Gate.begin`; where a GPU is used, after the smoke checks); the
answers are read when the smoke checks pass (:meth:`Gate.check`). A model
that the new env no longer loads only because ``tf.keras`` became Keras 3 is tried again with Keras 2 kept (tf-keras
and ``TF_USE_LEGACY_KERAS=1``) and, for a SavedModel, through ``tf.saved_model.load`` and
``keras.layers.TFSMLayer``; each way is reported with whether it passed.

The models of one env run in one process of that env's interpreter running ``_models.py`` (stdlib, NumPy,
TensorFlow; :func:`rebuild.core.models_run.run_batch`): TensorFlow is imported once, each model loaded once and run
on one batch. Nothing is written inside an env or beside a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rebuild.core import smoke
from rebuild.core.models_run import Checked, Job, run_batch, run_script, tf_keras
from rebuild.env import profile as prof
from rebuild.errors import UserError

DEFAULT_RTOL = prof.MODEL_RTOL
DEFAULT_ATOL = prof.MODEL_ATOL
KERAS_FILES = (".keras", ".h5", ".hdf5")

# verdicts that let the swap go on ("refused": a model tfrebuild will not load, see :func:`untrusted`)
PASSING = ("match", "loads", "skipped", "missing")


@dataclass
class Output:
    name: str
    shape: list[int] = field(default_factory=list)
    dtype: str = ""
    ok: bool | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    problem: str = ""


@dataclass
class Attempt:
    """One way out tried after the new env refused a model: what was tried and whether it passed."""

    way: str  # "keras 2 kept (tf-keras, TF_USE_LEGACY_KERAS=1)", "tf.saved_model.load", "keras.layers.TFSMLayer"
    loader: str
    ok: bool
    error: str = ""
    max_abs: float | None = None
    max_rel: float | None = None


@dataclass
class ModelRow:
    """One model's result: the row ``upgrade`` prints, ``--json`` carries and the generation keeps."""

    path: str
    loader: str
    verdict: str  # match | differs | does not load | does not run | skipped | missing | loads
    load_seconds: float | None = None  # in the new env
    reference_load_seconds: float | None = None  # in the current env
    outputs_compared: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    error: str = ""  # the error's innermost line
    stage: str = ""  # where it stopped: import | load | inputs | run | compare
    reason: str = ""  # why skipped
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    keras: str = ""  # the Keras that loaded it in the new env ("keras 3.12.0", "tf_keras 2.21.0")
    outputs: list[Output] = field(default_factory=list)
    tried: list[Attempt] = field(default_factory=list)
    keras2_passed: bool | None = None  # with Keras 2 kept it loads and matches (None: not tried)

    @property
    def ok(self) -> bool:
        return self.verdict in PASSING


# --- which models, which loader ------------------------------------------------------------------------------


def auto_loader(path: str | os.PathLike[str]) -> str:
    """The loader the user's own code most likely uses for this file: Keras files and Keras-made SavedModels →
    ``keras.models.load_model``; a plain SavedModel → ``tf.saved_model.load``; ``.tflite`` → the interpreter;
    "" when the format is not one of these."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "keras" if (p / "keras_metadata.pb").is_file() else "saved_model"
        return ""
    name = p.name.lower()
    if name.endswith(".tflite"):
        return "tflite"
    if name.endswith(KERAS_FILES):
        return "keras"
    return ""


def from_paths(paths: Iterable[str | os.PathLike[str]] | None) -> list[prof.SmokeModel]:
    """``--model PATH`` (repeatable): each must exist and be a format tfrebuild knows (bad input otherwise)."""
    out = []
    for raw in paths or []:
        path = Path(os.path.abspath(os.path.expanduser(str(raw))))
        if not os.path.exists(path):
            raise UserError(
                f"--model {raw}: {path} does not exist.",
                "Give the path of a saved model (.keras, .h5, a SavedModel folder or .tflite). Nothing was changed.",
            )
        if not auto_loader(path):
            raise UserError(
                f"--model {raw}: {path} is not a model format tfrebuild can load (.keras, .h5, a SavedModel "
                "folder with saved_model.pb, or .tflite).",
                "Give a saved model, or list it in the profile's [[smoke.models]] with a loader. Nothing was changed.",
            )
        out.append(prof.SmokeModel(path=str(path)))
    return out


def untrusted(path: str | os.PathLike[str], env: str | os.PathLike[str]) -> str:
    """Why the model at ``path`` may not be loaded ("" when it may): loading a model can run code (a Keras-2 ``.h5``
    Lambda layer holds marshalled bytecode; a SavedModel's graph can read and write files), so the file or folder,
    everything in a folder, and each parent folder up to the first one root or this user owns must belong to this
    user or the env's owner (:func:`rebuild.store.trust.owners`), be writable by no one else, and be no link
    (nothing is followed). The first folder root or this user owns may be writable by others only when it is
    sticky (``/tmp``): then no one else can replace what lies in it."""
    from rebuild.store import trust

    trusted = trust.owners(Path(env))
    top = Path(os.path.abspath(path))

    def bad(entry: Path, kinds: str = "df") -> str:
        try:
            st = os.lstat(entry)
        except OSError as exc:
            return f"{entry} cannot be examined ({exc.strerror or exc})"
        why = trust.problem(st, trusted, kinds=kinds)
        if why and not why.startswith("belongs to"):
            why += f"; its owner is {trust._user(st.st_uid)}"
        return f"{entry} {why}" if why else ""

    why = bad(top)
    if why:
        return why
    if top.is_dir():
        errors: list[OSError] = []
        for folder, dirs, files in os.walk(top, followlinks=False, onerror=errors.append):
            for name in dirs + files:
                why = bad(Path(folder) / name)
                if why:
                    return why
        if errors:
            return f"{errors[0].filename} cannot be read ({errors[0].strerror or errors[0]})"
    for parent in top.parents:
        try:
            st = os.lstat(parent)
        except OSError as exc:
            return f"{parent} cannot be examined ({exc.strerror or exc})"
        if st.st_uid in (0, os.geteuid()) and stat.S_ISDIR(st.st_mode):
            if trust.writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
                return (
                    f"{parent} can be written by other users (mode {stat.filemode(st.st_mode)}); its owner is "
                    f"{trust._user(st.st_uid)}"
                )
            break
        why = bad(parent, kinds="d")
        if why:
            return why
    return ""


def refuse_untrusted(listed: list[prof.SmokeModel], env: str | os.PathLike[str]) -> None:
    """Refuse, before anything is built, models that :func:`untrusted` will not load (those that exist)."""
    from rebuild.store import trust

    found = [(m.path, why) for m in listed if os.path.lexists(m.path) for why in [untrusted(m.path, env)] if why]
    if not found:
        return
    who = " or ".join(trust._user(uid) for uid in sorted(trust.owners(Path(env))))
    raise UserError(
        f"tfrebuild will not load the model {found[0][0]}: {found[0][1]}. Loading a model can run code (a Keras "
        f"Lambda layer, a SavedModel's file operations), so tfrebuild loads only models that {who} own, that no one "
        "else can write, reached through no symbolic link. Nothing was built or changed.",
        "Copy the model into a folder of your own (cp -r, which copies the files, not the links), or fix its owner "
        "and mode, and give that path.",
        exit_code=2,
        details="\n".join(f"{path}: {why}" for path, why in found),
    )


def merged(listed: list[prof.SmokeModel], given: list[prof.SmokeModel]) -> list[prof.SmokeModel]:
    """The profile's models, then the ``--model`` ones not already listed (same real path)."""
    seen = {os.path.realpath(m.path) for m in listed}
    return list(listed) + [m for m in given if os.path.realpath(m.path) not in seen]


def with_models(profile: prof.Profile, models: list[prof.SmokeModel]) -> prof.Profile:
    """``profile`` with ``models`` as its ``[[smoke.models]]`` (a copy: the new generation carries them forward)."""
    if models == profile.smoke.models:
        return profile
    return dataclasses.replace(profile, smoke=dataclasses.replace(profile.smoke, models=list(models)))


def _slug(index: int, path: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name)[:40] or "model"
    return f"{index:02d}-{name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


# --- the gate ------------------------------------------------------------------------------------------------


@dataclass
class _Reference:
    folder: Path
    answer: dict[str, Any]


class Gate:
    """The model-parity gate of one operation (see the module's docstring)."""

    def __init__(
        self,
        models: list[prof.SmokeModel],
        *,
        current: Path | None,
        index: prof.Index | None = None,
        offline: bool = False,
        log: Path | None = None,
        timeout: float | None = None,
        reference: bool = True,
    ):
        self.models = list(models)
        self.current = current  # the env as it is (None: a new env, nothing to compare with)
        self.compare = current is not None and reference  # False: nothing runs in it (--no-reference-checks)
        self.index, self.offline, self.log = index, offline, log
        self.timeout = smoke.default_timeout() if timeout is None else timeout
        self.folder: Path | None = None
        self.references: dict[int, _Reference] = {}
        self.loaders = {i: (m.loader if m.loader != "auto" else auto_loader(m.path)) for i, m in enumerate(self.models)}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.reference_seconds = 0.0
        self.waited_seconds = 0.0  # how long the checks waited for the reference (the part on the critical path)
        self.stopped = False
        self._cancel = threading.Event()  # set by stop(): proc.run kills the running reference process group
        self._checked: Checked | None = None  # the new env's one process (TensorFlow's check, then the models)
        self._handed: threading.Thread | None = None  # hands the model jobs over once the reference is in
        self._todo: tuple[list[ModelRow], list[int], list[Job]] = ([], [], [])

    def stop(self) -> None:
        """The operation failed before the gate: run no further model, kill the reference run's process group
        if one runs, and wait for its thread (the operation's folder goes next)."""
        self.stopped = True
        self._cancel.set()
        for thread in (self._thread, self._handed, self._checked.thread if self._checked is not None else None):
            if thread is not None and thread.ident is not None:  # started (a Ctrl-C can come before .start())
                thread.join()
        self._thread = self._handed = None

    def __bool__(self) -> bool:
        return bool(self.models)

    # the current env's answers, beside the new env's checks (where a GPU is used, beside the build)

    def start(self, folder: Path) -> None:
        """Run the reference in the current env in a thread (it overlaps the new env's TensorFlow import)."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._reference_all, name="tfrebuild-model-reference", daemon=True)
        self._thread.start()

    def _reference_all(self) -> None:
        start = time.monotonic()
        try:
            runnable = [
                i
                for i, m in enumerate(self.models)
                if os.path.exists(m.path)
                and self.loaders[i]
                and self.current is not None
                and not untrusted(m.path, self.current)
            ]
            if self.current is not None and self.compare and runnable and not self.stopped:
                jobs = [
                    Job(self._folder(i), self.models[i], self.loaders[i], "reference", "reference") for i in runnable
                ]
                answers = run_batch(
                    self.current,
                    jobs,
                    timeout=self.timeout,
                    cancel=self._cancel,
                )
                for i, job, answer in zip(runnable, jobs, answers, strict=False):
                    self.references[i] = _Reference(job.folder, answer)
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self._error = exc
        self.reference_seconds = time.monotonic() - start

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            began = time.monotonic()
            thread.join()
            self.waited_seconds += time.monotonic() - began
        if self._error is not None:
            raise self._error

    # the new env: one process for TensorFlow's smoke check and the models (core/models_run.Checked)

    def begin(self, env: Path, tf_version: str, *, gpu: bool = False) -> None:
        """Right after the build: start the new env's process (TensorFlow's check at once, the models once the
        reference is in); :meth:`tf_probe` is then the smoke checks' TensorFlow check. Not where a GPU is used
        (``gpu``): that process would hold most of the GPU's memory while the other smoke checks run, so TensorFlow's
        check runs alone and the models after the smoke checks (:meth:`check`)."""
        if not tf_version or self.folder is None or self.stopped or gpu:
            return
        self._checked = Checked(
            env,
            self.folder,
            tf_version=tf_version,
            timeout=self.timeout,
            models=len(self.models),
            log=self.log,
            cancel=self._cancel,
        )
        self._handed = threading.Thread(target=self._hand_over, args=(env,), name="tfrebuild-models", daemon=True)
        self._handed.start()

    def tf_probe(self) -> smoke.TfCheck | None:
        return self._checked.tf_check if self._checked is not None else None

    def _hand_over(self, env: Path) -> None:
        assert self._checked is not None
        try:
            self._todo = self._jobs(env)
        except BaseException as exc:  # noqa: BLE001 - raised by check()
            self._error = self._error or exc
        try:
            self._checked.release(self._todo[2])
        except BaseException as exc:  # noqa: BLE001 - the process would wait for its jobs: ended now, check() raises
            self._error = self._error or exc
            self._checked.stop(exc)

    def _jobs(self, env: Path) -> tuple[list[ModelRow], list[int], list[Job]]:
        """After the reference: each model's row as far as known, which models run, their jobs."""
        self.wait()
        rows = [self._before(i, model, env) for i, model in enumerate(self.models)]
        todo = [i for i, row in enumerate(rows) if not row.verdict]
        mode = "compare" if self.compare else "load"
        return rows, todo, [Job(self._folder(i), self.models[i], self.loaders[i], mode, "staged") for i in todo]

    def check(self, env: Path, tf_version: str = "") -> list[ModelRow]:
        """Load, run and compare every model in ``env``; one row each (the retries for Keras 3 refusals included)."""
        if self._checked is not None and self._handed is not None:
            self._handed.join()
            self.wait()  # the reference's error, if any
            rows, todo, jobs = self._todo
            checked = self._checked
            answers = checked.answers(jobs)  # none: the process still ends, and TensorFlow computes
            checked.verify()
            if checked.answered is not None and checked.released is not None:  # models waited for the reference
                self.waited_seconds = max(0.0, checked.released - checked.answered)
        else:
            rows, todo, jobs = self._jobs(env)
            answers = run_batch(env, jobs, timeout=self.timeout, log=self.log) if jobs else []
        mode = "compare" if self.compare else "load"
        for i, answer in zip(todo, answers, strict=False):
            row = rows[i]
            _fill(row, answer)
            if (
                row.verdict == "does not load"
                and row.loader == "keras"
                and answer.get("keras", "").startswith("keras 3")
            ):
                self._ways_out(row, i, self.models[i], env, self._folder(i), tf_version, mode)
        return rows

    def _folder(self, i: int) -> Path:
        return (self.folder or Path(".")) / _slug(i, self.models[i].path)

    def _before(self, i: int, model: prof.SmokeModel, env: Path) -> ModelRow:
        """The row as far as it is known before the new env runs the model (a verdict when it will not run)."""
        loader = self.loaders[i]
        row = ModelRow(path=model.path, loader=loader or model.loader, verdict="", rtol=model.rtol, atol=model.atol)
        if not os.path.exists(model.path):
            row.verdict, row.reason = "missing", f"{model.path} does not exist (listed in [[smoke.models]])"
        elif why := untrusted(model.path, self.current or env):  # checked again just before loading it
            row.verdict, row.reason = "refused", f"not loaded (loading a model can run code): {why}"
        elif not loader:
            row.verdict, row.reason = "skipped", "not a format auto can load (set loader in [[smoke.models]])"
        elif self.compare:
            ref = self.references.get(i)
            if ref is None or not ref.answer.get("ok"):
                answer = ref.answer if ref is not None else {}
                row.verdict = "skipped"
                row.stage = answer.get("stage", "")
                row.error = answer.get("error", "")
                row.reason = (
                    f"the current env cannot {'load' if row.stage in ('load', 'import') else 'run'} it "
                    f"either: {row.error}"
                    if row.error
                    else "the current env gave no answer"
                )
            else:
                row.reference_load_seconds = ref.answer.get("load_seconds")
        return row

    def _ways_out(
        self, row: ModelRow, i: int, model: prof.SmokeModel, env: Path, folder: Path, tf_version: str, mode: str
    ) -> None:
        """Keras 3 refused a Keras model: try Keras 2 kept and, for a SavedModel, the TensorFlow loaders."""
        overlay, problem = self._tf_keras(env, tf_version)
        way = "keras 2 kept (tf-keras, TF_USE_LEGACY_KERAS=1)"
        if problem:
            row.tried.append(Attempt(way, "keras", False, problem))
        else:
            answer = run_script(
                env,
                folder,
                model,
                "keras",
                mode,
                "keras2",
                timeout=self.timeout,
                extra={"TF_USE_LEGACY_KERAS": "1"},
                extra_path=overlay,
                log=self.log,
            )
            row.tried.append(_attempt(way, "keras", answer))
        row.keras2_passed = row.tried[-1].ok
        if Path(model.path).is_dir():
            for loader, way in (("saved_model", "tf.saved_model.load"), ("tfsmlayer", "keras.layers.TFSMLayer")):
                answer = run_script(env, folder, model, loader, mode, loader, timeout=self.timeout, log=self.log)
                row.tried.append(_attempt(way, loader, answer))

    def _tf_keras(self, env: Path, tf_version: str) -> tuple[str, str]:
        return tf_keras(
            env, tf_version, (self.folder or Path(".")) / "tf-keras", self.index, self.offline, self.log, self.timeout
        )


def _fill(row: ModelRow, answer: dict[str, Any]) -> None:
    row.keras = answer.get("keras", "")
    row.load_seconds = answer.get("load_seconds")
    row.outputs = [
        Output(
            o.get("name", ""),
            list(o.get("shape") or []),
            o.get("dtype", ""),
            o.get("ok"),
            o.get("max_abs"),
            o.get("max_rel"),
            o.get("problem", ""),
        )
        for o in answer.get("outputs") or []
    ]
    row.outputs_compared = sum(1 for o in row.outputs if o.ok is not None)
    abs_ = [o.max_abs for o in row.outputs if o.max_abs is not None]
    rel = [o.max_rel for o in row.outputs if o.max_rel is not None]
    row.max_abs, row.max_rel = (max(abs_) if abs_ else None), (max(rel) if rel else None)
    row.stage = answer.get("stage", "")
    if answer.get("ok"):
        row.verdict = "match" if row.outputs_compared else "loads"
        return
    row.error = answer.get("error", "")
    row.verdict = {
        "import": "does not load",
        "load": "does not load",
        "process": "does not load",
        "compare": "differs",
    }.get(row.stage, "does not run")
    if row.stage == "done" or (row.stage == "compare" and row.outputs):
        row.verdict, row.stage = "differs", "compare"


def _attempt(way: str, loader: str, answer: dict[str, Any]) -> Attempt:
    probe = ModelRow(path="", loader=loader, verdict="")
    _fill(probe, answer)
    return Attempt(way, loader, probe.verdict in ("match", "loads"), probe.error, probe.max_abs, probe.max_rel)


# --- what the rows say ---------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def describe(row: ModelRow) -> str:
    """The failure text of one model: the loader, the error's innermost line, the largest difference per output,
    and the ways out that were tried."""
    lines = [f"{row.path} (loader {row.loader}{', ' + row.keras if row.keras else ''}): {row.verdict}"]
    if row.error and not (row.verdict == "differs" and row.outputs):  # the outputs' lines say it
        lines.append(f"  error ({row.stage}): {row.error}")
    for o in row.outputs:
        if o.ok is not None:
            lines.append(
                f"  output {o.name} {o.shape}: largest difference abs {_num(o.max_abs)}, rel {_num(o.max_rel)}"
                f" (rtol {row.rtol:g}, atol {row.atol:g}){'' if o.ok else ' — outside the tolerance'}"
                f"{': ' + o.problem if o.problem else ''}"
            )
    for a in row.tried:
        lines.append(
            f"  tried {a.way}: {'passed' if a.ok else 'failed'}"
            + (f" (largest difference abs {_num(a.max_abs)})" if a.ok and a.max_abs is not None else "")
            + (f": {a.error}" if a.error and not a.ok else "")
        )
    if row.keras2_passed:
        lines.append("  with Keras 2 kept this model loads and answers the same: upgrade with --keras legacy")
    elif any(a.ok for a in row.tried):
        ways = ", ".join(a.way for a in row.tried if a.ok)
        lines.append(
            f"  it loads and answers the same through {ways}: change your code to load it that way, or "
            "re-save it as .keras with the current env"
        )
    return "\n".join(lines)


def as_checks(rows: list[ModelRow]) -> list[smoke.Check]:
    """One smoke check per model, so a failed model blocks the swap like any failed check."""
    checks = []
    for row in rows:
        seconds = row.load_seconds or 0.0
        name = f"model {row.path} ({row.loader}): {row.verdict}"
        text = (
            describe(row)
            if not row.ok or row.reason or row.tried
            else (
                f"{row.outputs_compared} output(s) within rtol {row.rtol:g}, atol {row.atol:g}; largest difference abs "
                f"{_num(row.max_abs)}, rel {_num(row.max_rel)}"
            )
        )
        if row.reason:
            text += f"\n  {row.reason}"
        checks.append(smoke.Check(name, row.ok, seconds, text))
    return checks


def summary(rows: list[dict[str, Any]] | list[ModelRow]) -> str:
    """``"3 models: 2 match, 1 skipped"`` (for ``history``)."""
    verdicts = [r["verdict"] if isinstance(r, dict) else r.verdict for r in rows]
    if not verdicts:
        return ""
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v] = counts.get(v, 0) + 1
    return f"{len(verdicts)} model{'s' if len(verdicts) != 1 else ''}: " + ", ".join(
        f"{n} {v}" for v, n in counts.items()
    )


RECORD = "models.json"


def record(folder: Path, rows: list[ModelRow]) -> None:
    """The generation keeps its model rows (``generations/<N>/models.json``)."""
    from rebuild.util import fs

    fs.atomic_write(folder / RECORD, json.dumps({"models": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")


def recorded(folder: Path) -> list[dict[str, Any]]:
    """The model rows a generation keeps (empty when it was not model-checked)."""
    path = folder / RECORD
    try:
        if path.is_symlink() or not path.is_file():
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = data.get("models") if isinstance(data, dict) else None
    return (
        [r for r in rows if isinstance(r, dict) and isinstance(r.get("verdict"), str)] if isinstance(rows, list) else []
    )


def load_check(
    env: Path, models: list[prof.SmokeModel], folder: Path, *, timeout: float | None = None
) -> list[ModelRow]:
    """Every model loads and runs one batch in ``env`` (``rollback --check import``): nothing compared."""
    gate = Gate(models, current=None, timeout=timeout)
    gate.folder = folder
    return gate.check(env)
