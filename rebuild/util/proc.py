"""The one subprocess runner.

Every child process tfrebuild starts (uv, the probe, the smoke checks, nvidia-smi,
interpreters asked for their version) goes through :func:`run`, as pipx's
``run_subprocess`` does:

* the environment is scrubbed of what would make a child Python see other code
  (``PYTHONPATH``, ``PYTHONHOME``, ``PYTHONSTARTUP``, ``PYTHONUSERBASE``; user site
  off), unless the caller passes a complete environment of its own;
* standard input is closed, output captured as text, and a timeout always applies;
* the command line and its output can be appended to a log, credentials redacted;
* a timeout or a program that cannot be started comes back as a result
  (``timed_out`` / ``error``), never as an exception, so callers word the failure;
* children never outlive tfrebuild: each runs in its own process group (``process_group=0``), killed as a
  whole on a timeout or an interrupt, and (Linux) gets SIGKILL when tfrebuild itself is killed, through
  util-linux's ``setpriv --pdeathsig KILL`` rather than a ``preexec_fn`` (unsafe with threads); where
  ``setpriv`` is missing only the group kill applies, and a tfrebuild SIGKILLed in the microseconds between
  the fork and ``setpriv``'s ``prctl`` leaves that one child running (:func:`argv`). Only ``/usr/bin/setpriv``
  or ``/bin/setpriv`` owned by root and writable by no one else is used, never one found on ``$PATH``
  (:data:`SETPRIV`): tfrebuild often runs as root, and a folder on root's ``PATH`` that others can write must
  not give them a program every child (uv with its credentials included) runs behind.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from rebuild.util import signals

#: Variables that make a child Python import code from outside its own environment.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")
DEFAULT_TIMEOUT = 600.0
#: The only ``setpriv`` programs used (each must be root's and writable by no one else: :func:`_root_only`).
SETPRIV = ("/usr/bin/setpriv", "/bin/setpriv")
#: What ``setpriv`` prints (then exit 126 or 127) when it cannot ``exec`` the program it wraps.
_SETPRIV_EXEC_FAILED = re.compile(r"setpriv: failed to execute (?P<program>.*): (?P<why>[^:\n]+)\n?")

#: ``scheme://`` then the userinfo: everything up to the last ``@`` before the host (a password may hold ``@``).
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/\s?#'\"]*)@")


def redact_line(text: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:****@host`` (a bare token becomes ``****``).

    The one redaction: :func:`rebuild.index.config.redact` (one URL) and
    :func:`rebuild.index.http.redact_text` call it.
    """

    def mask(m: re.Match[str]) -> str:
        if ":" in m.group(2):
            return f"{m.group(1)}{m.group(2).split(':', 1)[0]}:****@"
        return f"{m.group(1)}****@"

    return _USERINFO.sub(mask, text)


def clean_environ(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) without :data:`SCRUBBED`, user site off, plus ``extra``."""
    environ = {k: v for k, v in (os.environ if base is None else base).items() if k not in SCRUBBED}
    environ["PYTHONNOUSERSITE"] = "1"
    environ.update(extra)
    return environ


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    error: str = ""  # why the program could not be started (OSError), else ""
    cancelled: bool = False  # the caller's ``cancel`` was set: the process group was killed

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.error

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def log_result(log: Path, result: Result, note: str = "") -> None:
    """Append one command and what it printed to ``log``, credentials redacted."""
    try:
        _append_log(log, result, note)
    except OSError as exc:  # a full or read-only disk: the error names the log (the CLI words it)
        if exc.filename is None:
            exc.filename = str(log)
        raise


def _append_log(log: Path, result: Result, note: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(redact_line(f"$ {' '.join(result.args)}\n"))
        fh.write(redact_line(result.stdout))
        fh.write(redact_line(result.stderr))
        if result.timed_out:
            fh.write(f"[timed out after {result.seconds:.0f}s]\n\n")
        elif result.error:
            fh.write(f"[could not start: {result.error}]\n\n")
        else:
            fh.write(f"[exit {result.returncode} after {result.seconds:.2f}s]\n\n")
        if note:
            fh.write(redact_line(note) + "\n\n")


def _root_only(path: str) -> bool:
    """Whether ``path`` is a regular file (not a link) that root owns and only root can write, in a folder that
    root owns and only root can write."""
    try:
        st = os.lstat(path)
        folder = os.stat(os.path.dirname(path))
    except OSError:
        return False
    others = stat.S_IWGRP | stat.S_IWOTH
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == 0
        and not st.st_mode & others
        and bool(st.st_mode & stat.S_IXUSR)
        and folder.st_uid == 0
        and not folder.st_mode & others
    )


def _setpriv() -> str | None:
    """The trusted ``setpriv`` (:data:`SETPRIV`), ``None`` where there is none."""
    return next((path for path in SETPRIV if _root_only(path)), None)


@functools.cache
def _pdeathsig_wrapper() -> tuple[str, ...]:
    """The argv prefix that gives a child SIGKILL when tfrebuild dies: util-linux's ``setpriv --pdeathsig KILL``
    (Linux; root's own, :func:`_setpriv`), found once and tried once; ``()`` where there is none (then the process
    group alone applies)."""
    if not sys.platform.startswith("linux"):
        return ()
    setpriv = _setpriv()
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        ok = (
            subprocess.run(
                [*prefix, "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                process_group=0,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else ()  # util-linux < 2.33 has no --pdeathsig


def _startable(program: str, env: Mapping[str, str], cwd: Path | str | None) -> bool:
    """Whether ``Popen`` would find and start ``program``: so the wrapper does not hide a missing one behind its
    exit code, nor run a file without ``#!`` through ``/bin/sh`` (``setpriv``'s ``execvp`` does; ``Popen`` says
    "Exec format error")."""
    if os.sep in program:
        joined = os.path.join(os.fspath(cwd) if cwd is not None else "", program)
        path = joined if os.path.isfile(joined) and os.access(joined, os.X_OK) else None
    else:
        path = shutil.which(program, path=os.pathsep.join(os.get_exec_path(env)))
    if path is None:
        return False
    try:
        with open(path, "rb") as fh:
            magic: bytes = fh.read(4)
    except OSError:
        return True  # execute-only: setpriv starts it, or reports the failure (:func:`_exec_failure`)
    return magic[:2] == b"#!" or magic == b"\x7fELF"


def _exec_failure(result: Result, wrapped: bool) -> Result:
    """A program that ``setpriv`` could not ``exec`` (a script whose ``#!`` interpreter is gone, a file that went
    away since :func:`_startable`) as the result ``Popen``'s ``OSError`` gives without the wrapper: ``error`` set."""
    if not wrapped or result.returncode not in (126, 127) or result.stdout:
        return result
    failed = _SETPRIV_EXEC_FAILED.fullmatch(result.stderr)
    if failed is None:
        return result
    return Result(result.args, -1, "", "", result.seconds, error=failed.group("why").strip())


