"""Units behind the faster plan: caps the target rules out, pip's site from its shebang, the background pre-flight."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rebuild.core import resolve
from rebuild.core.preflight import Background
from rebuild.doctor import checks_env


def test_ruled_out_caps_reads_the_targets_floor():
    caps = {"protobuf": 4, "keras": 2, "numpy": 1, "h5py": 3}
    requires = ["protobuf>=6.31.1,<8", "keras>=3.12.0", "numpy>=1.26.0", "h5py<3.15,>=3.11", "absl-py>=1.0"]
    assert resolve.ruled_out_caps(caps, requires) == {"protobuf", "keras"}
    assert resolve.ruled_out_caps({"numpy": 1}, ["numpy>1.99"]) == set()  # 1.99 is major 1: numpy<2 may hold
    assert resolve.ruled_out_caps({"numpy": 1}, ["numpy>2.0"]) == {"numpy"}
    assert resolve.ruled_out_caps({"keras": 2}, ["keras==3.*"]) == {"keras"}
    assert resolve.ruled_out_caps({"keras": 2}, ["keras<4"]) == set()
    assert resolve.ruled_out_caps(caps, None) == set() and resolve.ruled_out_caps(caps, ["not a requirement!"]) == set()


def _venv(root: Path, version: str = "3.11.7") -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {version}\n")
    return root


def test_pip_site_from_its_shebang_without_starting_pip(tmp_path, monkeypatch):
    other = _venv(tmp_path / "other")
    script = other / "bin" / "pip"
    script.write_text(f"#!{other / 'bin' / 'python'}\nimport sys\n")

    def no_process(*a, **k):
        raise AssertionError("no process may be started for a venv's pip script")

    monkeypatch.setattr(checks_env.proc, "run", no_process)
    assert checks_env._pip_site(str(script), {}) == (str(other / "lib" / "python3.11" / "site-packages"), "3.11")
    trampoline = tmp_path / "pip-sh"
    trampoline.write_text("#!/bin/sh\n'''exec' python \"$0\" \"$@\"\n")
    assert checks_env._pip_site_from_shebang(str(trampoline)) is None  # asks pip itself (pip --version)


def test_background_gives_its_result_and_reraises_in_the_caller():
    gate = threading.Event()

    def work(requires):
        gate.wait(5)
        requires.append("protobuf>=6")
        return ["finding"]

    job = Background(work, "tensorflow-cpu")
    gate.set()
    assert job.target_requires() == ["protobuf>=6"] and job.findings() == ["finding"]

    def boom(requires):
        raise RuntimeError("pre-flight crashed")

    bad = Background(boom, "tensorflow-cpu")
    assert bad.target_requires() is None
    with pytest.raises(RuntimeError, match="pre-flight crashed"):
        bad.findings()


def _progress(terminal: bool):
    import io

    from rich.console import Console

    from rebuild.cli import render

    term = render.Terminal(no_color=True)
    term.err = Console(file=io.StringIO(), force_terminal=terminal, width=120)
    return render.Progress(True, terminal=term), term.err.file


def test_piped_progress_is_one_line_per_stage():
    progress, out = _progress(terminal=False)
    assert not progress.live
    for stage, detail in (
        ("resolve", "tensorflow-cpu latest"),
        ("build", "installing 37 packages"),
        ("bytecode", "compiling bytecode"),
        ("checks", "importing TensorFlow 2.21.0"),
    ):
        progress.stage(stage, detail)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "resolve: tensorflow-cpu latest",
        "build: installing 37 packages",
        "bytecode: compiling bytecode",
        "checks: importing TensorFlow 2.21.0",
    ]


def test_live_progress_shows_elapsed_and_is_quiet_while_a_prompt_is_open():
    import re
    import time

    progress, out = _progress(terminal=True)
    assert progress.live
    progress.stage("checks", "importing TensorFlow 2.21.0")
    deadline = time.monotonic() + 10
    while not re.search(r"importing TensorFlow 2\.21\.0\s+[1-9]\d*s", out.getvalue()) and time.monotonic() < deadline:
        time.sleep(0.05)  # waits for the ticking counter; nothing here measures how long anything took
    assert re.search(r"importing TensorFlow 2\.21\.0\s+[1-9]\d*s", out.getvalue()), out.getvalue()[-300:]
    progress.pause()  # what confirm does before it asks
    written = out.getvalue()
    time.sleep(0.3)
    assert out.getvalue() == written, "the status must not be drawn while the prompt is open"
    progress.stage("build", "installing 37 packages")
    progress.close()
    assert "build: installing 37 packages" in out.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\nRequires-Dist: a>=1\nRequires-Dist: b ; extra == 'x'\n",
        "Name: pkg\r\nVersion: 1.0\r\nLicense: line one\r\n  line two\r\n\tline three\r\nSummary:\r\n",
        "Name:pkg\nVersion:   2.0   \nKeywords: a,b\n c\nname: again\n",
        "Name: pkg\nVersion: 1.0",  # no final newline
        "Name: pkg\nnot a header line\nVersion: 1.0\n",  # falls back to the email parser
        " leading continuation\nName: pkg\n",
        "From someone\nName: pkg\n",
        "Name: pkg\x0cVersion: 1.0\n",
        "Name : pkg\n",
        "Name: caf\u00e9 \u2603\nVersion: 1.0\n",
    ],
)
def test_probe_header_parser_reads_what_the_email_parser_reads(text):
    from email.parser import HeaderParser

    from rebuild.env import _probe

    want = HeaderParser().parsestr(text)
    fast = _probe._simple_headers(text)
    got = fast if fast is not None else want
    for key in ("Name", "Version", "License", "Summary", "Keywords", "Requires-Dist", "Missing"):
        assert got.get(key) == want.get(key), (key, text)
        assert (got.get_all(key) or []) == (want.get_all(key) or []), (key, text)


@pytest.mark.parametrize("argv", [["--version"], ["releases", "--offline", "--json"]])
def test_start_up_without_output_to_format_loads_no_rich(argv, tmp_path):
    """rich (about a third of the CLI's import time) loads on the first formatted output only: not for --version, not
    for a --json document."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom rebuild.cli.app import main\n"
        f"sys.argv = ['tfrebuild', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('rich loaded' if 'rich' in sys.modules else 'no rich')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.stdout.splitlines()[-1] == "no rich", run.stderr
