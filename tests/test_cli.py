"""The command line as a whole: every command documents itself with an example."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from rebuild.cli.app import app
from tests.kit.cli import run_cli

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_the_commands_the_readme_lists_exist():
    assert {
        "snapshot",
        "plan",
        "upgrade",
        "rollback",
        "history",
        "diff",
        "gc",
        "status",
        "doctor",
        "releases",
        "apply",
        "bundle",
        "export",
    } <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    res = run_cli({"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}, command, "--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Example: tfrebuild " + command in res.stdout


@pytest.mark.parametrize(
    "args, refusal",
    [
        (["plan", "--strategy", "weird"], "Unknown strategy 'weird'"),
        (["upgrade", "--strategy", "weird", "--yes"], "Unknown strategy 'weird'"),
        (["plan", "--gpu", "tpu"], "Unknown --gpu 'tpu'"),
        (["upgrade", "--gpu", "tpu", "--yes"], "Unknown --gpu 'tpu'"),
        (["plan", "--keras", "4"], "Unknown --keras '4'"),
        (["upgrade", "--keras", "4", "--yes"], "Unknown --keras '4'"),
        (["export", "--format", "yaml", "-o", "out.txt"], "Unknown format 'yaml'"),
    ],
)
def test_bad_choice_is_refused_at_parse_time(args, refusal, tmp_path):
    """A bad --strategy/--gpu/--keras/--format stops before the command runs: exit 2, nothing read or written."""
    env = tmp_path / "nowhere" / "env"
    res = run_cli(
        {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}, *args, "--env", str(env), cwd=tmp_path, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert f"error: {refusal}" in res.stderr and "hint: Use " in res.stderr and "Traceback" not in res.stderr
    assert "does not exist" not in res.stderr and "snapshot" not in res.stderr  # the command never started
    assert res.stdout == ""
    assert os.listdir(tmp_path) == []


def test_bad_choice_with_json_is_one_error_document(tmp_path):
    res = run_cli(
        {"PATH": "/usr/bin:/bin", "NO_COLOR": "1"}, "plan", "--json", "--gpu", "tpu", cwd=tmp_path, timeout=60
    )
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and "--gpu" in doc["error"] and "--gpu cuda" in doc["hint"]


def test_choices_are_types_that_compare_as_their_strings():
    from rebuild.core.options import ExportFormat, Gpu, Keras, Strategy
    from rebuild.core.plan import Options
    from rebuild.errors import UserError

    opts = Options(strategy="eager", keras="3", gpu="cpu")
    assert opts.strategy is Strategy.EAGER and opts.strategy == "eager" and f"{opts.keras}" == "3"
    assert opts.gpu is Gpu.CPU and Keras.parse("legacy") is Keras.LEGACY and ExportFormat("pylock") == "pylock"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.force = True  # built once, with every field
    with pytest.raises(UserError, match="Unknown --keras '4'"):
        Options(keras="4")
