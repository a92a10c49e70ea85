"""Real PyPI, the machine's own pip and uv configuration untouched (issue 11, points 2 and 5).

A Python 3.9 env with ``numpy==1.26.4`` and ``tensorflow-cpu==2.15.1`` (from PyPI, through uv's user
cache). ``tfrebuild plan`` with the configuration as it is (on the project's machine: a constraints file,
two ``file://`` mirrors holding a subset of PyPI's files as extra indexes, find-links) must pick the same
versions as with PyPI alone (``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*``/``UV_*``), numpy staying at
1.26.4, and must name the newer TensorFlow that only newer Pythons get.

Skipped when https://pypi.org/simple/tensorflow-cpu/ does not answer within 5 s or Python 3.9 is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import find_python
from tests.kit.cli import CliRun as Run

from rebuild.util.uv import uv_bin

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels assumed"),
]


@pytest.fixture(scope="module")
def env39(pypi_reachable, tmp_path_factory) -> Path:
    python = find_python("3.9")
    if python is None:
        pytest.skip("Python 3.9 is not installed")
    env = tmp_path_factory.mktemp("pypi39") / "tf39"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_")) and k != "VIRTUAL_ENV"}
    subprocess.run(
        [uv_bin(), "venv", "-q", "--no-config", "-p", str(python), str(env)], env=clean, check=True, timeout=300
    )
    subprocess.run(
        [
            uv_bin(),
            "pip",
            "install",
            "-q",
            "--no-config",
            "--python",
            str(env / "bin" / "python"),
            "numpy==1.26.4",
            "tensorflow-cpu==2.15.1",
        ],
        env=clean,
        check=True,
        timeout=1800,
    )
    return env


def _plan(env: Path, environ: dict[str, str], cwd: Path) -> Run:
    cmd = [sys.executable, "-m", "rebuild", "plan", "--env", str(env), "--json"]
    proc = subprocess.run(
        cmd, env=environ, capture_output=True, text=True, timeout=900, cwd=cwd, stdin=subprocess.DEVNULL
    )
    return Run(proc, 0.0, cmd)


def _versions(run: Run) -> dict[str, tuple]:
    assert run.code == 0, str(run)
    plan = run.json()["plan"]
    return {"tf": plan["tf_new"], **{c["name"]: (c["old"], c["new"]) for c in plan["changes"]}}


def test_machine_configuration_plans_what_pypi_alone_plans(env39, tmp_path) -> None:
    own = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # the machine's configuration, untouched
    pypi_only = {k: v for k, v in own.items() if not k.startswith(("PIP_", "UV_"))}
    pypi_only["PIP_CONFIG_FILE"] = os.devnull
    configured = _plan(env39, own, tmp_path)
    alone = _plan(env39, pypi_only, tmp_path)
    assert _versions(configured) == _versions(alone), f"{configured}\n\n{alone}"
    numpy = _versions(configured).get("numpy")
    assert numpy is None or numpy[1] != "1.26.3", numpy  # the mirror's cp311-only 1.26.4 must not hide PyPI's
    newer = configured.json()["plan"]["newer_release"]
    assert newer is not None, "Python 3.9 limits --to latest; the plan must name the newer release"
    assert "3.9" not in newer["pythons"] and newer["python_option"] in newer["pythons"]
