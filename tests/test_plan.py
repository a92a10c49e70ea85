"""End-to-end tests of ``tfrebuild plan`` against real venvs made from the kit's fake wheels.

Every plan runs the real CLI in a subprocess (``python -m rebuild plan --offline
--find-links <kit index>``) under ``kit_env`` (no user pip/uv configuration, no
network).  ``plan`` must never change anything, so the venvs are shared per module.

The expectations below follow from the fake universe in ``tests/kit/catalog.py``:

* TF 2.18.0 needs ``numpy>=1.26,<2.1``; scipy 1.11.4 needs ``numpy<1.28`` and breaks
  on NumPy 2; scipy 1.14.1 allows NumPy 2.  So the *minimal* strategy moves numpy
  1.24.3 -> 1.26.4 and keeps scipy, while *eager* takes numpy 2.0.2 and scipy 1.14.1.
* TF 2.15 requires tensorflow-estimator; 2.16 does not.
* tensorflow-text exists only for TF 2.15, 2.18 and 2.21, so with tensorflow-text
  requested, TF 2.20 cannot be installed and 2.18.0 is the newest that resolves.
* tensorflow-cpu 2.21.0 has wheels for CPython 3.10-3.13 only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from tests.kit.cli import CliRun as Run, run_cli, tree_state

from tests.kit import create_venv, find_python, releases

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


# --------------------------------------------------------------------------- helpers


def siblings(env: Path) -> list[str]:
    return sorted(os.listdir(env.parent))


@pytest.fixture
def plan_cli(kit_env: dict[str, str], kit_index: Path, tmp_path: Path) -> Callable[..., Run]:
    """``plan_cli(env, *args, env_overrides=None)``: run ``tfrebuild plan --offline --find-links <kit>``."""

    def _run(env: Path | str, *args: str, env_overrides: dict[str, str | None] | None = None) -> Run:
        return run_cli(
            kit_env,
            "plan",
            "--env",
            env,
            "--offline",
            "--find-links",
            kit_index,
            *args,
            overrides=env_overrides,
            cwd=tmp_path,
        )

    return _run


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory, kit_index: Path, kit_env: dict[str, str]) -> Callable[..., Path]:
    """``shared_venv(packages, creator="uv", python=None)``: a venv shared by the module (never modified).

    Each venv lives alone in its own folder, so "nothing was created beside it" can be checked.
    """
    made: dict[tuple, Path] = {}

    def _get(packages: list[str], creator: str = "uv", python: str | None = None) -> Path:
        key = (tuple(packages), creator, python)
        if key not in made:
            interpreter = None
            if python is not None:
                interpreter = find_python(python)
                if interpreter is None:
                    pytest.skip(f"Python {python} is not installed (looked in pyenv versions and PATH)")
            path = tmp_path_factory.mktemp(f"plan-{creator}") / "tfenv"
            made[key] = create_venv(
                path, list(packages), find_links=kit_index, creator=creator, python=interpreter, env=dict(kit_env)
            )
        return made[key]

    return _get


def changes_by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["plan"]["changes"]}


def assert_clean_error(res: Run, *fragments: str) -> None:
    assert res.code != 0, res.out
    assert "error:" in res.err, res.err
    assert "hint:" in res.err, res.err
    assert "Traceback" not in res.err, res.err
    for fragment in fragments:
        assert fragment in res.err, (fragment, res.err)


@pytest.fixture(scope="module")
def classic_uv(shared_venv) -> Path:
    return shared_venv(CLASSIC, "uv")


@pytest.fixture(scope="module")
def classic_pip(shared_venv) -> Path:
    return shared_venv(CLASSIC, "venv")


@pytest.fixture(scope="module")
def plans(kit_env: dict[str, str], kit_index: Path, classic_uv: Path, classic_pip: Path) -> Callable[..., dict]:
    """Memoised JSON plans: ``plans("uv"|"pip", "--to", "2.18", ...)`` (each resolution runs once)."""
    cache: dict[tuple, dict] = {}
    envs = {"uv": classic_uv, "pip": classic_pip}

    def _get(which: str, *args: str) -> dict:
        key = (which, args)
        if key not in cache:
            run = run_cli(
                kit_env, "plan", "--env", envs[which], "--offline", "--find-links", kit_index, "--json", *args
            )
            assert run.code == 0, run.err
            cache[key] = run.json()
        return cache[key]

    return _get


# --------------------------------------------------------------------------- plan changes nothing


@pytest.mark.parametrize("creator", ["uv", "venv"])
@pytest.mark.slow
def test_plan_changes_nothing(creator: str, shared_venv, plan_cli) -> None:
    env = shared_venv(CLASSIC, creator)
    before, around = tree_state(env), siblings(env)
    # Bytecode writes would show up here: do not let the test environment suppress them.
    res = plan_cli(env, "--to", "2.18", env_overrides={"PYTHONDONTWRITEBYTECODE": None})
    assert res.code == 0, res.err
    assert "Nothing was changed" in res.out
    assert "↑" in res.out and not [ln for ln in res.out.splitlines() if ln != ln.rstrip()], (
        "a piped line ends in spaces"
    )
    assert tree_state(env) == before, "plan modified the environment"
    assert siblings(env) == around == ["tfenv"], "plan created something beside the environment"
    assert not (env.parent / ".tfenv.tfrebuild").exists()


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("which", ["uv", "pip"])
def test_minimal_strategy_solves_the_classic_conflict(which: str, plans) -> None:
    doc = plans(which, "--to", "2.18")
    assert doc["ok"] is True
    plan = doc["plan"]
    assert (plan["tf_distribution"], plan["tf_old"], plan["tf_new"]) == ("tensorflow-cpu", "2.15.1", "2.18.0")
    assert plan["strategy"] == "minimal" and plan["downgrade"] is False
    changes = changes_by_name(doc)
    assert changes["tensorflow-cpu"]["kind"] == "upgrade"
    assert changes["tensorflow-cpu"]["reason"] == "the upgrade target"
    numpy = changes["numpy"]
    assert (numpy["old"], numpy["new"], numpy["kind"]) == ("1.24.3", "1.26.4", "upgrade"), numpy
    assert "tensorflow-cpu" in numpy["reason"], numpy
    assert "scipy" not in changes, "scipy 1.11.4 works with numpy 1.26.4 and must be kept"
    assert "pandas" not in changes
    # Whether numpy needed the second, capping pass depends on uv's preferences; if it did, say so.
    if "numpy" in plan["capped"]:
        assert any("numpy" in note and "eager" in note for note in plan["notes"]), plan["notes"]


def test_requested_changes_come_first(plans) -> None:
    # A pip-made env: only what was installed by name is requested.
    doc = plans("pip", "--to", "2.18")
    changes = doc["plan"]["changes"]
    flags = [c["requested"] for c in changes]
    assert flags == sorted(flags, reverse=True), [(c["name"], c["requested"]) for c in changes]
    assert changes[0]["name"] == "tensorflow-cpu"
    by_name = changes_by_name(doc)
    assert by_name["numpy"]["requested"] is True
    assert by_name["keras"]["requested"] is False
    assert by_name["numpy"]["new"] == "1.26.4"
    assert "scipy" not in by_name


def test_reasons_do_not_name_the_constraints_file(plans) -> None:
    doc = plans("pip", "--to", "2.18")  # numpy is requested there, and capped below 2 by the second pass
    assert "numpy" in doc["plan"]["capped"]
    numpy = changes_by_name(doc)["numpy"]
    parents = [p.strip() for p in numpy["reason"].split(" by ", 1)[-1].split(",")]
    assert "-c" not in parents, numpy


def test_eager_strategy_moves_further(plans) -> None:
    minimal = plans("pip", "--to", "2.18")
    eager = plans("pip", "--to", "2.18", "--strategy", "eager")
    assert eager["plan"]["strategy"] == "eager"
    assert eager["plan"]["tf_new"] == minimal["plan"]["tf_new"] == "2.18.0"
    changes = changes_by_name(eager)
    # TF 2.18 allows numpy < 2.1, so eager takes the newest 2.0.x, and scipy 1.14.1 (built for NumPy 2).
    assert changes["numpy"]["new"] == "2.0.2", changes["numpy"]
    assert changes["scipy"]["new"] == "1.14.1", changes.get("scipy")
    assert eager["plan"]["capped"] == []
    as_set = lambda doc: {(c["name"], c["new"]) for c in doc["plan"]["changes"]}  # noqa: E731
    assert as_set(eager) != as_set(minimal)


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("to, expected", [("latest", "2.21.0"), ("2.16", "2.16.1"), ("2.18.0", "2.18.0")])
def test_target_selection(to: str, expected: str, plans) -> None:
    plan = plans("pip", "--to", to)["plan"]
    assert plan["tf_new"] == expected
    assert plan["target"] == to
    assert plan["python_new"].startswith("3.11.")
    assert plan["downgrade"] is False
    assert not any("downgrade" in n for n in plan["notes"])


def test_downgrade_is_allowed_and_noted(shared_venv, plan_cli) -> None:
    env = shared_venv(["tensorflow-cpu==2.16.1"], "uv")
    res = plan_cli(env, "--to", "2.15.1", "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    assert (plan["tf_old"], plan["tf_new"], plan["downgrade"]) == ("2.16.1", "2.15.1", True)
    assert any("downgrade" in note for note in plan["notes"]), plan["notes"]
    tf = changes_by_name(res.json())["tensorflow-cpu"]
    assert tf["kind"] == "downgrade"
    text = plan_cli(env, "--to", "2.15.1")
    assert text.code == 0 and "downgrade" in text.out


def test_packages_no_longer_required_are_removed(plans) -> None:
    # pip-made: tensorflow-estimator is a dependency, not a requested package.
    doc = plans("pip", "--to", "2.16")
    est = changes_by_name(doc)["tensorflow-estimator"]
    assert (est["old"], est["new"], est["kind"]) == ("2.15.0", None, "remove"), est
    assert "no longer required" in est["reason"], est
    assert "tensorflow-cpu" in est["reason"], est


def test_already_at_target_has_no_changes(shared_venv, plan_cli) -> None:
    env = shared_venv(["tensorflow-cpu==2.16.1"], "uv")
    res = plan_cli(env, "--to", "2.16", "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    assert plan["changes"] == []
    assert any("already at 2.16.1" in n for n in plan["notes"]), plan["notes"]


# --------------------------------------------------------------------------- cannot be done


def _newest_tf_with_tftext(below: str, above: str, python_tag: str = "cp311") -> str | None:
    """From the catalog: the newest TF in (above, below) for which some tensorflow-text release fits."""
    candidates = []
    for tf in releases("tensorflow"):
        v = Version(tf.version)
        if not (Version(above) < v < Version(below)) or python_tag not in tf.tag:
            continue
        for text in releases("tensorflow-text"):
            spec = SpecifierSet(text.requires[0].split(";")[0].strip()[len("tensorflow") :])
            if python_tag in text.tag and v in spec:
                candidates.append(v)
    return str(max(candidates)) if candidates else None


def test_blocking_requested_package_is_named(shared_venv, plan_cli) -> None:
    env = shared_venv(["tensorflow==2.15.1", "tensorflow-text==2.15.0"], "uv")
    newest = _newest_tf_with_tftext(below="2.20.0", above="2.15.1")
    assert newest == "2.18.0"  # the catalog's shape this test relies on
    before = tree_state(env)
    res = plan_cli(env, "--to", "2.20")
    assert_clean_error(res, "tensorflow 2.20.0 cannot be installed", "tensorflow-text", "uv says", f"--to {newest}")
    # The companion is named with what the index has for it: no release accepts 2.20.0.
    assert "no release of tensorflow-text on the index accepts 2.20.0" in res.err
    assert res.code == 1
    assert tree_state(env) == before
    assert siblings(env) == ["tfenv"]


def test_blocking_constraint_is_named(shared_venv, plan_cli, tmp_path: Path, kit_env: dict[str, str]) -> None:
    env = shared_venv(CLASSIC, "venv")
    profile = tmp_path / "tf.toml"
    snap = run_cli(kit_env, "snapshot", "--env", env, "-o", profile, cwd=tmp_path, timeout=120)
    assert snap.returncode == 0, snap.stderr
    text = profile.read_text()
    assert "\n[constraints]\n" in text
    profile.write_text(text.replace("\n[constraints]\n", '\n[constraints]\nnumpy = "<1.26"\n', 1))
    # TF 2.18 needs numpy >= 1.26; 2.16.1 (numpy < 2) is the newest above 2.15.1 that still resolves.
    res = plan_cli(env, "--to", "2.18", "--profile", str(profile), "--json")
    assert res.code == 1, res.err
    doc = res.json()
    assert doc["ok"] is False
    assert "tensorflow-cpu 2.18.0 cannot be installed" in doc["error"]
    assert "numpy<1.26" in doc["error"]
    assert doc["details"].startswith("uv says")
    assert "--to 2.16.1" in doc["hint"]
    assert "relax the constraint `numpy<1.26` in the profile's [constraints]" in doc["hint"]
    assert_clean_error(res, "numpy<1.26", "uv says", "--to 2.16.1")


def test_error_text_keeps_square_brackets(shared_venv, plan_cli, tmp_path: Path, kit_env: dict[str, str]) -> None:
    env = shared_venv(CLASSIC, "venv")
    profile = tmp_path / "tf.toml"
    snap = run_cli(kit_env, "snapshot", "--env", env, "-o", profile, cwd=tmp_path, timeout=120)
    assert snap.returncode == 0, snap.stderr
    profile.write_text(profile.read_text().replace("\n[constraints]\n", '\n[constraints]\nnumpy = "<1.26"\n', 1))
    res = plan_cli(env, "--to", "2.18", "--profile", str(profile))
    assert res.code == 1
    assert "in the profile's [constraints]" in res.err, res.err


def test_no_wheel_for_the_interpreter(shared_venv, plan_cli, require_python) -> None:
    require_python("3.9")
    env = shared_venv(["tensorflow-cpu==2.15.1"], "uv", python="3.9")
    before = tree_state(env)
    res = plan_cli(env, "--to", "2.21.0")
    assert_clean_error(
        res,
        "tensorflow-cpu 2.21.0 has no wheel for Python 3.9",
        "It has wheels for Python 3.10, 3.11, 3.12, 3.13",
        "--python",
    )
    assert tree_state(env) == before
    assert siblings(env) == ["tfenv"]


def test_latest_on_an_old_interpreter_picks_what_has_wheels(shared_venv, plan_cli, require_python) -> None:
    require_python("3.9")
    env = shared_venv(["tensorflow-cpu==2.15.1"], "uv", python="3.9")
    res = plan_cli(env, "--to", "latest", "--json")
    assert res.code == 0, res.err
    assert res.json()["plan"]["tf_new"] == "2.20.0"  # 2.21.0 has no cp39 wheel


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--to", "banana"], ["'banana' is not a TensorFlow version"]),
        (["--to", "9.9"], ["No tensorflow-cpu release matches --to 9.9"]),
        (["--strategy", "weird"], ["Unknown strategy 'weird'"]),
    ],
)
def test_bad_arguments(args: list[str], fragments: list[str], classic_uv: Path, plan_cli) -> None:
    before, around = tree_state(classic_uv), siblings(classic_uv)
    res = plan_cli(classic_uv, *args)
    assert_clean_error(res, *fragments)
    assert res.out == ""
    assert tree_state(classic_uv) == before and siblings(classic_uv) == around


def test_bad_arguments_with_json(classic_uv: Path, plan_cli) -> None:
    res = plan_cli(classic_uv, "--to", "9.9", "--json")
    assert res.code != 0
    doc = res.json()
    assert doc["ok"] is False and "9.9" in doc["error"] and doc["hint"]


def test_env_that_does_not_exist(plan_cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "env"
    res = plan_cli(missing, "--to", "2.18")
    assert_clean_error(res, "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_folder_that_is_not_an_env(plan_cli, tmp_path: Path) -> None:
    folder = tmp_path / "parent" / "notenv"
    folder.mkdir(parents=True)
    (folder / "README").write_text("not a venv\n")
    res = plan_cli(folder, "--to", "2.18")
    assert_clean_error(res, "is not a Python environment")
    assert sorted(os.listdir(folder.parent)) == ["notenv"]
    assert os.listdir(folder) == ["README"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "does not exist"),
        ("schema = 1\n[constraints\n", "is not valid TOML"),
        ("schema = 99\n", "profile schema 99"),
        ("schema = 1\nbogus = 3\n", "is not a valid profile"),
        (b"\xff\xfe\x00garbage", "cannot be read"),
    ],
)
def test_bad_profile(content, fragment: str, classic_uv: Path, plan_cli, tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    if isinstance(content, bytes):
        profile.write_bytes(content)
    elif content is not None:
        profile.write_text(content)
    before = tree_state(classic_uv)
    res = plan_cli(classic_uv, "--to", "2.18", "--profile", str(profile))
    assert_clean_error(res, fragment)
    assert tree_state(classic_uv) == before
    assert siblings(classic_uv) == ["tfenv"]


@pytest.mark.parametrize("kind", ["folder", "no-permission"])
def test_unreadable_profile(kind: str, classic_uv: Path, plan_cli, tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    if kind == "folder":
        profile.mkdir()
    else:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root reads any file")
        profile.write_text("schema = 1\n")
        profile.chmod(0)
    try:
        res = plan_cli(classic_uv, "--to", "2.18", "--profile", str(profile))
    finally:
        if kind != "folder":
            profile.chmod(0o644)
    assert_clean_error(res, "cannot be read")
    assert siblings(classic_uv) == ["tfenv"]


# --------------------------------------------------------------------------- output


def test_json_is_one_document(classic_uv: Path, plan_cli) -> None:
    res = plan_cli(classic_uv, "--to", "2.18", "--json")
    assert res.code == 0, res.err
    doc = res.json()  # the whole of stdout parses: nothing else is printed there
    assert doc["ok"] is True
    plan = doc["plan"]
    for key in (
        "env",
        "tf_distribution",
        "tf_old",
        "tf_new",
        "target",
        "strategy",
        "changes",
        "notes",
        "capped",
        "python_old",
        "python_new",
    ):
        assert key in plan, key
    assert plan["env"] == str(classic_uv)
    assert plan["changes"], "the classic env has changes to make"
    for change in plan["changes"]:
        assert set(change) == {"name", "old", "new", "kind", "requested", "reason", "replaces"}
        assert change["kind"] in ("upgrade", "downgrade", "add", "remove")
    assert res.err == "", "--json prints no progress"


def test_human_output(classic_pip: Path, plan_cli) -> None:
    res = plan_cli(classic_pip, "--to", "2.18")
    assert res.code == 0, res.err
    assert "tensorflow-cpu 2.15.1 → 2.18.0" in res.out
    assert "1.24.3 → 1.26.4" in res.out
    assert "tensorflow-estimator" in res.out and "no longer required" in res.out
    assert "Nothing was changed" in res.out
    assert "Traceback" not in res.err
