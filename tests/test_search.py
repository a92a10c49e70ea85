"""Issue 20 on the kit: companions in step, Keras 2 kept where needed, requested packages never moved backwards
silently, the target search landing on the newest release whose checks pass (every try reported), op libraries
loaded, and imports that fail before the upgrade not held against it.

The fake companions (tests/kit/catalog.py ``_companion_releases``) bind to TensorFlow in each real way:
``tfops-demo`` ships an op library built for one TensorFlow minor (its import does not load it), ``protodep``
fails at import with a protobuf gencode/runtime mismatch in every env, ``tensorflow-addons`` ends before 2.16,
``tensorflow-model-optimization`` needs Keras 2, ``tensorflow-probability`` pairs by release notes and needs tf-keras
from 2.16, ``modelzoo`` 2.0 holds TensorFlow below 2.16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli

from rebuild.core import search
from rebuild.core.smoke import Check, Report

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

BASE = ["tensorflow-cpu==2.15.1", "numpy==1.26.4"]


@pytest.fixture
def cli(kit_env, kit_index: Path, tmp_path: Path):
    def _run(command: str, env: Path, *args: str):
        return run_cli(kit_env, command, "--env", env, "--offline", "--find-links", kit_index, *args, cwd=tmp_path)

    return _run


def _pins(venv_run, env: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    proc = venv_run(env, code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_search_lands_on_the_newest_release_whose_op_library_loads(make_venv, cli, venv_run, kit_env, tmp_path):
    """tfops-demo 1.0 (built for TF 2.15) imports under every TensorFlow, but its op library loads only with its own
    minor; 1.1 is built for 2.18. The default upgrade tries 2.21.0, moves tfops-demo forward, tries 2.21.0 again and
    2.20.0, and lands on 2.18.0, reporting every try; rollback is exact. The current env's reference import checks
    run once for the four tries (the env does not change between them): a loose module of the user's, carried and
    checked, records the interpreter prefix of every import of it."""
    env = make_venv(tmp_path / "envs" / "ops", BASE + ["tfops-demo==1.0.0"])
    seen = tmp_path / "seen.log"
    site = next(env.glob("lib/python*/site-packages"))
    (site / "seen.py").write_text(f"import sys\nwith open({str(seen)!r}, 'a') as f:\n    f.write(sys.prefix + '\\n')\n")
    before = _pins(venv_run, env)
    seen.unlink(missing_ok=True)
    res = cli("upgrade", env, "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["plan"]["tf_new"] == "2.18.0"
    tries = [(t["target"], t["passed"], t["built"]) for t in doc["tries"]]
    assert tries == [
        ("tensorflow-cpu 2.21.0", False, True),
        ("tensorflow-cpu 2.21.0", False, True),
        ("tensorflow-cpu 2.20.0", False, True),
        ("tensorflow-cpu 2.18.0", True, True),
    ], tries
    prefixes = seen.read_text().splitlines()
    assert prefixes.count(str(env)) == 1, prefixes  # the reference checks in the current env: once, not per try
    assert len(prefixes) >= 5, prefixes  # and each try's new env imported it too
    changes = [t["change"] for t in doc["tries"]]
    assert changes[:2] == ["", "tfops-demo moved forward from 1.0.0"]
    assert changes[2].startswith("next lower release (built for another TensorFlow/NumPy (ABI) at 2.21.0")
    for t in doc["tries"][:3]:
        assert t["why"].startswith(
            "built for another TensorFlow/NumPy (ABI): NotImplementedError: unable to open file: _demo_ops.so"
        ), t
    assert any(c["name"] == "op libraries load: tfops-demo" and c["ok"] for c in doc["checks"]), doc["checks"]
    after = _pins(venv_run, env)
    assert (after["tensorflow-cpu"], after["tfops-demo"]) == ("2.18.0", "1.1.0")
    assert (env.parent / f".{env.name}.tfrebuild" / "store.toml").is_file()  # landed: the first run's state kept
    proc = venv_run(
        env,
        "import glob, tensorflow as tf, tfops_demo, os; "
        "[tf.load_op_library(p) for p in glob.glob(os.path.dirname(tfops_demo.__file__) + '/*.so')]",
    )
    assert proc.returncode == 0, proc.stderr
    back = run_cli(kit_env, "rollback", "--env", env, "--yes")
    assert back.code == 0, back.err
    assert _pins(venv_run, env) == before


@pytest.mark.slow
def test_explicit_to_is_strict_and_names_the_class_and_a_command(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "strict", BASE + ["tfops-demo==1.0.0"])
    res = cli("upgrade", env, "--to", "2.21.0", "--yes")
    assert res.code == 1
    assert "op libraries load: tfops-demo failed" in res.err
    assert "Failure class: built for another TensorFlow/NumPy (ABI) (tfops-demo)" in res.err
    assert f"tfrebuild upgrade --env {env}" in res.err
    assert "unable to open file: _demo_ops.so" in res.err


@pytest.mark.slow
def test_import_failing_before_the_upgrade_does_not_block_it(make_venv, cli, venv_run, tmp_path):
    env = make_venv(tmp_path / "envs" / "pre", BASE + ["protodep==1.0.0"])
    res = cli("upgrade", env, "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    imports = [c for c in doc["checks"] if c["name"].startswith("imports:")]
    assert imports and imports[0]["ok"], doc["checks"]
    assert "already failing before the upgrade" in imports[0]["name"]
    assert "protodep" in imports[0]["name"] and "Gencode/Runtime" in imports[0]["output"]
    # the failed import is what ran the import checks in the current env: once, when the new env's check asked
    assert doc["overlap"]["baseline"]["ran"] is True and doc["overlap"]["baseline"]["seconds"] > 0
    assert _pins(venv_run, env)["tensorflow-cpu"] == "2.21.0"


@pytest.mark.slow
@pytest.mark.slow
def test_companions_move_in_step_and_keras2_is_kept_where_needed(make_venv, cli, tmp_path):
    """tensorflow-probability pairs with TF's minor by its release notes (no metadata) and needs tf-keras from 2.16;
    tensorflow-model-optimization 0.7.5 needs Keras 2: the plan keeps Keras 2 and says which package needs it."""
    env = make_venv(
        tmp_path / "envs" / "comp", BASE + ["tensorflow-probability==0.23.0", "tensorflow-model-optimization==0.7.5"]
    )
    res = cli("plan", env, "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    assert plan["tf_new"] == "2.21.0" and plan["keras_legacy"] is True
    assert plan["keras_needed_by"] == ["tensorflow-model-optimization"]
    assert any(
        n.startswith("Keras 2 kept (--keras auto): tensorflow-model-optimization need(s) it") for n in plan["notes"]
    )
    changes = {c["name"]: c for c in plan["changes"]}
    assert (changes["tensorflow-probability"]["old"], changes["tensorflow-probability"]["new"]) == ("0.23.0", "0.25.0")
    assert ">=0.25 pairs with TensorFlow 2.21" in changes["tensorflow-probability"]["reason"]
    assert changes["tensorflow-model-optimization"]["new"] == "0.8.0"
    assert "companion of TensorFlow" in changes["tensorflow-model-optimization"]["reason"]
    assert changes["tf-keras"]["new"] == "2.21.0"
    forced = cli("plan", env, "--keras", "3", "--json")
    assert forced.code == 0, forced.err
    assert forced.json()["plan"]["keras_legacy"] is False


@pytest.mark.slow
def test_end_of_life_companion_sets_the_landing_point(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "eol", BASE + ["tensorflow-addons==0.23.0"])
    res = cli("plan", env, "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    assert plan["tf_new"] == "2.15.1"
    assert "tensorflow-addons 0.23.0 works with TensorFlow below 2.16 only" in plan["landing_note"]
    strict = cli("plan", env, "--to", "2.21", "--json")
    assert strict.json()["plan"]["tf_new"] == "2.21.0"


@pytest.mark.slow
@pytest.mark.slow
def test_requested_package_is_not_moved_backwards_silently(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "back", BASE + ["modelzoo==2.0.0"])
    res = cli("plan", env, "--to", "2.21")
    assert res.code == 0, res.err
    assert "Moves backwards (requested by you): modelzoo 2.0.0 → 1.0.0" in res.out
    refused = cli("upgrade", env, "--to", "2.21", "--yes")
    assert refused.code == 1
    assert "moves requested package(s) backwards: modelzoo 2.0.0 → 1.0.0" in refused.err
    allowed = cli("upgrade", env, "--to", "2.21", "--yes", "--allow-downgrade", "--json")
    assert allowed.code == 0, allowed.err


def _report(output: str, name: str = "imports: x") -> Report:
    return Report("/env", [Check(name, False, 0.1, output)])


class _Plan:
    python_old = python_new = "3.11.9"
    keras_legacy = False
    changes: list = []

    class current:
        packages: list = []


@pytest.mark.parametrize(
    "output, kind",
    [
        ("import tensorflow_hub failed:\nModuleNotFoundError: No module named 'pkg_resources'", "pkg_resources"),
        (
            'import tensorflow_addons failed:\n  File "/e/site-packages/tensorflow_addons/__init__.py"\n'
            "ImportError: cannot import name 'keras_tensor' from 'keras.src.engine'",
            "keras2",
        ),
        ("import tensorflow_probability failed:\nModuleNotFoundError: No module named 'tf_keras'", "tf-keras"),
        (
            "import ydf failed:\ngoogle.protobuf.runtime_version.VersionError: Detected mismatched Protobuf "
            "Gencode/Runtime major versions",
            "protobuf",
        ),
        (
            "tensorflow-text: tf.load_op_library(_regex_split_ops.so) failed:\n  NotImplementedError: unable to open file",
            "abi",
        ),
        ("import scipy.linalg failed:\nImportError: numpy.core.multiarray failed to import", "abi"),
    ],
)
def test_failure_classes(output, kind):
    assert search.classify(_report(output), _Plan).kind == kind


def test_candidates_one_per_minor_newest_first_above_the_installed():
    listing = ["2.21.0", "2.20.0", "2.19.1", "2.19.0", "2.18.1", "2.16.2", "2.15.1", "2.22.0rc0"]
    assert search.candidates(listing, "2.21.0", "2.15.1") == [["2.20.0"], ["2.19.1", "2.19.0"], ["2.18.1"], ["2.16.2"]]


@pytest.mark.slow
def test_op_library_failing_before_the_upgrade_does_not_block_it(make_venv, cli, tmp_path):
    """tfops-demo 1.1.0 is built for TF 2.18: its library fails to load under 2.15 already (as tensorflow-addons'
    CUDA-linked ops do with tensorflow-cpu), so the same failure in the new env is not a regression."""
    env = make_venv(tmp_path / "envs" / "preops", BASE + ["tfops-demo==1.1.0"])
    res = cli("upgrade", env, "--to", "2.21", "--yes", "--json")
    assert res.code == 0, res.err
    (ops,) = [c for c in res.json()["checks"] if c["name"].startswith("op libraries load")]
    assert ops["ok"] and ops["name"] == "op libraries load: tfops-demo (1 already failing before the upgrade)", ops
    assert "_demo_ops.so already failed to load before the upgrade" in ops["output"]


def test_doctor_reports_an_import_already_failing(make_venv, kit_env, tmp_path):
    env = make_venv(tmp_path / "envs" / "doc", BASE + ["protodep==1.0.0"])
    res = run_cli(kit_env, "doctor", "--env", env, "--json")
    assert res.code == 1, res.err
    (f,) = [f for f in res.json()["findings"] if f["id"] == "import-failing"]
    assert f["severity"] == "error" and f["title"] == "import protodep fails in the env as it is"
    assert "Gencode/Runtime" in f["evidence"][0]
    assert not list(env.rglob("protodep/__pycache__")), "read-only: no bytecode written"


def test_python_move_moves_what_the_new_python_cannot_run(make_venv, cli, require_python, tmp_path):
    """typing_extensions 4.5.0 imports on 3.11 but not on 3.12 (a known-bad pair in the table): the minimal
    strategy would keep it; a move to 3.12 moves it, and says why."""
    require_python("3.12")
    env = make_venv(
        tmp_path / "envs" / "py", ["tensorflow-cpu==2.18.0", "numpy==1.26.4", "typing-extensions==4.5.0"], python="3.11"
    )
    res = cli("plan", env, "--python", "3.12", "--json")
    assert res.code == 0, res.err
    changes = {c["name"]: c for c in res.json()["plan"]["changes"]}
    assert (changes["typing-extensions"]["old"], changes["typing-extensions"]["new"]) == ("4.5.0", "4.12.2")
    assert "does not run on Python 3.12+" in changes["typing-extensions"]["reason"]
    same = cli("plan", env, "--json")
    assert "typing-extensions" not in {c["name"] for c in same.json()["plan"]["changes"]}


@pytest.mark.slow
def test_generation_reuse_compares_the_keras_mode(make_venv, cli, kit_env, venv_run, tmp_path):
    """tensorflow-probability brings tf-keras in from TF 2.16 either way, so a Keras 3 generation and a Keras 2 one
    pin the same set: after a rollback, `--keras legacy` must build a new generation, not switch to the Keras 3 one."""
    env = make_venv(tmp_path / "envs" / "reuse", BASE + ["tensorflow-probability==0.23.0"])
    first = cli("upgrade", env, "--keras", "3", "--yes", "--json")
    assert first.code == 0, first.err
    assert first.json()["plan"]["keras_legacy"] is False and first.json()["generation"] == 2
    back = run_cli(kit_env, "rollback", "--env", env, "--yes")
    assert back.code == 0, back.err
    again = cli("upgrade", env, "--keras", "legacy", "--yes", "--json")
    assert again.code == 0, again.err
    doc = again.json()
    assert doc["reused"] is None and doc["generation"] == 3, doc["notes"]
    proc = venv_run(env, "import tensorflow as tf; print(tf.keras.__name__)")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("tf_keras"), (proc.stdout, proc.stderr)


@pytest.mark.slow
def test_search_keeps_keras2_when_a_check_shows_keras2_symbols(make_venv, cli, venv_run, tmp_path):
    """kerasthing is not in the companion table; its import fails under Keras 3 with Keras 2 internals: the search
    classifies that, keeps Keras 2 at the same target and passes there."""
    env = make_venv(tmp_path / "envs" / "k2", BASE + ["kerasthing==1.0.0"])
    res = cli("upgrade", env, "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    tries = [(t["target"], t["passed"], t["change"]) for t in doc["tries"]]
    assert tries[0][:2] == ("tensorflow-cpu 2.21.0", False) and doc["tries"][0]["why"].startswith("needs Keras 2: ")
    assert tries[1] == (
        "tensorflow 2.21.0",
        True,
        "Keras 2 kept through tf-keras (--keras legacy) (kerasthing needs it)",
    )
    assert doc["plan"]["keras_legacy"] is True
    proc = venv_run(env, "import kerasthing, tensorflow as tf; print(tf.keras.__name__)")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("tf_keras"), (proc.stdout, proc.stderr)


def test_requested_package_moves_forward_rather_than_back(make_venv, cli, tmp_path):
    """As tf-models-official 2.12 + pyyaml 5 on the way to TF 2.20: modelgarden must move; its release for 2.21 needs
    yamlish 6, and the minimal strategy's cap (yamlish below its next major) would pick modelgarden 1.0.0, which
    pins nothing. The plan moves modelgarden forward and lets yamlish take its new major instead."""
    env = make_venv(tmp_path / "envs" / "fwd", BASE + ["modelgarden==2.15.0", "yamlish==5.4.1"])
    res = cli("plan", env, "--to", "2.21", "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    changes = {c["name"]: (c["old"], c["new"]) for c in plan["changes"]}
    assert changes["modelgarden"] == ("2.15.0", "2.21.0") and changes["yamlish"] == ("5.4.1", "6.0.2"), changes
    assert plan["requested_downgrades"] == [] and "yamlish" not in plan["capped"]


def test_build_constraints_reach_every_uv_call_that_may_build(make_venv, cli, kit_env, tmp_path):
    """--build-constraint FILE and UV_BUILD_CONSTRAINT are passed to the resolution and to the install of the lock
    (uv drops UV_BUILD_CONSTRAINT from an install's environment, so tfrebuild passes the files itself)."""
    env = make_venv(tmp_path / "envs" / "bc", BASE)
    given, from_env = tmp_path / "build-caps.txt", tmp_path / "env-caps.txt"
    given.write_text("setuptools<81\n")
    from_env.write_text("cython<3\n")
    # uv's own setting in the folder the command runs from (tfrebuild runs uv with --no-config, so passes it on)
    (tmp_path / "uv.toml").write_text('build-constraint-dependencies = ["pyyaml-build-helper<2"]\n')
    res = run_cli(
        kit_env,
        "upgrade",
        "--env",
        env,
        "--offline",
        "--find-links",
        kit_env["UV_FIND_LINKS"],
        "--to",
        "2.16",
        "--yes",
        "--build-constraint",
        given,
        cwd=tmp_path,
        overrides={
            "UV_BUILD_CONSTRAINT": from_env,
            "UV_NO_CONFIG": None,
            "XDG_CONFIG_HOME": tmp_path / "cfg",
            "XDG_CONFIG_DIRS": tmp_path / "cfg-dirs",
        },
    )  # uv.toml read: the kit's UV_NO_CONFIG off
    assert res.code == 0, res.err
    (log,) = (env.parent / f".{env.name}.tfrebuild" / "logs").glob("upgrade-*.log")
    commands = [line for line in log.read_text().splitlines() if line.startswith("$ ")]
    for verb in ("pip compile", "pip sync"):
        lines = [c for c in commands if f" {verb} " in c and "--no-deps --format pylock.toml" not in c]
        assert lines and all(
            f"--build-constraints {given}" in c
            and f"--build-constraints {from_env}" in c
            and "tfrebuild-build-constraints-" in c
            for c in lines
        ), (verb, commands)
    from rebuild.index import config as indexconf

    assert indexconf.build_constraint_dependencies(environ={}, home=tmp_path / "home", cwd=tmp_path) == [
        "pyyaml-build-helper<2"
    ]
    assert indexconf.build_constraint_dependencies(environ={"UV_NO_CONFIG": "1"}, cwd=tmp_path) == []
    written = {w for c in commands for w in c.split() if "tfrebuild-build-constraints-" in w}
    assert written and not any(Path(w).exists() for w in written)  # the private file is gone with the command
    missing = cli("plan", env, "--build-constraint", tmp_path / "nope.txt")
    assert missing.code == 2 and "nope.txt given with --build-constraint does not exist" in missing.err


def test_python_moves_read_requires_python_and_the_installed_wheel_tags(tmp_path):
    """The other two ways an installed version cannot run on the new Python (no env needed: the probe's records)."""
    from rebuild.core import companionstep
    from rebuild.env.probed import Probed

    def dist(name: str, tag: str, requires_python: str | None = None) -> dict:
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
        return {"canonical": name, "location": "env", "dist_info": str(info), "requires_python": requires_python}

    data = Probed(
        distributions=[
            dist("compiled", "cp311-cp311-manylinux_2_17_x86_64"),
            dist("stable-abi", "cp39-abi3-manylinux_2_17_x86_64"),
            dist("pure", "py3-none-any"),
            dist("old-floor", "py3-none-any", "<3.12"),
        ]
    )
    pins = {"compiled": "1.0", "stable-abi": "1.0", "pure": "1.0", "old-floor": "1.0"}
    moves = companionstep.python_moves(pins, data, "3.12.1")
    assert sorted(moves) == ["compiled", "old-floor"], moves
    assert "built for cp311 only" in moves["compiled"] and "requires Python <3.12" in moves["old-floor"]
    assert companionstep.python_moves(pins, data, "3.11.9") == {}


@pytest.mark.slow
def test_newest_working_release_installed_is_nothing_to_do(make_venv, cli, venv_run, tmp_path):
    """tfops-demo 1.1.0's op library is built for TF 2.18 and nothing newer of it exists: 2.21.0 fails its checks,
    moving tfops-demo forward does not resolve, 2.20.0 fails too. The env already holds the newest TensorFlow that
    passes: exit 0, "nothing to do", every try with its blocker and a command; the env and the store unchanged (a first
    run leaves no state folder); `plan` says nothing to do for a target that does not resolve, without building."""
    env = make_venv(tmp_path / "envs" / "top", ["tensorflow-cpu==2.18.0", "numpy==1.26.4", "tfops-demo==1.1.0"])
    before = _pins(venv_run, env)
    state = env.parent / f".{env.name}.tfrebuild"
    res = cli("upgrade", env, "--yes", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["changed"] is False and doc["generation"] is None
    assert doc["plan"]["tf_new"] == doc["plan"]["tf_old"] == "2.18.0" and doc["plan"]["changes"] == []
    assert doc["plan"]["landing_note"] == (
        "nothing to do: tensorflow-cpu 2.18.0 is the newest TensorFlow that passes "
        "its checks with everything this env holds"
    )
    tries = [(t["target"], t["passed"], t["built"]) for t in doc["tries"]]
    assert tries == [
        ("tensorflow-cpu 2.21.0", False, True),
        ("tensorflow-cpu 2.21.0", False, False),
        ("tensorflow-cpu 2.20.0", False, True),
    ], doc["tries"]
    blocked = doc["blocked_above"]
    assert [(b["target"], b["blocker"]) for b in blocked] == [
        ("tensorflow-cpu 2.21.0", "tfops-demo"),
        ("tensorflow-cpu 2.20.0", "tfops-demo"),
    ], blocked
    assert blocked[0]["why"].startswith(
        "built for another TensorFlow/NumPy (ABI): NotImplementedError: unable to open file: _demo_ops.so"
    )
    assert "; then [tfops-demo moved forward from 1.1.0]: does not resolve: " in blocked[0]["why"]
    assert f"`tfrebuild upgrade --env {env} --to 2.20.0` tries it strictly" in blocked[1]["command"]
    assert f"drop tfops-demo: `tfrebuild snapshot --env {env} -o profile.toml`" in blocked[1]["command"]
    assert doc["blocked_above"] == doc["plan"]["blocked_above"]
    assert _pins(venv_run, env) == before
    assert not state.exists(), "a first run that changed nothing records nothing"
    assert Path(doc["log"]).is_file() and not Path(doc["log"]).is_relative_to(state)

    text = cli("upgrade", env, "--yes")
    assert text.code == 0, text.err
    assert (
        "Nothing to do: tensorflow-cpu 2.18.0 is the newest TensorFlow that passes its checks with everything "
        "this env holds. Above it:"
    ) in text.out
    assert "tensorflow-cpu 2.20.0: blocked by tfops-demo: built for another TensorFlow/NumPy (ABI)" in text.out
    assert not state.exists()

    strict = cli("upgrade", env, "--to", "2.20.0", "--yes")  # the command named: strict, it shows the failure
    assert strict.code == 1 and "unable to open file: _demo_ops.so" in strict.err, strict.err
    assert _pins(venv_run, env) == before


@pytest.mark.slow
def test_first_upgrade_holds_its_lock_between_tries(make_venv, kit_env, kit_index, venv_run, tmp_path):
    """A first upgrade (no state folder before) whose first try fails goes on to the next target under the same lock:
    the state folder, its lock file and its creation record stay between tries, so a second `tfrebuild upgrade`
    started meanwhile is refused; when no try lands, the state folder is gone at the end. (Each try pauses 6 s once
    built, so the second command lands while the first is on its next try.)"""
    import os
    import subprocess

    from rebuild.store.lock import Lock

    env = make_venv(tmp_path / "envs" / "locked", ["tensorflow-cpu==2.18.0", "numpy==1.26.4", "tfops-demo==1.1.0"])
    before = _pins(venv_run, env)
    state = env.parent / f".{env.name}.tfrebuild"
    assert not state.exists()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rebuild",
            "upgrade",
            "--env",
            str(env),
            "--offline",
            "--find-links",
            str(kit_index),
            "--yes",
        ],
        env={**kit_env, "TFREBUILD_PAUSE": "upgrade.built:6"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen: list[str] = []
        folder = None
        for line in proc.stderr:  # the first try's stages, then its failure
            seen.append(line)
            if folder is None and state.is_dir():
                folder = os.stat(state).st_ino
            if line.startswith("  try: tensorflow-cpu 2.21.0"):
                break
        assert proc.poll() is None, "".join(seen)
        assert folder is not None and os.stat(state).st_ino == folder, "the state folder was made again"
        assert (state / "created").is_file()
        holder = Lock(state / "lock", env).holder()
        assert holder is not None and holder["pid"] == proc.pid, holder
        second = run_cli(
            kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", "--force", cwd=tmp_path
        )  # --force: the first one's probes in the env do not refuse it
        assert proc.poll() is None, "the first upgrade ended before the second one was refused"
        assert second.code == 1 and f"Another tfrebuild (pid {proc.pid}: tfrebuild upgrade" in second.err, second.err
        assert os.stat(state).st_ino == folder, "the refused upgrade removed the state folder of the one at work"
        assert Lock(state / "lock", env).holder() is not None
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Nothing to do: tensorflow-cpu 2.18.0 is the newest TensorFlow" in out
    assert not state.exists(), "no try landed: the first run's state folder goes"
    assert _pins(venv_run, env) == before


@pytest.mark.slow
def test_plan_says_nothing_to_do_when_no_release_above_resolves(make_venv, cli, tmp_path):
    """tensorflow-forests 1.8.1 pins tensorflow~=2.15.0 and the user's constraint file holds it there: no release above
    the installed 2.15.1 resolves. `plan` (no build) and `upgrade` say nothing to do, exit 0, with each release
    above, what stood in the way and a command that shows the choices."""
    env = make_venv(tmp_path / "envs" / "held", ["tensorflow==2.15.1", "numpy==1.26.4", "tensorflow-forests==1.8.1"])
    caps = tmp_path / "caps.txt"
    caps.write_text("tensorflow-forests==1.8.1\n")
    res = cli("plan", env, "--constraint", caps, "--json")
    assert res.code == 0, res.err
    plan = res.json()["plan"]
    assert plan["tf_new"] == plan["tf_old"] == "2.15.1" and plan["changes"] == []
    assert plan["landing_note"].startswith("nothing to do: tensorflow 2.15.1 is the newest TensorFlow"), plan
    assert [b["target"] for b in plan["blocked_above"]] == [
        "tensorflow 2.21.0",
        "tensorflow 2.20.0",
        "tensorflow 2.18.0",
        "tensorflow 2.16.1",
    ]
    assert all(f"`tfrebuild plan --env {env} --to 2." in b["command"] for b in plan["blocked_above"])
    assert "tensorflow-forests" in plan["blocked_above"][0]["blocker"], plan["blocked_above"]
    text = cli("plan", env, "--constraint", caps)
    assert text.code == 0 and "Nothing to do: tensorflow 2.15.1 is the newest TensorFlow" in text.out, text.err
    up = cli("upgrade", env, "--constraint", caps, "--yes", "--json")
    assert up.code == 0, up.err
    assert up.json()["changed"] is False and len(up.json()["blocked_above"]) == 4
    assert not (env.parent / f".{env.name}.tfrebuild").exists()


def test_a_blocker_that_is_its_class_is_said_once():
    """A try whose failure names no package is blocked by its class ("checks failed"): the row says it once,
    "blocked by checks failed: <what failed>", never "checks failed: checks failed: …"."""
    tries = [
        search.Try(
            "tensorflow-cpu 2.21.0",
            "",
            False,
            "checks failed: smoke command `pytest -x` exited 1",
            built=True,
            blocker="checks failed",
        ),
        search.Try(
            "tensorflow-cpu 2.20.0",
            "",
            False,
            "needs Keras 2: keras.src.engine missing",
            built=True,
            blocker="tf-models-official",
        ),
    ]
    rows = search.blockers(tries, "/envs/tf")
    assert [(b.blocker, b.why) for b in rows] == [
        ("checks failed", "smoke command `pytest -x` exited 1"),
        ("tf-models-official", "needs Keras 2: keras.src.engine missing"),
    ]


def test_a_search_that_stops_at_its_build_limit_names_commands_that_run():
    """After MAX_BUILDS builds the search stops: the hint names the last blocker's command and the next lower
    release to try by hand (`--to X.Y`, above the installed one), with the env's path quoted."""
    from types import SimpleNamespace

    plan = SimpleNamespace(tf_old="2.15.1", env="/envs/my tf")
    tries = [
        search.Try(
            f"tensorflow-cpu 2.{m}.0",
            "",
            False,
            "checks failed: smoke command exited 1",
            built=True,
            blocker="checks failed",
        )
        for m in (21, 20, 19, 18)
    ]
    err = search._exhausted(search.UserError("last", "h"), plan, tries, "the search stops after 4 builds")
    assert err.exit_code == 1 and "the search stops after 4 builds" in err.message
    assert "`tfrebuild upgrade --env '/envs/my tf' --to 2.18.0` tries it strictly" in err.hint
    assert err.hint.endswith(
        "Or try the next lower release yourself: `tfrebuild upgrade --env '/envs/my tf' --to 2.17`."
    )
    plan.tf_old = "2.17.1"  # nothing left between the lowest try and the installed release: no such line
    assert "next lower release" not in search._exhausted(search.UserError("x", "h"), plan, tries, "w").hint


def test_a_build_failure_is_known_by_its_declared_field_not_its_words() -> None:
    from rebuild.core import search
    from rebuild.errors import UserError

    exc = UserError(
        "uv pip sync could not build the new environment: it failed to build badpkg==1.0",
        details="uv says:\n  × Failed to build `badpkg==1.0`\n  ╰─▶ boom",
    )
    assert search._build_failure(exc) is None  # the words alone decide nothing
    exc.build_failed = True  # set where the build failed (core/build.py, the project steps)
    failure = search._build_failure(exc)
    assert failure is not None and (failure.kind, failure.package) == ("python", "badpkg")


def test_a_failed_download_is_not_a_package_that_does_not_build():
    """Only uv's "Failed to build `pkg`" names a package that does not build for this Python (the search then moves
    it forward); "Failed to download `pkg`" (a network glitch, a missing offline file) holds nothing back."""

    def failure(details: str):
        err = search.UserError("could not build the new environment", "h", details=details)
        err.build_failed = True
        found = search._build_failure(err)
        return (found.kind, found.package) if found else None

    assert failure("  × Failed to build `numpy==1.24.3`\n  ├─▶ The build backend returned an error") == (
        "python",
        "numpy",
    )
    assert failure("error: Failed to download `six==1.16.0`\n  ├─▶ HTTP status server error (503)") == ("checks", "")
