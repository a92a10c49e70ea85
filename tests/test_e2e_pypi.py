"""Real-network end to end: a pip-made TensorFlow 2.15.1 venv, upgraded and rolled back by tfrebuild.

This is the one test that talks to the real PyPI. It does what a user does:

* the module fixture ``tf_env`` makes ONE venv with ``python -m venv V`` and
  ``V/bin/pip install tensorflow-cpu==2.15.1 scipy==1.11.4 pandas`` (about 250 MB
  of wheels the first time; pip's cache makes later runs faster) and records
  ``pip freeze`` and ``uv pip freeze`` of it;
* the steps are snapshot, plan, plan with ``--keras legacy``, upgrade, rollback, history.
  Each test asks ``tf_env.reach(step)``, which runs every step up to it once, in that
  order, whichever test asks first, and records what each step saw (its command's output
  and the checks made on the env right after it); the tests assert on those records. So
  any test runs alone or in any order (``pytest tests/test_e2e_pypi.py::test_4_rollback``).
  A step whose predecessor failed is skipped with a reason instead of failing for the
  same cause twice.

Configuration: every subprocess runs with the machine's own pip and uv configuration
untouched (its pip.conf, uv.toml and ``PIP_*``/``UV_*`` variables: on a company machine a
constraints file, extra mirrors, find-links), as a user's command would; tfrebuild must
upgrade such an env all the same. Only ``VIRTUAL_ENV``/``PYTHONPATH``/``PYTHONHOME`` are
dropped. uv keeps its default user cache (``~/.cache/uv``), so a second run is fast.

The whole module is skipped, with the reason, when https://pypi.org/simple/tensorflow-cpu/
does not answer within 5 s. Run it with::

    python3 -m pytest tests/test_e2e_pypi.py -q -m network

Time on a 2-core machine with warm caches: about 2-3 minutes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

from rebuild.util.uv import uv_bin
from tests.kit.cli import CliRun, run_cli

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX venv layout and Linux wheels assumed"),
]

TF_OLD = "2.15.1"
TF_MIN_NEW = Version("2.21.0")
PACKAGES = [f"tensorflow-cpu=={TF_OLD}", "scipy==1.11.4", "pandas"]
INSTALL_TIMEOUT = 1800
UPGRADE_TIMEOUT = 1800
TF_CHECK = (
    "import tensorflow as tf, scipy.linalg; print(tf.__version__); print(float(tf.reduce_sum(tf.constant([1.0, 2.0]))))"
)


# --------------------------------------------------------------------------- helpers


def clean_environ() -> dict[str, str]:
    """``os.environ`` as the user has it (pip's and uv's configuration kept), no active venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["NO_COLOR"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # keep TensorFlow's start-up chatter out of failure messages
    return env


def machine_index(env: Path):
    """The index settings (redacted) tfrebuild reads from this machine's pip and uv configuration."""
    from rebuild.index import config as indexconf

    return indexconf.redacted(indexconf.discover(prefix=env, environ=clean_environ()))


def run(cmd: list, *, cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` with the machine's pip/uv configuration; on failure show its output."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return proc


def tfrebuild(*args, cwd: Path, timeout: float = 600, check: bool = True) -> CliRun:
    res = run_cli(clean_environ(), *args, cwd=cwd, timeout=timeout)
    if check and res.code != 0:
        pytest.fail(f"command failed:\n{res}", pytrace=False)
    return res


def as_json(proc: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"not JSON on stdout:\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}", pytrace=False)


def newest_release_for_this_python(distribution: str) -> Version:
    """The newest final release of ``distribution`` on PyPI with a wheel for this CPython on Linux/this machine."""
    request = urllib.request.Request(
        f"https://pypi.org/simple/{distribution}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = json.load(response)
    python_tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    machine = platform.machine()
    versions: set[Version] = set()
    for f in data["files"]:
        if f.get("yanked") or not f["filename"].endswith(".whl"):
            continue
        try:
            _, version, _, tags = parse_wheel_filename(f["filename"])
        except (InvalidVersion, ValueError):
            continue
        if version.is_prerelease or version.is_devrelease:
            continue
        if any(
            t.interpreter == python_tag and t.platform.startswith("manylinux") and t.platform.endswith(machine)
            for t in tags
        ):
            versions.add(version)
    return max(versions)


def freeze_pip(env: Path, cwd: Path) -> str:
    return run([env / "bin" / "pip", "freeze"], cwd=cwd).stdout


def freeze_uv(env: Path, cwd: Path) -> str:
    return run([uv_bin(), "pip", "freeze", "--python", env / "bin" / "python"], cwd=cwd).stdout


def shebang(script: Path) -> str:
    with open(script, "rb") as fh:
        return fh.readline().decode(errors="replace").strip()


@dataclass
class TfEnv:
    """The venv under test, and what each step did to it and saw (see :meth:`reach`)."""

    path: Path
    work: Path
    pip_freeze: str
    uv_freeze: str
    seen: dict[str, dict] = field(default_factory=dict)  # step -> its records
    failed: str = ""

    @property
    def target(self) -> str:
        return self.seen["plan"]["plan"]["tf_new"]

    def reach(self, step: str) -> dict:
        """Run every step up to ``step`` that has not run yet, in order; ``step``'s records."""
        for name, action in STEPS:
            if name not in self.seen:
                if self.failed:
                    pytest.skip(f"an earlier step did not pass: {self.failed}")
                self.failed = name  # until the action returns
                self.seen[name] = action(self)
                self.failed = ""
            if name == step:
                return self.seen[name]
        raise AssertionError(f"no step {step!r}")


def _snapshot(tf_env: TfEnv) -> dict:
    profile_path = tf_env.work / "tf.toml"
    proc = tfrebuild("snapshot", "--env", tf_env.path, "-o", profile_path, cwd=tf_env.work)
    assert profile_path.is_file(), proc.stdout + proc.stderr
    return {"profile": tomllib.loads(profile_path.read_text(encoding="utf-8"))}


def _plan(tf_env: TfEnv) -> dict:
    before = freeze_pip(tf_env.path, tf_env.work)
    plan = as_json(tfrebuild("plan", "--env", tf_env.path, "--json", cwd=tf_env.work))["plan"]
    return {"plan": plan, "unchanged": freeze_pip(tf_env.path, tf_env.work) == before}


def _plan_legacy(tf_env: TfEnv) -> dict:
    return as_json(
        tfrebuild("plan", "--env", tf_env.path, "--to", "latest", "--keras", "legacy", "--json", cwd=tf_env.work)
    )


def _upgrade(tf_env: TfEnv) -> dict:
    env, work = tf_env.path, tf_env.work
    result = as_json(tfrebuild("upgrade", "--env", env, "--yes", "--json", cwd=work, timeout=UPGRADE_TIMEOUT))
    return {
        "result": result,
        "is_dir": env.is_dir() and not env.is_symlink(),
        "tf_check": run([env / "bin" / "python", "-c", TF_CHECK], cwd=work).stdout.split(),
        "prefix": run([env / "bin" / "python", "-c", "import sys; print(sys.prefix)"], cwd=work).stdout.strip(),
        "pip_version": run([env / "bin" / "pip", "--version"], cwd=work).stdout,
        "freeze": dict(line.split("==", 1) for line in freeze_uv(env, work).split() if "==" in line),
        "pip_check": run([uv_bin(), "pip", "check", "--python", env / "bin" / "python"], cwd=work, check=False),
    }


def _rollback(tf_env: TfEnv) -> dict:
    env, work = tf_env.path, tf_env.work
    result = as_json(tfrebuild("rollback", "--env", env, "--yes", "--json", cwd=work))
    scripts = {}
    for script, args in (("pip", ["--version"]), ("tensorboard", ["--version"])):
        path = env / "bin" / script
        scripts[script] = (shebang(path), run([path, *args], cwd=work, timeout=300, check=False).returncode)
    return {
        "result": result,
        "version": run(
            [env / "bin" / "python", "-c", "import tensorflow as tf; print(tf.__version__)"], cwd=work
        ).stdout.split(),
        "pip_freeze": freeze_pip(env, work),
        "uv_freeze": freeze_uv(env, work),
        "scripts": scripts,
    }


def _history(tf_env: TfEnv) -> dict:
    return {
        "history": as_json(tfrebuild("history", "--env", tf_env.path, "--json", cwd=tf_env.work)),
        "status": as_json(tfrebuild("status", "--env", tf_env.path, "--json", cwd=tf_env.work)),
    }


STEPS = [
    ("snapshot", _snapshot),
    ("plan", _plan),
    ("plan-legacy", _plan_legacy),
    ("upgrade", _upgrade),
    ("rollback", _rollback),
    ("history", _history),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tf_env(pypi_reachable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TfEnv]:
    """ONE real venv made the way a user makes it: stdlib venv + pip from PyPI.

    Removed at the end when every step passed (it holds ~1.7 GB); kept for a look otherwise.
    """
    work = tmp_path_factory.mktemp("e2e-pypi")
    env = work / "tf"
    run([sys.executable, "-m", "venv", env], cwd=work, timeout=300)
    run([env / "bin" / "pip", "install", "--disable-pip-version-check", *PACKAGES], cwd=work, timeout=INSTALL_TIMEOUT)
    state = TfEnv(path=env, work=work, pip_freeze=freeze_pip(env, work), uv_freeze=freeze_uv(env, work))
    yield state
    if "history" in state.seen and not state.failed:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the steps (any order)


def test_1_snapshot(tf_env: TfEnv) -> None:
    profile = tf_env.reach("snapshot")["profile"]
    assert profile["requested"] == ["pandas", "scipy", "tensorflow-cpu"]
    assert profile["tensorflow"]["distribution"] == "tensorflow-cpu"
    assert profile["tensorflow"]["version"] == TF_OLD
    machine = machine_index(tf_env.path)  # the profile records the machine's own configuration
    assert profile["index"].get("index_url", "") == machine.index_url
    assert profile["index"].get("extra_index_urls", []) == machine.extra_index_urls
    assert profile["index"].get("constraints", []) == machine.constraints
    assert profile["index"].get("constraint_lines", []) == machine.constraint_lines


def test_2_plan(tf_env: TfEnv) -> None:
    seen = tf_env.reach("plan")
    plan = seen["plan"]
    newest = newest_release_for_this_python("tensorflow-cpu")
    assert plan["tf_distribution"] == "tensorflow-cpu"
    assert plan["tf_old"] == TF_OLD
    assert Version(plan["tf_new"]) >= TF_MIN_NEW, plan["tf_new"]
    assert Version(plan["tf_new"]) == newest, f"plan picked {plan['tf_new']}, PyPI's newest is {newest}"
    changes = {c["name"]: c for c in plan["changes"]}
    assert changes["tensorflow-cpu"]["new"] == plan["tf_new"]
    assert "scipy" not in changes, f"scipy 1.11.4 must stay: {changes.get('scipy')}"
    if "numpy" in changes:  # numpy may move within 1.x, never to 2.x (scipy 1.11.4 needs numpy<1.28)
        assert changes["numpy"]["new"] and Version(changes["numpy"]["new"]).major == 1, changes["numpy"]
    machine = machine_index(tf_env.path)
    assert plan["index"]["index_url"] == machine.index_url
    assert plan["index"]["extra_index_urls"] == machine.extra_index_urls
    assert plan["index"]["find_links"] == machine.find_links
    assert plan["index"]["constraint_lines"] == machine.constraint_lines
    assert seen["unchanged"], "plan changed the environment"


def test_2b_plan_keras_legacy(tf_env: TfEnv) -> None:
    """`plan --to latest --keras legacy` on the real 2.15 env: tf-keras for the target, one TF variant."""
    plan = tf_env.reach("plan-legacy")["plan"]
    target = Version(plan["tf_new"])
    changes = {c["name"]: c for c in plan["changes"]}
    assert plan["keras_legacy"] is True
    tf_keras = Version(changes["tf-keras"]["new"])
    assert (tf_keras.major, tf_keras.minor) == (target.major, target.minor), changes["tf-keras"]
    # tf-keras requires `tensorflow`: the plan keeps one variant instead of installing both.
    assert plan["tf_distribution"] == "tensorflow" and changes["tensorflow-cpu"]["kind"] == "remove"
    assert any("TF_USE_LEGACY_KERAS=1" in n for n in plan["notes"])


def test_3_upgrade(tf_env: TfEnv) -> None:
    seen = tf_env.reach("upgrade")
    env, result = tf_env.path, seen["result"]
    assert result["ok"] and result["changed"], result
    assert (result["generation"], result["previous"]) == (2, 1)
    assert result["plan"]["tf_new"] == tf_env.target
    failed = [c["name"] for c in result["checks"] + result["after_swap"] if not c["ok"]]
    assert not failed, failed

    # The user's path held the new env, and it really lived there (relocatable venv, not a link).
    assert seen["is_dir"]
    assert seen["tf_check"][-2:] == [tf_env.target, "3.0"], seen["tf_check"]
    assert os.path.realpath(seen["prefix"]) == os.path.realpath(env)
    # A console script of the new env (built in staging, then renamed to V) still ran at V.
    assert os.path.realpath(env) in seen["pip_version"], seen["pip_version"]

    new_freeze = seen["freeze"]
    assert new_freeze["tensorflow-cpu"] == tf_env.target
    assert new_freeze["scipy"] == "1.11.4"
    assert Version(new_freeze["numpy"]).major == 1, new_freeze["numpy"]
    assert seen["pip_check"].returncode == 0, seen["pip_check"].stdout + seen["pip_check"].stderr


def test_4_rollback(tf_env: TfEnv) -> None:
    seen = tf_env.reach("rollback")
    env, result = tf_env.path, seen["result"]
    assert result["ok"] and (result["from_generation"], result["to_generation"]) == (2, 1), result
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert seen["version"][-1] == TF_OLD, seen["version"]
    # Byte-for-byte the same set of distributions as before the upgrade.
    assert seen["pip_freeze"] == tf_env.pip_freeze
    assert seen["uv_freeze"] == tf_env.uv_freeze
    # pip wrote absolute shebangs into the original env's scripts: they work again because
    # the original tree is back at its original path.
    for script, (line, code) in seen["scripts"].items():
        assert line.startswith(f"#!{env}/bin/python"), line
        assert code == 0, script


def test_5_history(tf_env: TfEnv) -> None:
    seen = tf_env.reach("history")
    rows = seen["history"]["rows"]
    assert [r["number"] for r in rows] == [1, 2], rows
    first, second = rows
    assert first["current"] and not first["previous"] and first["tensorflow"] == f"tensorflow-cpu {TF_OLD}"
    assert second["previous"] and not second["current"] and second["tensorflow"] == f"tensorflow-cpu {tf_env.target}"
    assert first["present"] and second["present"]
    status = seen["status"]
    assert status["interrupted"] is None and status["leftover_staging"] == [], status
