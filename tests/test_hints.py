"""Hints are reachable and tried (issue 21 point 3): for each kind of refusal, the test makes it happen on a kit env,
takes the command the hint prints, runs it as printed, and checks that it gets past what the hint named. No hint
names a flag already given or a profile that does not exist.

Hint texts run here (the report lists them):
* conflict: "--to X (the newest tensorflow that resolves with everything else kept)"
* conflict: "drop X: `tfrebuild snapshot --env ENV -o profile.toml`, delete X from `requested`
  (and its modules from `[smoke].imports`) … then `tfrebuild upgrade --env ENV --profile profile.toml`"
* conflict with --profile: "drop X from `requested` (and its modules from `[smoke].imports`) in the profile P"
* pre-flight refusal (pythonpath-shadow): "`unset PYTHONPATH` …"
* processes running from the env: "Stop them first …, or pass --force to swap anyway."
* no confirmation possible: "Look at `tfrebuild plan` first, then run `tfrebuild upgrade --yes`."
* no wheel for this Python: "Move the env to one with --python X."
* pre-flight refusal (numpy-abi-mismatch): "keep numpy below 2: add `--constraint numpy1.txt` to the command,
  numpy1.txt holding the line `numpy<2`, or let X move to Y or newer"
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kit.cli import run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


@pytest.fixture
def tf(kit_env, kit_index: Path, tmp_path: Path):
    """``tf(command, env, *args, **overrides)``: tfrebuild offline on the kit index."""

    def _run(command: str, env: Path, *args: str, **overrides):
        return run_cli(
            kit_env,
            command,
            "--env",
            env,
            "--offline",
            "--find-links",
            kit_index,
            *args,
            overrides=overrides or None,
            cwd=tmp_path,
        )

    return _run


def _hint(err: str) -> str:
    assert "hint:" in err, err
    return " ".join(err.rsplit("\nhint:", 1)[1].split())  # tfrebuild's hint: the last one (uv's come before)


def _versions(venv_run, env: Path, *modules: str) -> list[str]:
    code = "import importlib; print(' '.join(importlib.import_module(m).__version__ for m in %r))" % (modules,)
    got = venv_run(env, code)
    assert got.returncode == 0, got.stderr
    return got.stdout.split()


def _drop_requested(profile: Path, name: str) -> None:
    """What a user does by hand: delete ``name`` from the profile's ``requested`` list."""
    import tomllib

    import tomli_w

    data = tomllib.loads(profile.read_text())
    assert name in data["requested"], data["requested"]
    data["requested"] = [r for r in data["requested"] if r != name]
    module = name.replace("-", "_")
    if module in data.get("smoke", {}).get("imports", []):
        data["smoke"]["imports"].remove(module)
    profile.write_text(tomli_w.dumps(data))


@pytest.fixture
def forests(make_venv, tmp_path: Path) -> Path:
    """tensorflow 2.18.0 with tensorflow-forests 1.11.0, which pins tensorflow==2.18.0 (no release accepts 2.21)."""
    return make_venv(tmp_path / "envs" / "forests", ["tensorflow==2.18.0", "tensorflow-forests==1.11.0"])


@pytest.mark.slow
def test_conflict_hint_to_the_newest_resolvable_target_works(forests: Path, tf, venv_run) -> None:
    # (--to latest lands on the newest target that works by itself; asking for 2.21.0 exactly is refused, with hints)
    for strategy in ([], ["--strategy", "eager"]):
        res = tf("upgrade", forests, "--yes", "--to", "2.21.0", *strategy)
        assert res.code == 1, res.err
        hint = _hint(res.err)
        assert "--strategy eager" not in hint, "no hint proposes a flag that cannot help (or was given)"
        assert "the profile's" not in hint and "in the profile" not in hint, "this env has no profile"
    found = re.search(r"--to (\S+) \(the newest tensorflow that resolves with everything else kept\)", hint)
    assert found, hint
    done = tf("upgrade", forests, "--yes", "--to", found.group(1))
    assert done.code == 0, done.err
    assert _versions(venv_run, forests, "tensorflow", "tensorflow_forests") == ["2.20.0", "1.12.0"]


def test_conflict_hint_to_drop_the_blocker_works(
    forests: Path, tf, kit_env, kit_index: Path, tmp_path: Path, venv_run
) -> None:
    res = tf("upgrade", forests, "--yes", "--to", "2.21.0")
    found = re.search(
        r"drop tensorflow-forests: `tfrebuild (snapshot [^`]+)`, delete tensorflow-forests from "
        r"`requested` \(and its modules from `\[smoke\].imports`\) in profile.toml, then "
        r"`tfrebuild (upgrade [^`]+)`",
        _hint(res.err),
    )
    assert found, res.err
    work = tmp_path / "work"
    work.mkdir()
    snap = run_cli(kit_env, *shlex.split(found.group(1)), cwd=work)
    assert snap.code == 0, snap.err
    _drop_requested(work / "profile.toml", "tensorflow-forests")
    done = run_cli(kit_env, *shlex.split(found.group(2)), "--yes", "--offline", "--find-links", kit_index, cwd=work)
    assert done.code == 0, done.err
    assert _versions(venv_run, forests, "tensorflow") == ["2.21.0"]
    assert venv_run(forests, "import tensorflow_forests").returncode != 0, "dropped"


