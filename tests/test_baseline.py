"""core/baseline.py: the current env's import checks run only when asked, once, whoever asks."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from rebuild.core.baseline import Baseline


def _env(tmp_path: Path) -> Path:
    """An env whose interpreter is this one (the checks run ``python -I``: only the standard library imports)."""
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    os.symlink(sys.executable, env / "bin" / "python")
    return env


def test_nothing_runs_until_asked_then_once_for_every_caller(tmp_path):
    env = _env(tmp_path)
    before = Baseline(env, ["json", "no_such_module_tfrebuild", ""])
    assert before.timing() == {"ran": False, "seconds": None, "waited_seconds": 0}  # created: nothing ran

    answers: list[dict[str, str]] = []
    askers = [threading.Thread(target=lambda: answers.append(before.failing())) for _ in range(2)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert len(answers) == 2 and answers[0] == answers[1], answers  # the side thread and the main thread: one answer
    assert (
        list(answers[0]) == ["no_such_module_tfrebuild"] and "No module named" in answers[0]["no_such_module_tfrebuild"]
    )
    timing = before.timing()
    assert timing["ran"] is True and timing["seconds"] > 0 and timing["waited_seconds"] >= timing["seconds"]

    (env / "bin" / "python").unlink()  # asked again: the answer is kept, nothing runs (it would fail now)
    assert before.failing() == answers[0] and before.timing()["seconds"] == timing["seconds"]


def test_no_reference_checks_runs_nothing(tmp_path):
    before = Baseline(_env(tmp_path), ["no_such_module_tfrebuild"], run=False)
    assert before.failing() == {} and before.timing()["ran"] is False


def test_started_at_once_and_never_about_another_tree(tmp_path):
    """``start()`` runs them in a thread (``failing()`` waits for it); asked only after another venv is at the path,
    they run nothing there: nothing is known, so nothing is excused."""
    import subprocess

    env = _env(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "other"], check=True)
    early = Baseline(env, ["no_such_module_tfrebuild"])
    early.start()
    late = Baseline(env, ["no_such_module_tfrebuild"])
    assert list(early.failing()) == ["no_such_module_tfrebuild"] and early.timing()["ran"] is True
    os.rename(env, tmp_path / "was")
    os.rename(tmp_path / "other", env)  # the swap: another tree at the path
    assert late.failing() == {}  # it would fail in the other tree too, and be called "already failing"
    assert list(early.failing()) == ["no_such_module_tfrebuild"]  # answered for the tree it was made for
