"""Smoke checks: does the new env actually work? Each check has a timeout and its own output."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from packaging.utils import canonicalize_name

from rebuild.util import uv as uvcmd
from rebuild.util import proc
from rebuild.errors import UserError

_TF_CHECK = """
import json, sys
import tensorflow as tf
total = float(tf.reduce_sum(tf.constant([1.0, 2.0])))
print(json.dumps({"version": tf.__version__, "total": total}))
sys.stdout.flush()
import os; os._exit(0)  # answered: TensorFlow's teardown (seconds on a busy machine) is no one's wait
"""

_IMPORTS = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
print(json.dumps(failed))
"""


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    output: str = ""


@dataclass
class Report:
    env: str
    checks: list[Check] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # checks ended unfinished: another had already failed the try

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def failure(report: Report, where: str, log: Path, after: str) -> UserError:
    """The user error for failed checks: which ones, the lines of their output that show the cause (a traceback's
    innermost frames and its exception, about 40 lines in all), and the log, which gets their whole output."""
    from rebuild.util import failtext

    failed = report.failed
    details = failtext.check_details(failed)
    names = ", ".join(c.name for c in failed)
    if report.stopped:
        names += f" (stopped unfinished, since the try had already failed: {', '.join(report.stopped)})"
    logged = failtext.log_checks(log, failed, where)
    hint = (
        f"See the check output above; the whole output is in the log {log}."
        if logged
        else f"See the check output above and the log {log}."
        if log and str(log).strip()
        else "See the check output above."
    )
    return UserError(
        f"The new environment failed its checks {where}: {names}. {after}", hint, exit_code=1, details=details
    )


def default_timeout() -> float:
    return float(os.environ.get("TFREBUILD_SMOKE_TIMEOUT", "300"))


def clean_environ(env: Path) -> dict[str, str]:
    """The environment a check runs in: the new env first on PATH, no outside Python paths."""
    environ = proc.clean_environ()  # without proc.SCRUBBED, user site off
    return {**environ, "PATH": f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}", "VIRTUAL_ENV": str(env)}


def _run(
    name: str,
    cmd: list[str] | str,
    env: Path,
    timeout: float,
    shell: bool = False,
    cancel: threading.Event | None = None,
) -> tuple[Check, str]:
    """One check through the one runner: a timeout kills the check's whole process group (a command that forks);
    so does ``cancel`` when another thread sets it (the check's output then says "stopped")."""
    result = proc.run(
        [cmd] if isinstance(cmd, str) else cmd,
        env=clean_environ(env),
        timeout=timeout,
        cwd=env,
        shell=shell,
        cancel=cancel,
    )
    if result.cancelled:
        return Check(name, False, result.seconds, "stopped"), ""
    if result.timed_out:
        return Check(name, False, result.seconds, f"timed out after {timeout:.0f}s\n{result.stdout}"), ""
    if result.error:
        return Check(name, False, result.seconds, result.error), ""
    return Check(name, result.returncode == 0, result.seconds, result.output), result.stdout


def tf_computes(name: str, env: Path, timeout: float, cancel: threading.Event | None = None) -> tuple[Check, str]:
    """TensorFlow's check alone in a new process of ``env``: the check and its JSON line."""
    return _run(name, [str(env / "bin" / "python"), "-I", "-c", _TF_CHECK], env, timeout, cancel=cancel)


# Which Keras ``tf.keras`` is, found the way TensorFlow resolves it: ``tf.keras`` is a lazy module (with
# TF_USE_LEGACY_KERAS=1 on TF >= 2.16 it is tf_keras's API module, which has no ``__version__``), so ask
# where its classes are defined (``tf_keras.src...`` or ``keras.src...``) and that package's version.
_KERAS_CHECK = """
import importlib, json, os
import tensorflow as tf
module = tf.keras.layers.Dense.__module__
package = module.split(".")[0]
print(json.dumps({"module": module, "package": package, "sequential": tf.keras.Sequential.__module__,
                  "version": getattr(importlib.import_module(package), "__version__", "?"),
                  "TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS")}))
"""