def test_conflict_hint_with_a_profile_names_that_profile(forests: Path, tf, tmp_path: Path, kit_env) -> None:
    profile = tmp_path / "p.toml"
    assert run_cli(kit_env, "snapshot", "--env", forests, "-o", profile, cwd=tmp_path).code == 0
    res = tf("plan", forests, "--profile", str(profile), "--to", "2.21.0")
    assert res.code == 1, res.err
    assert (
        f"drop tensorflow-forests from `requested` (and its modules from `[smoke].imports`) in the profile {profile}"
    ) in _hint(res.err)
    _drop_requested(profile, "tensorflow-forests")  # the hint, followed
    done = tf("plan", forests, "--profile", str(profile), "--to", "2.21.0")
    assert done.code == 0, done.err


@pytest.mark.slow
def test_preflight_refusal_hint_works(make_venv, tmp_path: Path, tf) -> None:
    env = make_venv(tmp_path / "envs" / "pp", CLASSIC)
    shadow = tmp_path / "pp"
    (shadow / "numpy").mkdir(parents=True)
    (shadow / "numpy" / "__init__.py").write_text("__version__ = '0.0'\n")
    res = tf("upgrade", env, "--yes", PYTHONPATH=str(shadow))
    assert res.code == 1 and "pythonpath-shadow" in res.err, res.err
    assert "`unset PYTHONPATH`" in _hint(res.err)
    done = tf("upgrade", env, "--yes", PYTHONPATH=None)  # the hint, followed
    assert done.code == 0, done.err


def test_in_use_hint_works(make_venv, tmp_path: Path, tf) -> None:
    env = make_venv(tmp_path / "envs" / "busy", ["tensorflow-cpu==2.15.1"])
    user = subprocess.Popen([str(env / "bin" / "python"), "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        res = tf("upgrade", env, "--yes", "--to", "2.18")
        assert res.code == 1 and f"pid {user.pid}" in res.err
        assert "pass --force to swap anyway" in _hint(res.err)
        done = tf("upgrade", env, "--yes", "--to", "2.18", "--force")
        assert done.code == 0, done.err
    finally:
        user.kill()
        user.wait(timeout=10)


def test_confirmation_hint_works(make_venv, tmp_path: Path, tf) -> None:
    env = make_venv(tmp_path / "envs" / "ask", ["tensorflow-cpu==2.15.1"])
    res = tf("upgrade", env, "--to", "2.18")
    assert res.code != 0
    assert "Look at `tfrebuild plan` first, then run `tfrebuild upgrade --yes`." in _hint(res.err)
    assert tf("plan", env, "--to", "2.18").code == 0
    assert tf("upgrade", env, "--to", "2.18", "--yes").code == 0


@pytest.mark.slow
def test_no_wheel_for_this_python_hint_works(make_venv, tmp_path: Path, tf, venv_run) -> None:
    env = make_venv(tmp_path / "envs" / "py39", ["tensorflow-cpu==2.15.1", "numpy==1.24.3"], python="3.9")
    res = tf("upgrade", env, "--yes", "--to", "2.21.0")
    assert res.code != 0 and "has no wheel for Python 3.9" in res.err, res.err
    found = re.search(r"Move the env to one with (--python [0-9.]+)\.", _hint(res.err))
    assert found, res.err
    done = tf("upgrade", env, "--yes", "--to", "2.21.0", *shlex.split(found.group(1)))
    assert done.code == 0, done.err
    assert _versions(venv_run, env, "tensorflow") == ["2.21.0"]


@pytest.mark.slow
def test_numpy_abi_mismatch_refusal_hint_works(make_venv, tmp_path: Path, tf, venv_run) -> None:
    # --strategy eager takes numpy 2 while a constraint holds opencv-python at 4.8.1.78, built for NumPy 1
    env = make_venv(tmp_path / "envs" / "cv", ["tensorflow-cpu==2.15.1", "opencv-python==4.8.1.78", "numpy==1.24.3"])
    held = tmp_path / "held.txt"
    held.write_text("opencv-python==4.8.1.78\n")
    command = ["--yes", "--to", "2.21.0", "--strategy", "eager", "--constraint", str(held)]
    res = tf("upgrade", env, *command)
    assert res.code == 1 and "numpy-abi-mismatch" in res.err, res.err
    assert "opencv-python 4.8.1.78 was built for NumPy 1, and this plan takes numpy 2." in res.err
    hint = _hint(res.err)
    found = re.search(r"add `(--constraint numpy1.txt)` to the command, numpy1.txt holding the line `(numpy<2)`", hint)
    assert found, hint
    (tmp_path / "numpy1.txt").write_text(found.group(2) + "\n")  # the test runs from tmp_path
    done = tf("upgrade", env, *command, *shlex.split(found.group(1)))
    assert done.code == 0, done.err
    assert _versions(venv_run, env, "tensorflow", "numpy", "cv2") == ["2.21.0", "1.26.4", "4.8.1.78"]
