"""What doctor and plan say about a real stack is true of the index (issue 21), with this machine's pip/uv
configuration in force: TensorFlow 2.18.0 with tensorflow-decision-forests 1.11.0 (which pins tensorflow==2.18.0),
made with the stdlib venv and pip as users make it.

The facts doctor prints are checked against PyPI independently (pip's own ``--dry-run --report`` of the release's
metadata): tensorflow-decision-forests 1.12.0 requires tensorflow==2.19.0, and no release accepts the newest
TensorFlow. Then the hint plan prints (``--to 2.19.0``) is run as printed, and doctor and plan after it never
propose the installed TensorFlow.

ydf is pinned to 0.15.0: the ydf release pip picks by default (0.16) fails at import next to the protobuf 5.x that
TensorFlow 2.18/2.19 allow (../shared/tf-facts.md), so the env would be broken before tfrebuild touched it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.kit.cli import run_cli

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels assumed"),
]

PROBE_URL = "https://pypi.org/simple/tensorflow-decision-forests/"
PACKAGES = ["tensorflow==2.18.0", "tensorflow-decision-forests==1.11.0", "ydf==0.15.0"]


def environ() -> dict[str, str]:
    """``os.environ`` as the user has it (pip's and uv's configuration kept), no active venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return {**env, "NO_COLOR": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(cmd: list, cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=environ(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    return proc


def requires_of(pip: Path, requirement: str, cwd: Path) -> tuple[str, list[str]]:
    """(version, Requires-Dist) of the release pip picks for ``requirement``, read from the index by pip itself."""
    report = run(
        [pip, "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet", "--report", "-", requirement], cwd
    )
    (item,) = json.loads(report.stdout)["install"]
    return item["metadata"]["version"], list(item["metadata"].get("requires_dist") or [])


def tf_pin(requires: list[str]) -> str:
    return next(str(Requirement(r).specifier) for r in requires if Requirement(r).name == "tensorflow")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Path]:
    try:
        with urllib.request.urlopen(PROBE_URL, timeout=5) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        pytest.skip(f"PyPI is unreachable ({PROBE_URL}: {exc})")
    work = tmp_path_factory.mktemp("tfdf-pypi")
    env = work / "tfdf"
    run([sys.executable, "-m", "venv", env], work, timeout=300)
    run([env / "bin" / "pip", "install", "--disable-pip-version-check", *PACKAGES], work)
    yield env
    shutil.rmtree(work, ignore_errors=True)  # ~2.5 GB with the new generation


def tfrebuild(*args, cwd: Path):
    return run_cli(environ(), *args, cwd=cwd, timeout=1800)


def test_doctor_and_plan_say_what_the_index_says_and_the_hint_works(stack: Path) -> None:
    work = stack.parent
    # --- before: doctor names the release of tfdf that moves, and the TensorFlow it goes with
    doc = json.loads(tfrebuild("doctor", "--env", stack, "--json", cwd=work).out)
    target = doc["target_version"]
    (f,) = [f for f in doc["findings"] if f["id"] == "target-blocked"]
    assert f["title"] == f"tensorflow-decision-forests 1.11.0 does not allow tensorflow {target}"
    moving = [e for e in f["evidence"] if "the newest tensorflow a release of it accepts is" in e]
    assert moving, f["evidence"]
    # ... and that is what the index says (pip reads it): the newest tfdf pins a TensorFlow below the target
    pip = stack / "bin" / "pip"
    newest, requires = requires_of(pip, "tensorflow-decision-forests", work)
    pin = tf_pin(requires)
    assert pin.startswith("=="), pin
    allowed = pin[2:]
    assert Version(allowed) < Version(target)
    assert moving[0].endswith(f"is {allowed}: tensorflow-decision-forests {newest} (tensorflow=={allowed})"), moving
    assert f"--to {allowed}`" in f["fix"] and "--to 2.18.0" not in f["fix"], f["fix"]
    # --- before: the newest target is blocked, and plan offers that lower target with it
    planned = tfrebuild("plan", "--env", stack, "--to", target, cwd=work)
    assert planned.code == 1, planned.out + planned.err
    hint = planned.err.rsplit("\nhint:", 1)[1]
    assert f"--to {allowed} (the newest tensorflow that resolves with everything else kept)" in hint, hint
    assert "--strategy eager" not in hint
    # --- the hint, run as printed
    done = tfrebuild("upgrade", "--env", stack, "--to", allowed, "--yes", "--json", cwd=work)
    assert done.code == 0, done.err[-4000:]
    changes = {c["name"]: c["new"] for c in json.loads(done.out)["plan"]["changes"]}
    assert changes["tensorflow"] == allowed and changes["tensorflow-decision-forests"] == newest, changes
    # --- after: neither doctor nor plan proposes the installed TensorFlow
    after = json.loads(tfrebuild("doctor", "--env", stack, "--json", cwd=work).out)
    (g,) = [g for g in after["findings"] if g["id"] == "target-blocked"]
    assert f"--to {allowed}" not in g["fix"] and "keep tensorflow" in g["fix"], g["fix"]
    replanned = tfrebuild("plan", "--env", stack, "--to", target, cwd=work)
    assert replanned.code == 1
    assert f"--to {allowed}" not in replanned.err.rsplit("\nhint:", 1)[1]
