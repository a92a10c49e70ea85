"""Issue 12, points 3, 5, 6 and 9: the user's intent in ``upgrade``.

* requirement-file envs (REQUESTED on every distribution): requested is decided from the
  dependency graph; what only the old TensorFlow needed goes, with a reason per change;
* ``[smoke]`` and ``[constraints]`` come from ``--profile``, else the current generation's
  profile, and are carried into the new generation's profile; a failing smoke command
  blocks the swap;
* an env tfrebuild built is clean by its own doctor (RECORD agrees with REQUESTED);
* re-upgrading to a set a kept generation holds switches to it instead of building a copy.

All offline on the kit, with the real CLI, uv, pip and venvs.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from tests.kit.cli import run_cli, tree_state

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


@pytest.fixture
def cli(kit_env, kit_index, tmp_path):
    def _run(command: str, env: Path, *args: str):
        online = ("--offline", "--find-links", kit_index) if command in ("plan", "upgrade", "doctor") else ()
        return run_cli(kit_env, command, "--env", env, *online, *args, cwd=tmp_path)

    return _run


def state_dir(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def site(env: Path) -> Path:
    (sp,) = env.glob("lib/python3.*/site-packages")
    return sp


def installed(env: Path) -> dict[str, str]:
    out = {}
    for d in site(env).glob("*.dist-info"):
        name, version = d.name[: -len(".dist-info")].rsplit("-", 1)
        out[name.lower().replace("_", "-")] = version
    return out


@pytest.fixture
def reqfile_env(make_venv, kit_env, tmp_path) -> Path:
    """A pip venv installed with `pip install -r` from the fully pinned closure of the classic TF 2.15 env."""
    frozen = make_venv(tmp_path / "frozen", CLASSIC)
    pins = subprocess.run(
        [
            str(frozen / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(sorted(f'{d.name}=={d.version}' "
            "for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    req = tmp_path / "requirements.txt"
    req.write_text(pins)
    env = make_venv(tmp_path / "envs" / "tf", [], creator="venv")
    proc = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(req)],
        env=dict(kit_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    marked = [d.name for d in site(env).glob("*.dist-info") if (d / "REQUESTED").exists()]
    assert any(m.startswith("tensorflow_estimator-") for m in marked), "premise: pip marks every -r line"
    assert any(m.startswith("numpy-") for m in marked)
    return env


@pytest.mark.slow
def test_requirement_file_env_requested_from_graph_and_old_tf_only_deps_dropped(reqfile_env, cli, tmp_path):
    env = reqfile_env
    snap = cli("snapshot", env, "-o", tmp_path / "p.toml", "--json")
    assert snap.code == 0, str(snap)
    profile = snap.json()["profile"]
    assert "tensorflow-estimator" not in profile["requested"] and "numpy" not in profile["requested"]
    assert {"tensorflow-cpu", "scipy", "pandas"} <= set(profile["requested"]), profile["requested"]
    # default smoke imports: the requested packages' import names, not every installed import name
    assert "tensorflow_estimator" not in profile["smoke"]["imports"]
    assert {"tensorflow", "scipy", "pandas"} <= set(profile["smoke"]["imports"])
    assert len(profile["smoke"]["imports"]) == len(profile["requested"])

    plan = cli("plan", env, "--to", "2.18", "--json")
    assert plan.code == 0, str(plan)
    doc = plan.json()["plan"]
    changes = {c["name"]: c for c in doc["changes"]}
    assert changes["tensorflow-estimator"]["kind"] == "remove"
    assert changes["tensorflow-estimator"]["reason"] == "no longer required (only tensorflow-cpu 2.15.1 needed it)"
    assert all(c["reason"] for c in doc["changes"]), doc["changes"]
    assert any(n.startswith("requested: REQUESTED marks") for n in doc["notes"]), doc["notes"]

    up = cli("upgrade", env, "--to", "2.18", "--yes", "--json")
    assert up.code == 0, str(up)
    assert "tensorflow-estimator" not in installed(env)
    assert installed(env)["tensorflow-cpu"] == "2.18.0"


@pytest.mark.slow
def test_requested_in_profile_keeps_an_old_tf_only_dependency(reqfile_env, cli, tmp_path):
    env = reqfile_env
    out = tmp_path / "p.toml"
    assert cli("snapshot", env, "-o", out).code == 0
    data = tomllib.loads(out.read_text())
    data["requested"] = sorted(set(data["requested"]) | {"tensorflow-estimator"})
    out.write_text(tomli_w.dumps(data))
    plan = cli("plan", env, "--to", "2.18", "--profile", out, "--json")
    assert plan.code == 0, str(plan)
    # the user asked for it: it is kept, not dropped as "only the old TensorFlow needed it"
    changes = {c["name"]: c for c in plan.json()["plan"]["changes"]}
    assert changes.get("tensorflow-estimator", {}).get("kind") != "remove", changes


def _edit(path: Path, **sections) -> None:
    data = tomllib.loads(path.read_text())
    for key, value in sections.items():
        data[key] = value
    path.write_text(tomli_w.dumps(data))


def test_smoke_command_from_profile_blocks_the_swap(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    out = tmp_path / "p.toml"
    assert cli("snapshot", env, "-o", out).code == 0
    data = tomllib.loads(out.read_text())
    _edit(out, smoke={**data["smoke"], "commands": ["exit 7"]})
    before = tree_state(env)
    res = cli("upgrade", env, "--to", "2.18", "--yes", "--profile", out)
    assert res.code != 0, str(res)
    assert "exit 7" in res.err or "7" in res.err, res.err
    assert tree_state(env) == before
    assert installed(env)["tensorflow-cpu"] == "2.15.1"


@pytest.mark.slow
def test_generation_profile_is_the_intent_and_is_carried_forward(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    up = cli("upgrade", env, "--to", "2.16", "--yes")
    assert up.code == 0, str(up)
    gen2 = state_dir(env) / "generations" / "2" / "profile.toml"
    marker = tmp_path / "ran.txt"
    data = tomllib.loads(gen2.read_text())
    # a failing command in the current generation's profile blocks the next upgrade: --to latest tries each lower
    # release, finds none above the installed one that passes and says so (nothing to do, the command named);
    # an explicit --to fails on it
    _edit(gen2, smoke={**data["smoke"], "commands": ["exit 7"]})
    before = tree_state(env)
    res = cli("upgrade", env, "--yes")
    assert res.code == 0 and "Nothing to do: tensorflow-cpu 2.16.1 is the newest" in res.out, res
    assert "[command: exit 7]" in res.out and "[command: exit 7]" in res.err, res
    strict = cli("upgrade", env, "--yes", "--to", "2.18")
    assert strict.code == 1 and "failed its checks before the swap: command: exit 7" in strict.err, strict
    assert tree_state(env) == before and installed(env)["tensorflow-cpu"] == "2.16.1"

    # constraints there hold the target; smoke commands and imports there run and are carried forward
    cmd = f"python -c \"import tensorflow; open('{marker}', 'w').write(tensorflow.__version__)\""
    _edit(gen2, smoke={"imports": ["tensorflow", "scipy"], "commands": [cmd]}, constraints={"tensorflow-cpu": "<2.20"})
    res = cli("upgrade", env, "--yes", "--json")
    assert res.code == 0, str(res)
    assert res.json()["plan"]["tf_new"] == "2.18.0"
    assert marker.read_text() == "2.18.0", "the command ran in the new env"
    checks = [c["name"] for c in res.json()["checks"]]
    assert any("scipy" in c for c in checks) or any("import" in c for c in checks), checks
    gen3 = tomllib.loads((state_dir(env) / "generations" / "3" / "profile.toml").read_text())
    assert gen3["smoke"]["commands"] == [cmd]
    assert gen3["smoke"]["imports"] == ["tensorflow", "scipy"]
    assert gen3["constraints"] == {"tensorflow-cpu": "<2.20"}


@pytest.mark.slow
def test_doctor_clean_after_upgrade(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC, creator="venv")
    up = cli("upgrade", env, "--to", "2.18", "--yes")
    assert up.code == 0, str(up)
    # REQUESTED only on what was requested, and RECORD lists it exactly when it exists
    for d in site(env).glob("*.dist-info"):
        rows = [line.split(",", 1)[0] for line in (d / "RECORD").read_text().splitlines()]
        assert (f"{d.name}/REQUESTED" in rows) == (d / "REQUESTED").exists(), d.name
    assert not (next(site(env).glob("absl_py-*.dist-info")) / "REQUESTED").exists()
    assert (next(site(env).glob("tensorflow_cpu-*.dist-info")) / "REQUESTED").exists()
    doc = cli("doctor", env, "--json")
    findings = doc.json()["findings"]
    bad = [
        f
        for f in findings
        if f["severity"] in ("error", "warning")
        and f["id"] in ("record-missing-files", "orphan-files", "duplicate-dist-info", "broken-requirements")
    ]
    assert not bad, bad
    assert not [f for f in findings if f["severity"] == "error"], findings


def test_reupgrade_after_rollback_switches_to_the_generation(make_venv, cli, tmp_path):
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    assert cli("upgrade", env, "--to", "2.18", "--yes").code == 0
    back = cli("rollback", env, "--yes")
    assert back.code == 0, str(back)
    assert installed(env)["tensorflow-cpu"] == "2.15.1"
    again = cli("upgrade", env, "--to", "2.18", "--yes")
    assert again.code == 0, str(again)
    assert "Generation 2 already holds this set: switched to it" in again.out, again.out
    assert not (state_dir(env) / "generations" / "3").exists()
    assert installed(env)["tensorflow-cpu"] == "2.18.0"
    store = tomllib.loads((state_dir(env) / "store.toml").read_text())
    assert (store["current"], store["previous"]) == (2, 1)
