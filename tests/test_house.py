"""The house: one runner for every child (smoke checks included), one lock reader, one dist-info name parser,
and the layer contract of docs/design.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from rebuild.core import lockfile, smoke
from rebuild.util import distinfo, proc


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_smoke_command_timeout_kills_what_it_forked(tmp_path):
    """``[smoke].commands = ["sleep 37 & sleep 38"]``: the timeout ends both sleeps, not only their shell."""
    bg, fg = tmp_path / "bg", tmp_path / "fg"
    command = f"sleep 37 & echo $! > {bg}; sleep 38 & echo $! > {fg}; wait"
    start = time.monotonic()
    check, _ = smoke._run(f"command: {command}", command, tmp_path, 2, shell=True)
    assert time.monotonic() - start < 30
    assert not check.ok and check.output.startswith("timed out after 2s"), check
    pids = [int(bg.read_text()), int(fg.read_text())]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids), f"still running: {[p for p in pids if alive(p)]}"


def test_smoke_checks_run_in_the_scrubbed_environment(tmp_path, monkeypatch):
    """A check sees the env first on PATH, as VIRTUAL_ENV, without proc.SCRUBBED, user site off, output kept."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("VIRTUAL_ENV", "/another/env")
    code = (
        "import os, sys; print(os.environ.get('PYTHONPATH'), os.environ['VIRTUAL_ENV'], "
        "os.environ['PATH'].split(os.pathsep)[0], os.environ['PYTHONNOUSERSITE']); sys.exit(3)"
    )
    check, stdout = smoke._run("probe", [sys.executable, "-c", code], tmp_path, 60)
    assert not check.ok and stdout.split() == ["None", str(tmp_path), str(tmp_path / "bin"), "1"], check
    missing, _ = smoke._run("missing", [str(tmp_path / "no-such-program")], tmp_path, 60)
    assert not missing.ok and "No such file" in missing.output


def test_runner_takes_no_preexec_fn(monkeypatch):
    """No ``preexec_fn`` (unsafe with threads): its own process group, and the parent-death signal through the
    ``setpriv`` wrapper (tests/test_faults_random.py::test_proc_run_children_die_with_their_parent)."""
    seen: list[tuple] = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: seen.append((a, kw)) or popen(*a, **kw))
    result = proc.run(["true"], timeout=60)
    monkeypatch.undo()
    (args,), kwargs = seen[0]
    assert result.ok and result.args == ["true"]
    assert "preexec_fn" not in kwargs and kwargs["process_group"] == 0
    assert args[-1] == "true" and (args[0].endswith("setpriv") or not sys.platform.startswith("linux")), args


@pytest.fixture
def fresh_wrapper():
    """:func:`proc._pdeathsig_wrapper` looked up again inside the test, and again after it."""
    proc._pdeathsig_wrapper.cache_clear()
    yield
    proc._pdeathsig_wrapper.cache_clear()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="setpriv is util-linux's")


@linux_only
def test_setpriv_is_roots_own_never_one_on_path(tmp_path, monkeypatch, fresh_wrapper):
    """A ``setpriv`` first on ``PATH`` (a folder others could write) is never run; only root's own one in
    /usr/bin or /bin, a regular file no one else can write, else no wrapper (the group kill alone)."""
    if proc._setpriv() is None:
        pytest.skip("no root-owned /usr/bin/setpriv or /bin/setpriv here")
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "ran"
    (planted / "setpriv").write_text(f'#!/bin/sh\ntouch {marker}\nexec /usr/bin/setpriv "$@"\n')
    (planted / "setpriv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}{os.pathsep}{os.environ['PATH']}")
    assert proc.run(["true"], timeout=60).ok
    assert proc._pdeathsig_wrapper()[0] in proc.SETPRIV and not marker.exists()

    real = proc._setpriv()
    assert real is not None
    folder = tmp_path / "bin"
    folder.mkdir(mode=0o755)
    copy = folder / "setpriv"
    shutil.copyfile(real, copy)
    copy.chmod(0o755)
    monkeypatch.setattr(proc, "SETPRIV", (str(copy),))
    assert proc._setpriv() == str(copy)  # the check passes root's own file wherever it is ...
    copy.chmod(0o775)
    assert proc._setpriv() is None  # ... not one its group can write
    copy.chmod(0o755)
    os.chown(copy, 65534, 65534)
    assert proc._setpriv() is None  # nor a stranger's
    os.chown(copy, 0, 0)
    folder.chmod(0o777)
    assert proc._setpriv() is None  # nor one in a folder others can write
    folder.chmod(0o755)
    link = tmp_path / "setpriv-link"
    link.symlink_to(copy)
    monkeypatch.setattr(proc, "SETPRIV", (str(link), "/nonexistent/setpriv"))
    assert proc._setpriv() is None  # nor a link
    proc._pdeathsig_wrapper.cache_clear()
    assert proc._pdeathsig_wrapper() == ()
    assert proc.run(["true"], timeout=60).ok


def _unstartable(tmp_path: Path) -> dict[str, Path]:
    gone = tmp_path / "gone-interpreter"
    gone.write_text(f"#!{tmp_path / 'no-such-python'}\nprint('hi')\n")
    bare = tmp_path / "no-shebang"
    bare.write_text("echo ran by a shell\n")
    for path in (gone, bare):
        path.chmod(0o755)
    return {"gone": gone, "bare": bare}