# Keras 2 code as users write it: Sequential, compile, fit, save and load an .h5 file, predict.
_KERAS2_SCRIPT = """
import json, os, sys, tempfile
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                             tf.keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
x = tf.constant([[0.1 * (i + j) for j in range(3)] for i in range(16)])
y = tf.constant([[0.3 * i + 0.3] for i in range(16)])
model.fit(x, y, epochs=2, batch_size=8, verbose=0)
path = os.path.join(tempfile.mkdtemp(prefix="tfrebuild-keras2-"), "model.h5")
model.save(path)
loaded = tf.keras.models.load_model(path)
rows = len(loaded.predict(x, verbose=0))
os.remove(path)
os.rmdir(os.path.dirname(path))
print(json.dumps({"model": type(loaded).__module__, "rows": rows}))
"""


_GPU_CHECK = """
import json
import tensorflow as tf
print(json.dumps({"gpus": [str(d) for d in tf.config.list_physical_devices("GPU")]}))
"""


def gpu_causes(env: Path) -> str:
    """Likely reasons TensorFlow sees no GPU, for the failure message."""
    causes = []
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        causes.append("CUDA_VISIBLE_DEVICES hides every GPU")
    if os.environ.get("LD_LIBRARY_PATH"):
        causes.append(
            f"LD_LIBRARY_PATH={os.environ['LD_LIBRARY_PATH']} may put system CUDA/cuDNN libraries before "
            "the nvidia-* wheels (run `tfrebuild doctor`)"
        )
    if not list(env.glob("lib/python*/site-packages/nvidia")):
        causes.append("no nvidia-* CUDA wheels in the env (install tensorflow[and-cuda])")
    causes.append("the NVIDIA driver is missing or too old (check `nvidia-smi`)")
    return "likely causes: " + "; ".join(causes)


TfCheck = Callable[[str, float], tuple[Check, str]]  # (name, timeout) -> TensorFlow's check and its JSON line


@dataclass(frozen=True)
class Checks:
    """The full checks a new env must pass (:func:`run_checks`'s arguments): the transaction's ``Spec.checks`` and a
    driven project's ``checks``/``staging_checks``."""

    tf_version: str
    imports: list[str]
    commands: Sequence[str] = ()
    keras_major: int | None = None
    gpu_required: bool = False
    already_failing: Callable[[], dict[str, str]] | None = (
        None  # what already fails in the env it replaces (regressions only)
    )
    reasons: dict[str, str] | None = None  # import name -> why the new env may lack it (core/carry.py)
    beside: bool = False  # the checks that need no TensorFlow answer run beside its check (never where a GPU is used)
    stop_early: bool = False  # with ``beside``: a failed command stops TensorFlow's check (a target search's try)

    def run(self, env: Path, tf_check: TfCheck | None = None) -> Report:
        return run_checks(
            env,
            tf_version=self.tf_version,
            imports=self.imports,
            commands=self.commands,
            keras_major=self.keras_major,
            gpu_required=self.gpu_required,
            already_failing=self.already_failing,
            reasons=self.reasons,
            tf_check=tf_check,
            beside=self.beside,
            stop_early=self.stop_early,
        )


class _Beside:
    """The checks that need no answer from TensorFlow's (requested imports, ``uv pip check``, the profile's
    commands) in a thread beside it: a try's checks take the longer of the two, not their sum. ``failed`` is set by
    the first of the profile's commands that fails (the user's own proof: whatever TensorFlow's check would say, the
    try cannot pass, and a fix for what it would say cannot make the command pass); :meth:`close` stops the one
    running and starts no other (an interrupt, an error)."""

    def __init__(self, work: Callable[[Report, threading.Event, threading.Event], object], env: Path):
        self.report = Report(str(env))
        self.failed = threading.Event()
        self.cancel = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(work,), name="tfrebuild-checks", daemon=True)
        self._thread.start()

    def _work(self, work: Callable[[Report, threading.Event, threading.Event], object]) -> None:
        try:
            work(self.report, self.failed, self.cancel)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by checks()
            self._error = exc
            if isinstance(exc, KeyboardInterrupt):  # a Ctrl-C found here (util/signals.checkpoint) is the command's
                import _thread

                _thread.interrupt_main()

    def checks(self) -> list[Check]:
        """Their results, in their order, once they are done (their error raised here)."""
        while self._thread.is_alive():
            self._thread.join(0.05)  # short waits: a Ctrl-C in the main thread is not held up
        if self._error is not None:
            raise self._error
        return self.report.checks

    def close(self) -> None:
        """Stop: the check running is killed within 0.1 s and no other starts; a wait on the current env's reference
        checks (which need no cleanup) is not waited for beyond a few seconds."""
        self.cancel.set()
        self._thread.join(5)