def argv(cmd: Sequence[str], *, shell: bool = False) -> list[str]:
    """What ``Popen`` runs for ``cmd`` (:func:`run` starts it in its own process group, ``process_group=0``: a
    Ctrl-C at the terminal reaches tfrebuild only, which then stops the whole group).

    No ``preexec_fn``: Python documents it as unsafe while threads run (the plan starts interpreters from
    threads). The parent-death signal comes from a wrapper instead: on Linux the child runs behind
    ``setpriv --pdeathsig KILL`` (``PR_SET_PDEATHSIG``: SIGKILL when the thread that started it dies, and
    :func:`run` waits in that thread), so no child goes on writing into a staging folder after tfrebuild is
    killed. ``shell`` runs ``cmd[0]`` through ``/bin/sh -c``."""
    command = ["/bin/sh", "-c", cmd[0]] if shell else list(cmd)
    return [*_pdeathsig_wrapper(), *command]


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group ``proc`` leads (it is still running or not yet reaped) and reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.returncode is None:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process SIGKILL does not end
            pass


def _communicate(
    proc: subprocess.Popen[str], cancel: threading.Event, timeout: float | None, start: float
) -> tuple[str, str] | None:
    """``proc.communicate()`` in steps of 0.1 s (retrying loses no output) until it ends, ``None`` as soon as
    ``cancel`` is set; ``TimeoutExpired`` past ``timeout``."""
    while True:
        try:
            return proc.communicate(timeout=0.1)
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                return None
            if timeout is not None and time.monotonic() - start > timeout:
                raise


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    cwd: Path | str | None = None,
    log: Path | None = None,
    shell: bool = False,
    cancel: threading.Event | None = None,
) -> Result:
    """Run ``args`` to completion and return what happened.

    ``env`` is used as given when passed (callers build it with :func:`clean_environ`);
    otherwise this process's environment, scrubbed. ``shell=True`` runs ``args[0]``
    through ``/bin/sh`` (the profile's smoke commands). ``cancel``: when another thread sets it, the process
    group is killed (within 0.1 s) and the result has ``cancelled``.
    """
    cmd = [os.fspath(a) for a in args]
    run_env = dict(env) if env is not None else clean_environ()
    start = time.monotonic()
    try:
        wrapped = argv(cmd, shell=shell) if shell or _startable(cmd[0], run_env, cwd) else cmd  # else: Popen's OSError
        proc = subprocess.Popen(
            wrapped,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=run_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
    except OSError as exc:
        result = Result(cmd, -1, "", "", time.monotonic() - start, error=exc.strerror or str(exc))
    else:
        try:
            signals.checkpoint()  # a signal swallowed earlier (an at-fork hook of a child started elsewhere)
            done = proc.communicate(timeout=timeout) if cancel is None else _communicate(proc, cancel, timeout, start)
            if done is None:
                kill_group(proc)
                out, err = proc.communicate()
                result = Result(cmd, -1, _text(out), _text(err), time.monotonic() - start, cancelled=True)
            else:
                out, err = done
                result = _exec_failure(
                    Result(cmd, proc.returncode, out, err, time.monotonic() - start),
                    wrapped is not cmd and bool(_pdeathsig_wrapper()),
                )
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            result = Result(cmd, -1, _text(out), _text(err), time.monotonic() - start, timed_out=True)
        except BaseException:  # Ctrl-C, SIGTERM: the child and everything it started go first
            kill_group(proc)
            raise
    if log is not None:
        log_result(log, result)
    return result


def each_argument_script(setup: str, action: str, error: str) -> str:
    """Python source for a target env's interpreter (any Python 3): after ``setup``, ``action`` (a statement on
    ``arg``) for each command-line argument; prints one JSON object, each argument that raised -> ``"<its exception
    class>: <error>"`` (``error``: an expression of ``exc``). Run it as ``python -I -c SCRIPT ARG...``."""
    return (
        f"import json, sys\n{setup}\nfailed = {{}}\nfor arg in sys.argv[1:]:\n    try:\n        {action}\n"
        f'    except BaseException as exc:\n        failed[arg] = "%s: %s" % (type(exc).__name__, {error})\n'
        "print(json.dumps(failed))\n"
    )