@linux_only
def test_a_program_that_cannot_start_is_an_error_with_or_without_setpriv(tmp_path, monkeypatch, fresh_wrapper):
    """A script whose ``#!`` interpreter is gone, or a file without ``#!``, comes back with ``error`` set (what
    env/probe.py, doctor and util/uv.py word as "cannot be started"), the same behind ``setpriv`` as without."""
    if proc._setpriv() is None:
        pytest.skip("no root-owned /usr/bin/setpriv or /bin/setpriv here")
    programs = _unstartable(tmp_path)
    seen: list[list[str]] = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: seen.append(list(a[0])) or popen(*a, **kw))
    wrapped = {name: proc.run([str(path)], timeout=60) for name, path in programs.items()}
    assert seen[0][0] in proc.SETPRIV, seen  # the interpreter-gone script did go through setpriv
    monkeypatch.setattr(proc, "_setpriv", lambda: None)
    proc._pdeathsig_wrapper.cache_clear()
    seen.clear()
    direct = {name: proc.run([str(path)], timeout=60) for name, path in programs.items()}
    assert [args[0] for args in seen] == [str(p) for p in programs.values()]
    for name in programs:
        assert wrapped[name].error and not wrapped[name].ok and wrapped[name].returncode == -1, wrapped[name]
        assert (wrapped[name].error, wrapped[name].output) == (direct[name].error, direct[name].output), name
    assert wrapped["gone"].error == "No such file or directory"
    assert wrapped["bare"].error == "Exec format error" and "ran by a shell" not in wrapped["bare"].output
    log = tmp_path / "log"
    proc.run([str(programs["gone"])], timeout=60, log=log)
    assert "[could not start: No such file or directory]" in log.read_text()
    # a program that starts and exits 127 on its own stays an exit code
    shell = proc.run(["/bin/sh", "-c", "echo 'setpriv: failed to execute x: y' >&2; exit 127"], timeout=60)
    assert shell.returncode == 127 and not shell.error


def test_without_setpriv_a_timeout_still_kills_the_group(tmp_path, monkeypatch, fresh_wrapper):
    """No trusted ``setpriv``: children run unwrapped, and a timeout still ends all they started."""
    monkeypatch.setattr(proc, "_setpriv", lambda: None)
    seen: list[list[str]] = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: seen.append(list(a[0])) or popen(*a, **kw))
    bg, fg = tmp_path / "bg", tmp_path / "fg"
    command = f"sleep 37 & echo $! > {bg}; sleep 38 & echo $! > {fg}; wait"
    result = proc.run([command], timeout=2, shell=True)
    monkeypatch.undo()
    assert seen == [["/bin/sh", "-c", command]] and result.timed_out, (seen, result)
    pids = [int(bg.read_text()), int(fg.read_text())]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids), f"still running: {[p for p in pids if alive(p)]}"


def test_dist_info_names_split_at_the_first_hyphen():
    assert distinfo.parse("zope.interface-6.0.dist-info") == ("zope-interface", "6.0")
    assert distinfo.parse("tensorflow_io_gcs_filesystem-0.37.1.dist-info") == ("tensorflow-io-gcs-filesystem", "0.37.1")
    assert distinfo.parse("Keras-2.15.0.DIST-INFO") == ("keras", "2.15.0")
    assert distinfo.parse("legacy_pkg-1.0-1.dist-info") == ("legacy-pkg", "1.0-1")  # the last hyphen split badly
    assert distinfo.parse("nameonly.dist-info") is None
    assert distinfo.parse("numpy-1.26.4.egg-info") is None
    assert distinfo.name_of("python_dateutil-2.9.0-py3.8") == "python-dateutil"  # an egg-info stem


def test_installed_reads_a_real_venv():
    """The venv running the tests: every distribution importlib.metadata sees there, at its version."""
    import importlib.metadata

    env = Path(sys.prefix)
    assert env != Path(sys.base_prefix), "the tests run from a venv"
    site = next(env.glob("lib/python*/site-packages"))
    expected = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        expected[canonicalize_name(dist.metadata["Name"])] = dist.version
    found = distinfo.installed(env)
    assert {"pytest", "packaging"} <= set(found) and found == expected


LOCK = """lock-version = "1.0"
created-by = "test"
[[packages]]
name = "Tensorflow_CPU"
version = "2.18.0"
[[packages]]
name = "tensorflow-io-gcs-filesystem"
version = "0.37.1"
marker = "python_version < '3.12'"
[[packages]]
name = "local-tree"
[packages.directory]
path = "src"
"""


def test_the_one_lock_pin_reader():
    assert lockfile.read_pins(LOCK) == {
        "tensorflow-cpu": "2.18.0",
        "tensorflow-io-gcs-filesystem": "0.37.1",
        "local-tree": "",
    }
    assert lockfile.read_pins(LOCK, unconditional=True) == {"tensorflow-cpu": "2.18.0"}
    assert lockfile.read_pins("packages = [") is None
    assert [p["name"] for p in lockfile.package_tables(LOCK) or []] == [
        "Tensorflow_CPU",
        "tensorflow-io-gcs-filesystem",
        "local-tree",
    ]
