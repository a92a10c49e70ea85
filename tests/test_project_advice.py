"""Advice is followable end to end: each piece of advice tfrebuild prints is followed as a user would, and the
next tfrebuild command succeeds (offline on the kit's wheels; the install-apart advice reaches the index).

* uv project, "Limit requires-python": the user edits ``requires-python``, runs ``uv lock``, upgrades again: the
  upgrade starts from the edited files, reaches the newest release, keeps the edit; ``rollback`` returns to the
  files as they were before that upgrade (the edit included) and uv agrees with the env.
* uv project, "TensorFlow is not a direct dependency … add it with `uv add …`": followed literally, then upgrade.
* requirement files, "the env holds …, which requirements.txt does not list (add them to requirements.in and
  recompile …)": followed, then upgrade.
* a hand-edited lock under ``rollback``: refused under ``--yes`` with the diff; ``--force`` saves it first.
* "install tfrebuild apart" (a tfrebuild installed into the env it would upgrade): ``python3 install.py`` as the
  advice says, then that ``tfrebuild --env …`` upgrades the env (network: pip installs the checkout).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import build_wheel
from tests.kit.cli import run_cli
from tests.test_project_uv import assert_uv_agrees, make_project, project_env, tfr, uv  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kit's wheels are Linux wheels"),
]

ROOT = Path(__file__).resolve().parent.parent


def _advice(text: str, start: str) -> str:
    """The sentence of ``text`` (plan output or error) that begins with ``start``."""
    flat = " ".join(text.split())
    at = flat.find(start)
    assert at >= 0, f"no advice starting {start!r} in:\n{text}"
    return flat[at:]


def test_uv_limit_requires_python_then_upgrade_reaches_the_newest(tmp_path, project_env, kit_index):
    # The real shape (tests/test_project_uv_pypi.py): the newest TensorFlow cannot be locked for a Python the
    # project admits but does not use (there: ml-dtypes needs NumPy 2.1 on 3.13, scipy 1.11.4 forbids it). Here a
    # dependency of the project caps TensorFlow on Python >= 3.13 only.
    extra = tmp_path / "extra-wheels"
    build_wheel(
        extra,
        "gpu-helper",
        "1.0",
        requires=["tensorflow-cpu<2.21; python_version >= '3.13'"],
        modules={"gpu_helper/__init__.py": ""},
    )
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        text.replace(f'find-links = ["{kit_index}"]', f'find-links = ["{kit_index}", "{extra}"]')
    )
    uv(project_env, root, "add", "gpu-helper==1.0")
    first = tfr(project_env, root, "upgrade", "--offline", "--find-links", kit_index, "--find-links", extra, "--yes")
    assert first.code == 0, first.err + first.out
    advice = _advice(first.out, "Limit requires-python in pyproject.toml")
    limit = re.search(r'\(e\.g\. "([^"]+)"\)', advice).group(1)
    landed = re.search(r"to generation 2 \(tensorflow-cpu (\S+)\)", first.out).group(1)
    assert landed != "2.21.0", first.out

    # Follow it: limit requires-python, re-lock with uv (the project's own command), upgrade again.
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(re.sub(r'requires-python = "[^"]*"', f'requires-python = "{limit}"', text))
    uv(project_env, root, "lock")
    edited = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}
    plan = tfr(project_env, root, "plan", "--offline", "--find-links", kit_index, "--find-links", extra)
    assert plan.code == 0, plan
    assert "your edits since generation 2 (pyproject.toml: was requires-python" in " ".join(plan.out.split()), plan.out
    second = tfr(project_env, root, "upgrade", "--offline", "--find-links", kit_index, "--find-links", extra, "--yes")
    assert second.code == 0, second
    assert f"tensorflow-cpu {landed} → 2.21.0" in second.out and "to generation 3 (tensorflow-cpu 2.21.0)" in second.out
    assert f'requires-python = "{limit}"' in (root / "pyproject.toml").read_text(), "the user's edit is kept"
    assert_uv_agrees(project_env, root)

    # rollback returns to the state just before that upgrade: generation 2's env with the edited files
    back = tfr(project_env, root, "rollback", "--yes")
    assert back.code == 0, back
    assert {n: (root / n).read_bytes() for n in edited} == edited
    assert_uv_agrees(project_env, root)
    saved = list((root / "..venv.tfrebuild" / "project-edits").rglob("pyproject.toml"))
    assert len(saved) == 1 and f'requires-python = "{limit}"' not in saved[0].read_text(), saved


def test_uv_rollback_over_hand_edits_shows_the_diff_refuses_and_force_saves(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    assert tfr(project_env, root, "upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes").code == 0
    edited = (root / "uv.lock").read_text() + "# my note\n"
    (root / "uv.lock").write_text(edited)
    refused = tfr(project_env, root, "rollback", "--yes")
    assert refused.code == 1 and "+# my note" in refused.err and "--force" in refused.err, refused
    assert (root / "uv.lock").read_text() == edited
    forced = tfr(project_env, root, "rollback", "--yes", "--force")
    assert forced.code == 0, forced
    assert [p.read_text() for p in (root / "..venv.tfrebuild" / "project-edits").rglob("uv.lock")] == [edited]
    assert_uv_agrees(project_env, root)


def test_uv_rollback_over_hand_edits_asks_with_the_diff(tmp_path, project_env, kit_index, monkeypatch):
    """On a terminal, rollback over hand edits shows the diff in its question; yes saves them, then rolls back."""
    from rebuild.commands import generations
    from rebuild.errors import UserError

    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    assert tfr(project_env, root, "upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes").code == 0
    edited = (root / "uv.lock").read_text() + "# my note\n"
    (root / "uv.lock").write_text(edited)
    for key in list(os.environ):
        if key not in project_env:
            monkeypatch.delenv(key)
    for key, value in project_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(root)
    asked: list[str] = []

    def answer(value: bool):
        return lambda question: asked.append(question) or value

    with pytest.raises(UserError, match="cancelled"):
        generations.rollback(root / ".venv", confirm=answer(False))
    assert "+# my note" in asked[0] and "project-edits" in asked[0], asked[0]
    assert (root / "uv.lock").read_text() == edited
    done = generations.rollback(root / ".venv", confirm=answer(True))
    assert done.to_generation == 1 and "# my note" not in (root / "uv.lock").read_text()
    assert [p.read_text() for p in (root / "..venv.tfrebuild" / "project-edits").rglob("uv.lock")] == [edited]


def test_uv_tensorflow_not_a_direct_dependency_add_it_as_advised(tmp_path, project_env, kit_index, make_venv):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    uv(project_env, root, "remove", "tensorflow-cpu")
    # in the env, not in the project's files
    uv(project_env, root, "pip", "install", "--find-links", kit_index, "tensorflow-cpu==2.15.1")
    refused = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert refused.code == 1, refused
    command = re.search(r"add it there with `([^`]+)`", " ".join(refused.err.split())).group(1)
    assert command.startswith("uv add "), command
    uv(project_env, root, *shlex.split(command)[1:])
    done = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert done.code == 0, done
    assert "tensorflow-cpu 2.15.1 → 2.18.0" in done.out, done.out
    assert_uv_agrees(project_env, root)


def test_requirement_files_env_holds_unlisted_packages_follow_the_advice(tmp_path, kit_env, kit_index, make_venv):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "requirements.in").write_text("tensorflow-cpu==2.15.1\nscipy==1.11.4\n")
    compile_cmd = ["pip", "compile", "requirements.in", "-o", "requirements.txt", "--python-version", "3.11"]
    env = dict(kit_env)
    done = subprocess.run(
        [*map(str, _uv_cmd()), *compile_cmd, "--offline", "--find-links", str(kit_index)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    venv = make_venv(folder / ".venv", ["-r", str(folder / "requirements.txt"), "pandas"])
    refused = run_cli(
        kit_env, "upgrade", "--env", venv, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes", cwd=folder
    )
    assert refused.code == 1, refused
    advice = _advice(refused.err, "the env holds")
    assert "add them to requirements.in and recompile requirements.txt" in advice, advice
    # Follow it: add pandas to the .in, recompile with the header's command, then upgrade.
    with open(folder / "requirements.in", "a") as fh:
        fh.write("pandas\n")
    header = (folder / "requirements.txt").read_text().splitlines()[1].lstrip("# ").split()
    assert header[:3] == ["uv", "pip", "compile"], header
    done = subprocess.run([str(_uv_cmd()[0]), *header[1:]], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    upgraded = run_cli(
        kit_env, "upgrade", "--env", venv, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes", cwd=folder
    )
    assert upgraded.code == 0, upgraded
    assert "tensorflow-cpu==2.18.0" in (folder / "requirements.in").read_text()
    assert "pandas==" in (folder / "requirements.txt").read_text()


def _uv_cmd() -> list[str]:
    from rebuild.util.uv import uv_bin

    return [uv_bin()]


@pytest.mark.network
def test_install_apart_as_advised_then_upgrade(tmp_path, kit_env, kit_index, make_venv):
    """tfrebuild installed into the env it would upgrade refuses and says how to install it apart; done so, the
    installed tfrebuild upgrades that env."""

    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "numpy==1.24.3"])
    # the mistake: tfrebuild installed into the env it upgrades (its dependencies from the index)
    wheel_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    put = subprocess.run(
        [_uv_cmd()[0], "pip", "install", "--python", str(env / "bin" / "python"), str(ROOT)],
        env=wheel_env,
        capture_output=True,
        text=True,
    )
    assert put.returncode == 0, put.stderr
    refused = subprocess.run(
        [
            str(env / "bin" / "python"),
            "-m",
            "rebuild",
            "upgrade",
            "--env",
            str(env),
            "--to",
            "2.18",
            "--offline",
            "--find-links",
            str(kit_index),
            "--yes",
        ],
        env=dict(kit_env),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert refused.returncode == 1, refused
    advice = _advice(refused.stderr, "Install tfrebuild apart")
    command = re.search(r"`(python3 install\.py)`", advice).group(1)
    home, bindir = tmp_path / "home", tmp_path / "bin"
    bindir.mkdir()
    user = {**wheel_env, "HOME": str(home), "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "-c", f"cd {shlex.quote(str(ROOT))} && {command}"],
        env=user,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tool = bindir / "tfrebuild"
    upgraded = subprocess.run(
        [str(tool), "upgrade", "--env", str(env), "--to", "2.18", "--offline", "--find-links", str(kit_index), "--yes"],
        env={**kit_env, "HOME": str(home)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "to generation 2 (tensorflow-cpu 2.18.0)" in upgraded.stdout
