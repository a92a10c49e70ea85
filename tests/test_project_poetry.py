"""Poetry projects (issue 13, point 3): upgraded through Poetry's own commands, rolled back with their files.

A real Poetry (installed from PyPI once per session into a throwaway venv, with this machine's own pip
configuration; the tests skip with the reason when that fails) drives a real project whose only package
source is the kit's wheels served as a PEP 503 index on 127.0.0.1 (``[[tool.poetry.source]]``,
priority primary: Poetry then never asks PyPI, and a dead proxy for everything but 127.0.0.1 makes sure).
The env is the project's in-project ``.venv`` filled by ``poetry install``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.kit.cli import run_cli
from tests.kit.simple_index import SimpleIndex

from rebuild.project.requirement import edit_toml_string, move_poetry_constraint, poetry_specifiers

PY311 = "3.11"


# --- the Poetry constraint mover (no Poetry needed) -------------------------------------------


@pytest.mark.parametrize(
    "constraint, new, moved",
    [
        ("2.15.1", "2.18.0", "2.18.0"),  # a pin stays a pin
        ("==2.15.1", "2.18.0", "==2.18.0"),
        ("^2.15", "2.18.0", "^2.15"),  # a caret that admits it stays
        ("^2.15.1", "3.1.0", "^3.1.0"),
        ("~2.15", "2.18.0", "~2.18"),
        ("~2.15.1", "2.18.0", "~2.18.0"),
        ("~=2.15.0", "2.18.0", "~=2.18.0"),
        (">=2.15,<2.16", "2.18.0", ">=2.15,<2.19"),
        (">=2.15, <2.16", "2.18.0", ">=2.15, <2.19"),
        ("2.15.*", "2.18.0", "2.18.*"),
        ("*", "2.18.0", "*"),
        ("^0.3", "0.4.1", "^0.4"),
        ("2.15.1 || 2.16.1", "2.18.0", "2.15.1 || 2.18.0"),
    ],
)
def test_poetry_constraint_moves_as_little_as_possible(constraint, new, moved):
    assert move_poetry_constraint(constraint, new) == moved


@pytest.mark.parametrize(
    "constraint, specs",
    [
        ("^2.15", [">=2.15,<3"]),
        ("^0.3.1", [">=0.3.1,<0.4"]),
        ("^0.0.3", [">=0.0.3,<0.0.4"]),
        ("~2", [">=2,<3"]),
        ("~2.15.1", [">=2.15.1,<2.16"]),
        ("2.15.1", ["==2.15.1"]),
        (">= 2.15 < 2.16", [">=2.15,<2.16"]),
        ("*", [""]),
        ("^1 || ^2", [">=1,<2", ">=2,<3"]),
    ],
)
def test_poetry_constraints_read_as_poetry_does(constraint, specs):
    assert poetry_specifiers(constraint) == specs


def test_only_the_tensorflow_value_changes_in_the_text():
    text = (
        '[tool.poetry.dependencies]\npython = "^3.11"\n# keep "2.15.1" here\nother = "2.15.1"\n'
        'tensorflow-cpu = { version = "2.15.1", source = "kit" }  # pinned\n'
    )
    out = edit_toml_string(text, ("tool", "poetry", "dependencies", "tensorflow-cpu", "version"), "2.15.1", "2.18.0")
    assert out == text.replace('{ version = "2.15.1"', '{ version = "2.18.0"')
    assert tomllib.loads(out)["tool"]["poetry"]["dependencies"]["other"] == "2.15.1"


# --- a real Poetry ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def poetry_exe(tmp_path_factory) -> Path:
    """Poetry from PyPI in a throwaway venv (the machine's own pip configuration), or skip with the reason."""
    venv = tmp_path_factory.mktemp("poetry-tool") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "poetry"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    exe = venv / "bin" / "poetry"
    if done.returncode != 0 or not exe.exists():
        pytest.skip(
            "Poetry could not be installed from the package index (unreachable?): "
            + (done.stderr.strip().splitlines() or ["no output"])[-1]
        )
    return exe


@pytest.fixture(scope="session")
def kit_simple(kit_index: Path):
    with SimpleIndex(kit_index) as index:
        yield index


@pytest.fixture(scope="session")
def poetry_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("poetry-home")


@pytest.fixture
def penv(kit_env, poetry_exe: Path, poetry_home: Path) -> dict[str, str]:
    """kit_env for Poetry and tfrebuild: Poetry's own config, cache and data private to the session; every
    host but 127.0.0.1 behind a dead proxy (so neither Poetry nor uv can reach PyPI)."""
    env = dict(kit_env)
    env.update(
        POETRY=str(poetry_exe),
        POETRY_CONFIG_DIR=str(poetry_home / "config"),
        POETRY_CACHE_DIR=str(poetry_home / "cache"),
        POETRY_DATA_DIR=str(poetry_home / "data"),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    for key in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        env.pop(key, None)
    return env


def poetry(penv, root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [penv["POETRY"], *args, "--no-ansi", "--no-interaction"],
        cwd=root,
        env=penv,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"poetry {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def _dependencies(style: str, tf: str) -> str:
    if style == "pep621":
        return (
            f'[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11,<3.12"\n'
            f'dependencies = ["{tf}", "scipy>=1.11"]\n\n[tool.poetry]\npackages = [{{include = "demo"}}]\n'
        )
    return (
        f'[tool.poetry]\nname = "demo"\nversion = "0.1.0"\ndescription = ""\nauthors = ["A <a@example.com>"]\n'
        f'packages = [{{include = "demo"}}]\n\n[tool.poetry.dependencies]\npython = ">=3.11,<3.12"\n{tf}\n'
        'scipy = "^1.11"  # the user\'s comment stays\n'
    )


@pytest.fixture
def project(tmp_path: Path, penv, kit_simple, make_venv):
    """``project(style, tf, creator)``: a Poetry project with TensorFlow 2.15.1 installed by `poetry install`
    into its in-project .venv, made on the kit's Python 3.11 first by ``creator`` (``"poetry"``: `poetry env
    use`; else the kit's ``make_venv``); ``then``: the TensorFlow entry written after the install."""

    def _make(style: str, tf: str, creator: str = "uv", *, then: str = "") -> Path:
        root = tmp_path / "demo"
        (root / "demo").mkdir(parents=True)
        (root / "demo" / "__init__.py").write_text("import tensorflow\nVALUE = 1\n")
        (root / "pyproject.toml").write_text(
            _dependencies(style, tf) + f'\n[[tool.poetry.source]]\nname = "kit"\nurl = "{kit_simple.url}"\n'
            'priority = "primary"\n\n[build-system]\nrequires = ["poetry-core>=1.0.0"]\n'
            'build-backend = "poetry.core.masonry.api"\n'
        )
        if creator == "poetry":  # Poetry's own virtualenv (pip, no setuptools), in the project
            from tests.kit import find_python

            poetry(penv, root, "env", "use", str(find_python(PY311)))
            assert (root / ".venv" / "pyvenv.cfg").is_file()
        else:
            make_venv(root / ".venv", python=PY311, creator=creator)
        poetry(penv, root, "lock")
        poetry(penv, root, "install")
        if then:  # a range written after the install: `poetry lock` keeps the locked 2.15.1
            (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text().replace(tf, then))
            poetry(penv, root, "lock")
            _agrees(penv, root)
        assert _tf(root) == "2.15.1"
        return root

    return _make


def _tf(root: Path) -> str:
    out = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-c", "import tensorflow, demo; print(tensorflow.__version__)"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _locked(root: Path) -> dict[str, str]:
    data = tomllib.loads((root / "poetry.lock").read_text())
    return {p["name"]: p["version"] for p in data["package"]}


def _agrees(penv, root: Path) -> None:
    """The user's next `poetry sync` changes nothing: every locked package is already installed."""
    done = poetry(penv, root, "sync", "--dry-run")
    assert "0 installs, 0 updates, 0 removals" in done.stdout, done.stdout


def tfr(penv, root: Path, *args):
    return run_cli(penv, *args, cwd=root, timeout=600)


@pytest.mark.network
def test_pinned_poetry_project_upgrades_and_rolls_back_with_its_files(project, penv, kit_simple):
    root = project("poetry1", 'tensorflow-cpu = "2.15.1"', creator="poetry")
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "poetry.lock")}
    locked_before = _locked(root)

    plan = tfr(penv, root, "plan", "--env", ".venv", "--offline", "--to", "2.18.0", "--json")
    assert plan.code == 0, str(plan)
    shown = plan.json()["plan"]["project"]
    assert shown["manager"] == "poetry" and shown["drivable"], shown
    assert shown["new_requirement"] == 'tensorflow-cpu = "2.18.0"' and "poetry.lock" in shown["text"]
    assert "demo" not in {c["name"] for c in plan.json()["plan"]["changes"]}  # the project's own package

    asked = len(kit_simple.requests)
    up = tfr(penv, root, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes")
    assert up.code == 0, str(up)
    assert len(kit_simple.requests) > asked  # Poetry locked and installed from the kit index
    assert "poetry sync" in up.text
    assert (root / "pyproject.toml").read_text() == before["pyproject.toml"].decode().replace(
        'tensorflow-cpu = "2.15.1"', 'tensorflow-cpu = "2.18.0"'
    )
    locked = _locked(root)
    assert locked["tensorflow-cpu"] == "2.18.0"
    assert locked["scipy"] == locked_before["scipy"] and locked["numpy"] == locked_before["numpy"]  # kept locked
    assert _tf(root) == "2.18.0"
    _agrees(penv, root)
    assert list((root / ".venv").glob("lib/python*/site-packages/pip-*.dist-info"))  # pip stays, as it was
    assert not list(root.parent.glob(".demo.tfrebuild-*"))  # the work folder went

    back = tfr(penv, root, "rollback", "--env", ".venv", "--yes")
    assert back.code == 0, str(back)
    assert {n: (root / n).read_bytes() for n in before} == before
    assert "poetry.lock and the env match" in back.text, str(back)
    assert _tf(root) == "2.15.1"
    _agrees(penv, root)


@pytest.mark.network
def test_caret_range_stays_and_the_lock_moves_to_the_planned_version(project, penv):
    root = project("poetry1", 'tensorflow-cpu = "2.15.1"', then='tensorflow-cpu = "^2.15"')
    text = (root / "pyproject.toml").read_bytes()
    up = tfr(penv, root, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes")
    assert up.code == 0, str(up)
    assert (root / "pyproject.toml").read_bytes() == text  # ^2.15 admits 2.18.0: the user's range stays
    assert _locked(root)["tensorflow-cpu"] == "2.18.0"  # not the newest (2.21.0) the caret allows
    assert _tf(root) == "2.18.0"
    _agrees(penv, root)
    check = poetry(penv, root, "check", "--lock", check=False)  # the lock's content hash is pyproject.toml's
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.network
def test_pep621_project_range_moves_and_a_hand_edited_lock_is_refused(project, penv):
    root = project("pep621", "tensorflow-cpu>=2.15,<2.16")
    up = tfr(penv, root, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes")
    assert up.code == 0, str(up)
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"] == [
        "tensorflow-cpu>=2.15,<2.19",
        "scipy>=1.11",
    ]
    _agrees(penv, root)

    lock = root / "poetry.lock"
    edited = lock.read_text() + "# my edit\n"
    lock.write_text(edited)
    refused = tfr(penv, root, "rollback", "--env", ".venv", "--yes")
    assert refused.code != 0 and "poetry.lock" in refused.text and "poetry lock && poetry sync" in refused.text, str(
        refused
    )
    assert lock.read_text() == edited and _tf(root) == "2.18.0"  # nothing changed

    forced = tfr(penv, root, "rollback", "--env", ".venv", "--yes", "--force")
    assert forced.code == 0, str(forced)
    assert _tf(root) == "2.15.1" and "# my edit" not in lock.read_text()
    _agrees(penv, root)


@pytest.mark.slow
def test_without_poetry_the_project_is_not_driven(tmp_path: Path, kit_env, make_venv):
    """No `poetry` (not on PATH, $POETRY names nothing): the plan says why and upgrade refuses unless --force."""
    root = tmp_path / "demo"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.poetry]\nname = "demo"\nversion = "0.1.0"\n\n'
        '[tool.poetry.dependencies]\npython = "^3.11"\ntensorflow-cpu = "2.15.1"\n'
    )
    (root / "poetry.lock").write_text("# a lock\n")
    make_venv(root / ".venv", ["tensorflow-cpu==2.15.1"], python=PY311)
    env = dict(kit_env, POETRY=str(tmp_path / "no-poetry"))
    env["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "poetry").exists())
    plan = run_cli(env, "plan", "--env", ".venv", "--offline", "--to", "2.18.0", "--json", cwd=root)
    assert plan.code == 0, str(plan)
    shown = plan.json()["plan"]["project"]
    assert shown["manager"] == "poetry" and not shown["drivable"] and "install Poetry" in shown["fix"], shown
    up = run_cli(env, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes", cwd=root)
    assert up.code == 1 and "no `poetry` was found" in up.text, str(up)
    assert (root / "pyproject.toml").read_text().count('"2.15.1"') == 1


@pytest.mark.network
def test_install_poetry_as_advised_then_upgrade(project, penv, poetry_exe):
    """Advice followed: without Poetry the upgrade names how to install it and where tfrebuild looks; Poetry
    installed that way (the session's ``poetry_exe`` is `pip install poetry` in a venv of its own) and named in
    $POETRY, the same upgrade succeeds."""
    root = project("pep621", "tensorflow-cpu==2.15.1")
    without = dict(penv, POETRY=str(root / "no-poetry"))
    without["PATH"] = os.pathsep.join(p for p in penv["PATH"].split(os.pathsep) if not (Path(p) / "poetry").exists())
    refused = tfr(without, root, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes")
    assert refused.code == 1 and "/bin/pip install poetry" in refused.text and "$POETRY" in refused.text, str(refused)
    assert "resolve:" not in refused.text, "refused before anything was resolved"
    done = tfr(
        dict(without, POETRY=str(poetry_exe)), root, "upgrade", "--env", ".venv", "--offline", "--to", "2.18.0", "--yes"
    )
    assert done.code == 0, str(done)
    assert _tf(root) == "2.18.0"
    _agrees(penv, root)
