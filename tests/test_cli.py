"""The command line as a whole: every command documents itself with an example."""

from __future__ import annotations

import pytest

from rebuild.cli.app import app
from tests.kit.cli import run_cli

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_the_commands_the_readme_lists_exist():
    assert {"snapshot", "plan", "upgrade", "rollback", "history", "diff", "gc", "status", "doctor", "releases",
            "apply", "bundle", "export"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    res = run_cli({"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}, command, "--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Example: tfrebuild " + command in res.stdout
