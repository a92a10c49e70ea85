"""The checks that need no answer from TensorFlow's run beside its check (issue 26, point 4: a three-try search).

A real venv (uv) whose ``tensorflow`` takes seconds to import, as the real one does: its check and the profile's
command run at once, and in a target search's try a failed command stops TensorFlow's check instead of waiting for
it. Nothing here is mocked: real processes, real venvs, smoke's own runner.
"""

from __future__ import annotations

import time
from pathlib import Path

from rebuild.core import smoke

SLOW_TF = """
import time
time.sleep({seconds})

__version__ = "2.99.0"


def constant(values):
    return values


def reduce_sum(values):
    return sum(values)
"""


def _env(make_venv, tmp_path: Path, seconds: float) -> Path:
    env = make_venv(tmp_path / "env")
    (site,) = env.glob("lib/python3*/site-packages")
    (site / "tensorflow").mkdir()
    (site / "tensorflow" / "__init__.py").write_text(SLOW_TF.format(seconds=seconds))
    return env


def test_a_failed_command_stops_tensorflows_check_in_a_search_try(make_venv, tmp_path):
    env = _env(make_venv, tmp_path, 60)
    start = time.monotonic()
    report = smoke.run_checks(
        env, tf_version="2.99.0", imports=["json"], commands=["exit 3"], beside=True, stop_early=True
    )
    took = time.monotonic() - start
    assert took < 30, f"TensorFlow's 60 s import was waited for: {took:.1f} s"
    name = "tensorflow 2.99.0 imports and computes"
    assert report.stopped == [name]
    assert [c.name for c in report.checks] == [
        "interpreter starts",
        "imports: json",
        "consistent (uv pip check)",
        "command: exit 3",
    ]
    assert [c.name for c in report.failed] == ["command: exit 3"]
    error = smoke.failure(report, "before the swap", tmp_path / "x.log", "Your environment was not changed.")
    assert f"(stopped unfinished, since the try had already failed: {name})" in error.message, error.message


def test_beside_without_stop_early_waits_and_keeps_the_order(make_venv, tmp_path):
    """An upgrade that is not a search's try: every check ends and reports, in the order they always had; the
    command ran while TensorFlow imported (the whole took about the import, not the sum)."""
    env = _env(make_venv, tmp_path, 3)
    report = smoke.run_checks(
        env, tf_version="2.99.0", imports=["json"], commands=["sleep 2; exit 3"], beside=True, stop_early=False
    )
    assert report.stopped == []
    names = [c.name for c in report.checks]
    assert names == [
        "interpreter starts",
        "tensorflow 2.99.0 imports and computes",
        "imports: json",
        "consistent (uv pip check)",
        "command: sleep 2; exit 3",
    ]
    tf_check, command = report.checks[1], report.checks[-1]
    assert tf_check.ok and tf_check.seconds >= 3, tf_check
    assert not command.ok and command.seconds >= 2
    assert [c.name for c in report.failed] == ["command: sleep 2; exit 3"]


def test_tensorflows_failure_is_reported_beside_a_passing_command(make_venv, tmp_path):
    env = _env(make_venv, tmp_path, 0)
    report = smoke.run_checks(env, tf_version="2.98.0", imports=[], commands=["true"], beside=True, stop_early=True)
    assert report.stopped == [] and [c.name for c in report.failed] == ["tensorflow 2.98.0 imports and computes"]
    assert "expected tensorflow 2.98.0" in report.failed[0].output
    assert report.checks[-1].name == "command: true" and report.checks[-1].ok


def test_a_failed_import_stops_nothing_in_a_search_try(make_venv, tmp_path):
    """Only a failed command ends a try early: a failed import or ``uv pip check`` waits for TensorFlow's check,
    whose own failure (a protobuf or ABI message) may be what the target search can fix."""
    env = _env(make_venv, tmp_path, 2)
    report = smoke.run_checks(
        env, tf_version="2.99.0", imports=["no_such_module_here"], commands=[], beside=True, stop_early=True
    )
    assert report.stopped == []
    tf_check = report.checks[1]
    assert tf_check.name == "tensorflow 2.99.0 imports and computes" and tf_check.ok and tf_check.seconds >= 2
    assert [c.name for c in report.failed] == ["imports: no_such_module_here"]


def test_an_interrupt_stops_the_checks_beside_and_starts_no_command(make_venv, tmp_path):
    """Ctrl-C while TensorFlow's check runs (here the KeyboardInterrupt comes out of the TensorFlow check the caller
    hands in, as the model gate's process does, so its moment is exact): the command running beside it is killed,
    the next one never starts, and the interrupt is not held up by them."""
    import pytest

    env = make_venv(tmp_path / "env")
    marker = tmp_path / "second-command-ran"

    def interrupted(name: str, timeout: float):
        time.sleep(1.5)  # the first command is running beside by now
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        smoke.run_checks(
            env,
            tf_version="2.99.0",
            imports=[],
            commands=["sleep 30", f"touch {marker}"],
            beside=True,
            tf_check=interrupted,
        )
    assert time.monotonic() - start < 15
    time.sleep(0.5)
    assert not marker.exists(), "a command started after the interrupt"