def run_checks(
    env: Path,
    *,
    tf_version: str,
    imports: list[str],
    commands: Sequence[str] = (),
    timeout: float | None = None,
    quick: bool = False,
    keras_major: int | None = None,
    gpu_required: bool = False,
    already_failing: Callable[[], dict[str, str]] | None = None,
    reasons: dict[str, str] | None = None,
    tf_check: TfCheck | None = None,
    beside: bool = False,
    stop_early: bool = False,
) -> Report:
    """Run the checks in ``env``; ``quick`` runs only interpreter + TensorFlow (after a swap). ``tf_check``: TensorFlow's
    check done elsewhere (the model gate's process in the new env: core/models_run.Checked) instead of its own.
    ``beside``: the imports, ``uv pip check`` and commands run in a thread beside TensorFlow's check (:class:`_Beside`);
    with ``stop_early`` one of the profile's commands failing stops TensorFlow's own check (not ``tf_check``'s) and the
    checks that need it: the try has failed, and a target search's next try need not wait for it (``Report.stopped``
    names them). A failed import or ``uv pip check`` stops nothing: TensorFlow's own failure may be what the search
    can fix.
    The report lists the checks in the same order either way."""
    timeout = default_timeout() if timeout is None else timeout
    python = str(env / "bin" / "python")
    report = Report(str(env))
    check, _ = _run("interpreter starts", [python, "-I", "-c", "import sys; print(sys.version)"], env, timeout)
    report.checks.append(check)
    if not check.ok:
        return report
    if not tf_version:  # an env without TensorFlow (apply of any profile): the generic checks only
        if quick:
            return report
        return _generic_checks(report, env, python, imports, commands, timeout, reasons=reasons)
    spec = Checks(
        tf_version, imports, commands, keras_major, gpu_required, already_failing, reasons, beside, stop_early
    )
    if quick or not beside:
        return _tf_then_rest(report, env, spec, timeout, quick, tf_check)
    others = [m for m in imports if m != "tensorflow"]
    side = _Beside(
        lambda side_report, failed, cancel: _generic_checks(
            side_report, env, python, others, commands, timeout, already_failing, reasons, failed, cancel
        ),
        env,
    )
    try:
        return _tf_then_rest(report, env, spec, timeout, quick, tf_check, side)
    finally:
        side.close()


