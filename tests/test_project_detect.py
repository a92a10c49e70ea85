"""Issue 13, point 1: which tool owns an env, and a TensorFlow requirement moved in the user's style.

Real folders on disk (the env is a directory with a ``pyvenv.cfg``; detection reads only the files around it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rebuild.project.detect import detect
from rebuild.project.requirement import edit_pyproject, move_requirement


def env_in(folder: Path, name: str = ".venv") -> Path:
    env = folder / name
    (env / "bin").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return env


PYPROJECT = '[project]\nname = "p"\nversion = "0"\ndependencies = [\n    "tensorflow-cpu==2.15.1",\n]\n'


@pytest.mark.parametrize(
    "old,new",
    [
        ("tensorflow-cpu==2.15.1", "tensorflow-cpu==2.21.0"),
        ("tensorflow-cpu>=2.15,<2.16", "tensorflow-cpu>=2.15,<2.22"),
        ("tensorflow-cpu ~=2.15.0", "tensorflow-cpu ~=2.21.0"),
        ("tensorflow-cpu~=2.15", "tensorflow-cpu~=2.15"),  # admits 2.21: left as written
        (
            "tensorflow[and-cuda]==2.15.* ; sys_platform == 'linux'",
            "tensorflow[and-cuda]==2.21.* ; sys_platform == 'linux'",
        ),
        ("tensorflow-cpu>=2.15", "tensorflow-cpu>=2.15"),
        ("tensorflow-cpu (>=2.10, <2.16)", "tensorflow-cpu (>=2.10, <2.22)"),
        ("tensorflow-cpu!=2.21.0,>=2.10", "tensorflow-cpu>=2.10"),
        ("tensorflow-cpu<=2.15.1", "tensorflow-cpu<=2.21.0"),
    ],
)
def test_requirement_moves_as_little_as_it_must(old, new):
    assert move_requirement(old, "2.21.0") == new


def test_pyproject_edit_changes_that_string_only():
    text = PYPROJECT.replace("]\n", ']\n# keep: "tensorflow-cpu==2.15.1" in a comment is not a value\n', 1)
    out = edit_pyproject(PYPROJECT, "tensorflow-cpu==2.15.1", "tensorflow-cpu==2.21.0")
    assert out == PYPROJECT.replace("2.15.1", "2.21.0")
    with pytest.raises(Exception, match="more than that requirement"):
        edit_pyproject(
            text + '[tool.x]\nv = "tensorflow-cpu==2.15.1"\n', "tensorflow-cpu==2.15.1", "tensorflow-cpu==2.21.0"
        )


def test_uv_project_is_driven_and_its_lockless_and_linked_cousins_say_why(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT + "\n[tool.uv]\n")
    env = env_in(root)
    found = detect(env)
    assert found is not None and found.manager == "uv" and found.drivable and found.files == ("pyproject.toml",)
    assert found.requirement == "tensorflow-cpu==2.15.1"
    # a linked pyproject.toml: never written through
    real = tmp_path / "shared-pyproject.toml"
    os.replace(root / "pyproject.toml", real)
    os.symlink(real, root / "pyproject.toml")
    found = detect(env)
    assert found is not None and not found.drivable and "symbolic link" in found.fix
    # another env in the project folder is not the project's env
    assert detect(env_in(root, "other-env")) is None or detect(env_in(root, "x")).manager != "uv"


def test_requirement_files_name_tensorflow_itself_not_its_companions(tmp_path):
    env = env_in(tmp_path)
    (tmp_path / "requirements.txt").write_text("tensorflow-hub==0.16.1\ntensorflow-datasets\n# tensorflow==2.15.1\n")
    assert detect(env) is None
    (tmp_path / "requirements.txt").write_text("tensorflow-hub==0.16.1\ntensorflow-cpu==2.15.1  # pinned\n")
    found = detect(env)
    assert found is not None and found.manager == "requirements" and not found.drivable  # no .in to compile from


def test_conda_env_and_environment_yml(tmp_path):
    env = env_in(tmp_path, "tf")
    (tmp_path / "environment.yml").write_text("dependencies:\n  - python=3.11\n  - tensorflow-hub\n")
    assert detect(env) is None
    (tmp_path / "environment.yml").write_text("dependencies:\n  - python=3.11\n  - tensorflow=2.15\n")
    found = detect(env)
    assert found is not None and found.manager == "conda" and not found.drivable and "conda env update" in found.reverts
    (env / "conda-meta").mkdir()
    found = detect(env)
    assert found.manager == "conda" and "conda-meta" in found.reverts
