"""`tfrebuild doctor` on the command line, and doctor's pre-flight inside `plan`."""

from __future__ import annotations

import json

from tests.kit.cli import run_cli as cli


def test_clean_env_exits_0(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    res = cli(kit_env, "doctor", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.18", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["counts"]["error"] == 0
    assert doc["target_version"] == "2.18.0"


def test_blocked_upgrade_exits_1_and_groups_by_severity(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow==2.15.1", "tensorflow-text==2.15.0"])
    res = cli(kit_env, "doctor", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.18")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "errors (" in res.stdout and "target-blocked" in res.stdout
    assert "tensorflow-text 2.15.0 requires tensorflow" in res.stdout
    doc = json.loads(
        cli(kit_env, "doctor", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.18", "--json").stdout
    )
    blocked = [f for f in doc["findings"] if f["id"] == "target-blocked"]
    assert blocked and blocked[0]["severity"] == "error" and blocked[0]["fix"]


def test_bad_input_exits_2(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    bad_to = cli(kit_env, "doctor", "--env", venv, "--offline", "--find-links", kit_index, "--to", "two")
    missing = cli(kit_env, "doctor", "--env", tmp_path / "nope")
    for res in (bad_to, missing):
        assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr


def test_plan_shows_debris_as_fixed_by_this_upgrade(make_venv, kit_env, kit_index):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "~ensorflow").mkdir()
    res = cli(kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.16", "--json")
    assert res.returncode == 0, res.stderr
    found = {f["id"]: f for f in json.loads(res.stdout)["plan"]["preflight"]}
    assert found["tilde-folder"]["fixed_by_rebuild"] is True
    human = cli(kit_env, "plan", "--env", venv, "--offline", "--find-links", kit_index, "--to", "2.16")
    assert "pre-flight (fixed by this upgrade) tilde-folder" in human.stdout