def _tf_then_rest(
    report: Report,
    env: Path,
    spec: Checks,
    timeout: float,
    quick: bool,
    tf_check: TfCheck | None,
    side: _Beside | None = None,
) -> Report:
    """TensorFlow's check, then the Keras/GPU checks, the others (``side``'s, when they ran beside), the op libraries."""
    python, tf_version, keras_major = str(env / "bin" / "python"), spec.tf_version, spec.keras_major
    name = f"tensorflow {tf_version} imports and computes"
    stop = side.failed if side is not None and spec.stop_early and not tf_check else None
    check, stdout = tf_check(name, timeout) if tf_check else tf_computes(name, env, timeout, cancel=stop)
    if stop is not None and stop.is_set() and check.output == "stopped":
        from rebuild.core import oplibs

        keras = [f"tf.keras is Keras {keras_major}"] if keras_major is not None else []
        report.stopped += [name, *keras, *(["op libraries load"] if oplibs.find(env) else [])]
        report.checks += side.checks() if side is not None else []
        return report
    if check.ok:
        try:
            got = json.loads(stdout.strip().splitlines()[-1])
            computes = tf_check is None or "total" in got  # else it computes after the models (models_run.Checked)
            if got.get("version") != tf_version or (computes and got.get("total") != 3.0):
                check.ok = False
                check.output = f"expected tensorflow {tf_version} computing 3.0, got {got}"
        except (ValueError, IndexError):
            check.ok = False
    report.checks.append(check)
    if quick:
        return report
    if spec.gpu_required:
        check, stdout = _run("TensorFlow sees a GPU", [python, "-I", "-c", _GPU_CHECK], env, timeout)
        if check.ok:
            try:
                gpus = json.loads(stdout.strip().splitlines()[-1])["gpus"]
            except (ValueError, IndexError, KeyError):
                gpus = []
            if not gpus:
                check.ok = False
                check.output = "tf.config.list_physical_devices('GPU') is empty; " + gpu_causes(env)
        report.checks.append(check)
    if keras_major is not None:
        check, stdout = _run(f"tf.keras is Keras {keras_major}", [python, "-I", "-c", _KERAS_CHECK], env, timeout)
        if check.ok:
            try:
                got = json.loads(stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                got = {}
            if not str(got.get("version", "?")).startswith(f"{keras_major}."):
                check.ok = False
                check.output = (
                    f"tf.keras is {got.get('package', '?')} {got.get('version', '?')} (tf.keras.layers.Dense "
                    f"comes from {got.get('module', '?')}; TF_USE_LEGACY_KERAS="
                    f"{got.get('TF_USE_LEGACY_KERAS')}), expected Keras {keras_major}\n{check.output}"
                )
        report.checks.append(check)
        if keras_major == 2 and check.ok:
            check, _ = _run(
                "Keras 2 script (Sequential, compile, fit, save/load .h5)",
                [python, "-I", "-c", _KERAS2_SCRIPT],
                env,
                timeout,
            )
            report.checks.append(check)
    if side is not None:
        report.checks += side.checks()
    else:
        others = [m for m in spec.imports if m != "tensorflow"]
        _generic_checks(report, env, python, others, spec.commands, timeout, spec.already_failing, spec.reasons)
    from rebuild.core import oplibs  # companions' compiled ops: an import does not load them

    ops = oplibs.check(env, _run, timeout, spec.already_failing)
    report.checks += [ops] if ops is not None else []
    return report


def _generic_checks(
    report: Report,
    env: Path,
    python: str,
    others: list[str],
    commands: Sequence[str],
    timeout: float,
    already_failing: Callable[[], dict[str, str]] | None = None,
    reasons: dict[str, str] | None = None,
    one_failed: threading.Event | None = None,
    cancel: threading.Event | None = None,
) -> Report:
    """Requested imports, consistency, the profile's commands (``one_failed``: set when a command fails; ``cancel``:
    stops the one running and starts no other)."""

    def add(check: Check, decisive: bool = False) -> None:
        report.checks.append(check)
        if not check.ok and decisive and one_failed is not None:
            one_failed.set()

    def stopped() -> bool:  # an interrupt or an error in the caller's thread: start nothing more
        return cancel is not None and cancel.is_set()

    if others and not stopped():
        check, stdout = _run(
            f"imports: {', '.join(others)}", [python, "-I", "-c", _IMPORTS, *others], env, timeout, cancel=cancel
        )
        if check.ok:
            try:
                failed = json.loads(stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                failed = {"?": stdout}
            if failed:
                check.ok = False
                check.output = "\n".join(f"import {k} failed:\n{v}" for k, v in failed.items())
                if len(failed) < len(others):  # the headline names what failed, not every import tried
                    check.name = f"imports: {', '.join(failed)} ({len(failed)} of {len(others)} failed)"
            if failed and already_failing is not None:  # judged against the env as it is: regressions only
                from rebuild.core import baseline

                baseline.judge(check, failed, already_failing())
            if failed and not check.ok and reasons:  # names the new env was to keep (core/carry.py): why not
                from rebuild.core import carry

                before = already_failing() if already_failing is not None else {}
                carry.explain(check, [n for n in failed if n not in before], reasons)
        add(check)
    if stopped():
        return report
    start = time.monotonic()
    result = uvcmd.run(
        ["pip", "check", "--no-config", "--python", python], check=False, timeout=timeout, what="uv pip check"
    )
    add(
        Check(
            "consistent (uv pip check)",
            result.returncode == 0,
            time.monotonic() - start,
            (result.stdout + result.stderr).strip(),
        )
    )
    for command in commands:
        if stopped():
            break
        check, _ = _run(f"command: {command}", command, env, timeout, shell=True, cancel=cancel)
        add(check, decisive=True)
    return report


# --- the cheap check at the real path ---------------------------------------------------------------------
#
# After the swap (upgrade, apply) and after a rollback, the tree at the path is one whose TensorFlow import was
# already proven: in staging a moment ago, or at this very path when that generation was current. What can still
# differ is the path itself (the interpreter must start there and see the env as its prefix) and the tree (it must
# be the one that was checked). So by default the check at the path is: the tree is the proven inode, the
# interpreter starts there, its prefix is the path, and it reports exactly the expected distribution versions
# (read from each dist-info, no package imported) with TensorFlow's package found inside the env.
# ``deep=True`` (``--check import``) runs the full TensorFlow import as well.

_AT_PATH = """
import json, os, platform, sys
from importlib import util
want = set(json.loads(sys.argv[2]))
seen = {}
for folder in sys.path:
    try:
        names = os.listdir(folder or ".")
    except OSError:
        continue
    for entry in names:
        if not entry.endswith(".dist-info"):
            continue
        name, _, version = entry[:-10].partition("-")
        key = name.lower().replace("_", "-").replace(".", "-")
        if key in seen or key not in want:
            continue
        try:  # the version its METADATA states (the folder name may be spelled differently)
            with open(os.path.join(folder, entry, "METADATA"), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        version = line.split(":", 1)[1].strip()
                        break
                    if not line.strip():
                        break
        except OSError:
            version = ""
        seen[key] = version
spec = util.find_spec(sys.argv[1]) if sys.argv[1] else None
print(json.dumps({"prefix": sys.prefix, "versions": seen, "python": platform.python_version(),
                  "origin": getattr(spec, "origin", None) or ""}))
"""


def at_path_check(
    env: Path,
    *,
    versions: dict[str, str],
    inode: tuple[int, int] | None = None,
    package: str = "tensorflow",
    python: str = "",
    timeout: float | None = None,
) -> Check:
    """The cheap check at ``env`` (see above); fails when the tree, the interpreter or any version is not the
    expected one. ``versions``: canonical name -> version the env must report (TensorFlow's included)."""
    timeout = default_timeout() if timeout is None else timeout
    start = time.monotonic()
    name = "interpreter starts and reports the checked versions"
    if inode is not None:
        try:
            st = os.lstat(env)
        except OSError as exc:
            return Check(name, False, time.monotonic() - start, f"{env}: {exc}")
        if (st.st_dev, st.st_ino) != tuple(inode):
            return Check(
                name,
                False,
                time.monotonic() - start,
                f"{env} is not the tree that was checked (device/inode {st.st_dev}/{st.st_ino}, "
                f"expected {inode[0]}/{inode[1]})",
            )
    want = json.dumps(sorted({canonicalize_name(d) for d in versions}))
    check, stdout = _run(
        name, [str(env / "bin" / "python"), "-I", "-c", _AT_PATH, package if versions else "", want], env, timeout
    )
    check.seconds = time.monotonic() - start
    if not check.ok:
        return check
    try:
        got = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check.ok, check.output = False, f"the interpreter at {env} did not report its distributions:\n{stdout}"
        return check
    problems = []
    if os.path.realpath(got.get("prefix", "")) != os.path.realpath(env):
        problems.append(f"sys.prefix is {got.get('prefix')!r}, not {env}")
    if python and got.get("python") != python:
        problems.append(f"Python {got.get('python')}, expected {python}")
    reported = {canonicalize_name(k): v for k, v in (got.get("versions") or {}).items()}
    for dist, version in sorted(versions.items()):
        have = reported.get(canonicalize_name(dist))
        if not _same_version(have, version):
            problems.append(f"{dist}: expected {version}, found {have or 'nothing'}")
    origin = got.get("origin") or ""
    if versions and package and not os.path.realpath(origin).startswith(os.path.realpath(env) + os.sep):
        problems.append(f"import {package} would load {origin or 'nothing'}, not a module inside {env}")
    if problems:
        check.ok = False
        check.output = "\n".join(problems[:20]) + (f"\n… {len(problems) - 20} more" if len(problems) > 20 else "")
    else:
        check.output = f"{len(versions)} distribution version(s) as checked; prefix {env}"
    return check


def _same_version(have: str | None, want: str) -> bool:
    if have is None or have == want:
        return have is not None
    from packaging.version import InvalidVersion, Version

    try:
        return Version(have) == Version(want)
    except InvalidVersion:
        return False


def run_at_path(
    env: Path,
    *,
    deep: bool,
    tf_version: str,
    versions: dict[str, str],
    inode: tuple[int, int] | None = None,
    package: str = "tensorflow",
    python: str = "",
) -> Report:
    """The check at the real path: the cheap one, and with ``deep`` the TensorFlow import too."""
    report = Report(str(env))
    report.checks.append(
        at_path_check(env, versions=versions, inode=inode, python=python, package=package if tf_version else "")
    )
    if deep and report.ok:
        full = run_checks(env, tf_version=tf_version, imports=[], commands=[], quick=True)
        report.checks += [c for c in full.checks if c.name != "interpreter starts"]
    return report
