"""Issue 13: a uv project's env is upgraded together with its pyproject.toml and uv.lock, and rolled back with them.

Real uv projects made with ``uv init`` (an app without a build system, and a packaged project with
``uv_build``) and ``uv add`` against the kit's wheels, which each project names in its own
``[tool.uv]`` (``no-index``, ``find-links``) as a project with a local index does. uv runs with the
project's configuration (``UV_NO_CONFIG`` is not set, as on a user's machine) and offline.
After tfrebuild, the project's own tool is the judge: ``uv sync --locked --check`` and
``uv run --locked`` must agree with the env and change nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.kit.venvs import find_python, uv_bin

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kit's wheels are Linux wheels")

PY = "3.11"


@pytest.fixture
def project_env(kit_env) -> dict[str, str]:
    """uv as a user runs it in a project: its own config read (no UV_NO_CONFIG, no UV_FIND_LINKS), offline."""
    env = {k: v for k, v in kit_env.items() if k not in ("UV_NO_CONFIG", "UV_FIND_LINKS")}
    env["UV_OFFLINE"] = "1"
    return env


def uv(env, cwd, *args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([uv_bin(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"uv {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return done


def git(cwd, *args) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        },
    ).stdout


def make_project(root: Path, env, kit_index, *, packaged: bool, tf: str = "tensorflow-cpu==2.15.1") -> Path:
    python = find_python(PY)
    if python is None:
        pytest.skip(f"Python {PY} is not installed here")
    kind = ["--package"] if packaged else ["--app", "--no-package"]
    uv(env, root.parent, "init", *kind, "--python", python, "--no-python-downloads", root.name)
    with open(root / "pyproject.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[tool.uv]\nno-index = true\nfind-links = ["{kit_index}"]\n')
    uv(env, root, "add", "--no-python-downloads", tf, "scipy==1.11.4")
    if packaged:
        (root / "src" / root.name / "__init__.py").write_text(
            "def main():\n    import scipy, tensorflow\n    print('project ok', tensorflow.__version__)\n"
        )
        uv(env, root, "sync", "--locked")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "the project as the user made it")
    return root


def tfr(env, cwd, *args, timeout=300):
    return run_cli(env, *args, cwd=cwd, timeout=timeout)


def tf_version_via_uv_run(env, root) -> tuple[str, str]:
    done = uv(env, root, "run", "--locked", "python", "-c", "import tensorflow as tf; print(tf.__version__)")
    return done.stdout.strip(), done.stderr


def assert_uv_agrees(env, root) -> None:
    check = uv(env, root, "sync", "--locked", "--check", check=False)
    assert check.returncode == 0 and "Would make no changes" in check.stderr, check.stderr


@pytest.mark.parametrize("packaged", [False, True], ids=["app", "packaged"])
def test_upgrade_moves_project_files_with_the_env_and_rollback_restores_them(
    tmp_path, project_env, kit_index, packaged
):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=packaged)
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}

    res = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert res.code == 0, res
    text = (root / "pyproject.toml").read_text()
    assert text == before["pyproject.toml"].decode().replace('"tensorflow-cpu==2.15.1"', '"tensorflow-cpu==2.18.0"')
    assert 'name = "tensorflow-cpu"\nversion = "2.18.0"' in (root / "uv.lock").read_text()
    assert_uv_agrees(project_env, root)
    version, err = tf_version_via_uv_run(project_env, root)
    assert version == "2.18.0" and "Installed" not in err and "Uninstalled" not in err, err
    if packaged:  # the project's own package is the user's code, installed from the project itself
        out = uv(project_env, root, "run", "--locked", "proj").stdout
        assert out.strip() == "project ok 2.18.0"
        pth = next((root / ".venv").glob("lib/python*/site-packages/proj.pth")).read_text().strip()
        assert pth == str(root / "src")
    # what git sees: the two files, nothing of tfrebuild's (state folder, work folder beside the project)
    assert sorted(git(root, "status", "--porcelain", "--untracked-files=all").splitlines()) == [
        " M pyproject.toml",
        " M uv.lock",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["proj"]

    hist = tfr(project_env, root, "history", "--json").json()
    projects = {r["number"]: r["project"] for r in hist["rows"]}
    assert "tensorflow-cpu==2.15.1" in projects[1] and "tensorflow-cpu==2.18.0" in projects[2], projects

    back = tfr(project_env, root, "rollback", "--yes")
    assert back.code == 0, back
    assert {n: (root / n).read_bytes() for n in before} == before
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert_uv_agrees(project_env, root)
    version, err = tf_version_via_uv_run(project_env, root)
    assert version == "2.15.1" and "Installed" not in err, err


@pytest.mark.slow
def test_range_moves_as_little_as_possible_and_plan_snapshot_status_name_the_project(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False, tf="tensorflow-cpu>=2.15,<2.16")
    plan = tfr(project_env, root, "plan", "--to", "2.18", "--offline", "--find-links", kit_index, "--json")
    assert plan.code == 0, plan
    project = plan.json()["plan"]["project"]
    assert project["manager"] == "uv" and project["drivable"] and project["root"] == str(root)
    assert project["new_requirement"] == "tensorflow-cpu>=2.15,<2.19"
    snap = tfr(project_env, root, "snapshot", "-o", tmp_path / "p.toml")
    assert snap.code == 0, snap
    import tomllib

    assert tomllib.loads((tmp_path / "p.toml").read_text())["project"] == {
        "manager": "uv",
        "root": str(root),
        "files": ["pyproject.toml", "uv.lock"],
        "drivable": True,
    }

    res = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert res.code == 0, res
    assert '"tensorflow-cpu>=2.15,<2.19"' in (root / "pyproject.toml").read_text()
    status = tfr(project_env, root, "status")
    assert "uv project at" in status.out and "files are generation 2's" in status.out, status
    # the project's tool changes the env behind tfrebuild's back: status says so
    uv(project_env, root, "pip", "install", "--python", root / ".venv" / "bin" / "python", "tensorflow-cpu==2.16.1")
    status = tfr(project_env, root, "status")
    assert "changed in place" in status.out and "tensorflow-cpu 2.16.1" in status.out, status


def test_hand_edited_lock_is_refused_unless_force(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    assert tfr(project_env, root, "upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes").code == 0
    edited = (root / "uv.lock").read_text() + "# my note\n"
    (root / "uv.lock").write_text(edited)
    env_inode = os.stat(root / ".venv").st_ino

    refused = tfr(project_env, root, "rollback", "--yes")
    assert refused.code == 1 and "uv.lock" in refused.err and "+# my note" in refused.err, refused
    assert (root / "uv.lock").read_text() == edited and os.stat(root / ".venv").st_ino == env_inode

    forced = tfr(project_env, root, "rollback", "--yes", "--force")
    assert forced.code == 0, forced
    assert "# my note" not in (root / "uv.lock").read_text()
    saved = list((root / "..venv.tfrebuild" / "project-edits").rglob("uv.lock"))
    assert [p.read_text() for p in saved] == [edited]
    assert_uv_agrees(project_env, root)


def test_a_kill_between_the_swap_and_the_project_files_is_finished_by_the_next_command(
    tmp_path, project_env, kit_index
):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    killed = run_cli(
        project_env,
        "upgrade",
        "--to",
        "2.18",
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        cwd=root,
        overrides={"TFREBUILD_FAULT": "upgrade.recorded"},
    )
    assert killed.code != 0, killed
    assert '"tensorflow-cpu==2.15.1"' in (root / "pyproject.toml").read_text()  # the env moved, the files not yet
    status = tfr(project_env, root, "status")
    assert status.code == 0, status
    assert '"tensorflow-cpu==2.18.0"' in (root / "pyproject.toml").read_text(), status
    assert_uv_agrees(project_env, root)
    assert tf_version_via_uv_run(project_env, root)[0] == "2.18.0"


@pytest.mark.slow
def test_a_check_failing_after_the_swap_puts_env_and_files_back(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    assert tfr(project_env, root, "upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes").code == 0
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}
    profile = root / "..venv.tfrebuild" / "generations" / "2" / "profile.toml"
    profile.write_text(profile.read_text().replace("commands = []", 'commands = ["exit 7"]'))

    res = tfr(
        project_env,
        root,
        "upgrade",
        "--to",
        "2.18",
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        "--allow-commands",
    )
    assert res.code == 1 and "swapped generation 2 back in and restored the project files" in res.err, res
    assert {n: (root / n).read_bytes() for n in before} == before
    assert tf_version_via_uv_run(project_env, root)[0] == "2.16.1"
    assert_uv_agrees(project_env, root)


def test_a_manager_tfrebuild_does_not_drive_is_refused_unless_force(tmp_path, kit_env, kit_index, make_venv):
    env = make_venv(tmp_path / "condaish", ["tensorflow-cpu==2.15.1"])
    (env / "conda-meta").mkdir()
    (env / "conda-meta" / "history").write_text("")
    plan = run_cli(kit_env, "plan", "--env", env, "--to", "2.18", "--offline", "--find-links", kit_index)
    assert plan.code == 0 and "conda environment" in plan.out and "refuses unless --force" in plan.out, plan
    inode = os.stat(env).st_ino
    refused = run_cli(kit_env, "upgrade", "--env", env, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert refused.code == 1 and "conda" in refused.err and "--force" in refused.err, refused
    assert "resolve:" not in refused.err, "the refusal does not depend on the plan: nothing is resolved before it"
    assert os.stat(env).st_ino == inode and not (tmp_path / "condaish.tfrebuild").exists()
    forced = run_cli(
        kit_env, "upgrade", "--env", env, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes", "--force"
    )
    assert forced.code == 0, forced


@pytest.mark.slow
def test_a_kill_during_the_swap_back_after_a_failed_check_leaves_env_and_files_together(
    tmp_path, project_env, kit_index
):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    assert tfr(project_env, root, "upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes").code == 0
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}
    profile = root / "..venv.tfrebuild" / "generations" / "2" / "profile.toml"
    profile.write_text(profile.read_text().replace("commands = []", 'commands = ["exit 7"]'))
    killed = run_cli(
        project_env,
        "upgrade",
        "--to",
        "2.18",
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        "--allow-commands",
        cwd=root,
        overrides={"TFREBUILD_FAULT": "rollback.recorded"},
    )
    assert killed.code != 0, killed
    status = tfr(project_env, root, "status")
    assert status.code == 0 and "files are generation 2's" in status.out, status
    assert {n: (root / n).read_bytes() for n in before} == before
    assert tf_version_via_uv_run(project_env, root)[0] == "2.16.1"
    assert [p.name for p in tmp_path.iterdir()] == ["proj"]  # the work folder of the killed run went too


def test_a_project_without_a_lock_gets_one_and_rollback_takes_it_away(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    (root / "uv.lock").unlink()
    git(root, "commit", "-qam", "no lock kept in git")
    assert tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes").code == 0
    assert 'version = "2.18.0"' in (root / "uv.lock").read_text()
    assert_uv_agrees(project_env, root)
    assert tfr(project_env, root, "rollback", "--yes").code == 0
    assert not (root / "uv.lock").exists()
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""


def test_extras_and_groups_the_env_holds_are_kept(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    uv(project_env, root, "add", "--optional", "frames", "pandas")
    uv(project_env, root, "add", "--group", "lint", "six")
    uv(project_env, root, "sync", "--locked", "--extra", "frames", "--group", "lint")
    assert tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes").code == 0
    names = {p.name.split("-")[0].lower() for p in (root / ".venv").glob("lib/python*/site-packages/*.dist-info")}
    assert {"pandas", "six", "tensorflow_cpu"} <= names, names
    check = uv(project_env, root, "sync", "--locked", "--check", "--extra", "frames", "--group", "lint", check=False)
    assert check.returncode == 0 and "Would make no changes" in check.stderr, check.stderr
    assert tfr(project_env, root, "rollback", "--yes").code == 0
    names = {p.name.split("-")[0].lower() for p in (root / ".venv").glob("lib/python*/site-packages/*.dist-info")}
    assert {"pandas", "six"} <= names, names


def test_an_env_outside_the_project_is_not_driven(tmp_path, project_env, kit_index):
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=False)
    outside = tmp_path / "elsewhere" / "env"
    outside.parent.mkdir()
    env = dict(project_env, UV_PROJECT_ENVIRONMENT=str(outside))
    uv(env, root, "sync", "--locked")
    plan = tfr(env, root, "plan", "--env", outside, "--to", "2.18", "--offline", "--find-links", kit_index, "--json")
    assert plan.code == 0, plan
    project = plan.json()["plan"]["project"]
    assert project["manager"] == "uv" and not project["drivable"] and "outside the project" in project["fix"]
    refused = tfr(
        env, root, "upgrade", "--env", outside, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes"
    )
    assert refused.code == 1 and "--force" in refused.err, refused


@pytest.mark.slow
def test_an_import_that_fails_only_after_the_swap_is_not_excused(tmp_path, project_env, kit_index):
    """The project's own package is imported at the path after the swap (the staged env does not hold it yet). It
    imports in the env as it is and fails with the new TensorFlow: a regression, so the env and the files go back.
    The current env's import checks answer for the env as it was (core/baseline.py: started before the swap), not
    for the tree at the path after it, where the import fails too and would be called "already failing"."""
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=True)
    (root / "src" / "proj" / "__init__.py").write_text(
        "import tensorflow\n"
        "if tensorflow.__version__.startswith('2.18'):\n"
        "    raise ImportError('proj does not work with TensorFlow 2.18 yet')\n"
    )
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}
    res = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    assert res.code == 1, res
    assert "proj does not work with TensorFlow 2.18 yet" in res.err and "already failing" not in res.err, res.err
    assert "back in and restored the project files" in res.err, res.err
    assert {n: (root / n).read_bytes() for n in before} == before
    assert tf_version_via_uv_run(project_env, root)[0] == "2.15.1"


@pytest.mark.slow
def test_an_import_already_failing_before_is_excused_after_the_swap_too(tmp_path, project_env, kit_index):
    """The same import at the path after the swap, failing in the env as it was too: "already failing before the
    upgrade", not held against the new env (the current env's import checks ran before the swap)."""
    root = make_project(tmp_path / "proj", project_env, kit_index, packaged=True)
    (root / "src" / "proj" / "__init__.py").write_text("raise ImportError('proj is broken with any TensorFlow')\n")
    res = tfr(project_env, root, "upgrade", "--to", "2.18", "--offline", "--find-links", kit_index, "--yes", "--json")
    assert res.code == 0, res
    after = [c for c in res.json()["after_swap"] if "already failing before the upgrade" in c["name"]]
    assert after and after[0]["ok"] and "proj" in after[0]["name"], res.json()["after_swap"]
    assert tf_version_via_uv_run(project_env, root)[0] == "2.18.0"
