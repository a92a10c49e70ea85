"""The cheap check at the env's path (after a rollback, after an upgrade's swap) and ``--check import``.

A rollback returns to a generation whose TensorFlow import was proven at this path; by default it checks
that the tree is that generation's (inode), that its interpreter starts at the path and reports the recorded
Python and TensorFlow versions. These tests make each of those fail for real, and show that ``--check import``
also imports TensorFlow. No timing is asserted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


from rebuild.core import smoke
from rebuild.store.store import Store
from tests.test_generations import managed, ok, tf_at, tfr, upgrade_cli, user_error  # noqa: F401  (fixtures and helpers)


def _parked(env: Path, number: int) -> Path:
    return Store.open(env).generation_dir(number) / "env"


def _tf_dist_info(tree: Path) -> Path:
    (found,) = list(tree.glob("lib/python*/site-packages/tensorflow_cpu-*.dist-info"))
    return found


def test_rollback_default_check_is_cheap_and_passes(managed, tfr, kit_env):
    env = managed(2)
    run = ok(tfr("rollback", "--env", env, "--yes", "--json"))
    doc = run.json()
    names = [c["name"] for c in doc["checks"]]
    assert names == ["interpreter starts and reports the checked versions"], names
    assert all(c["ok"] for c in doc["checks"])
    assert tf_at(env, kit_env) == "2.15.1"


def test_rollback_fails_and_swaps_back_when_the_interpreter_at_the_path_is_broken(managed, tfr, kit_env):
    env = managed(2)
    python = _parked(env, 1) / "bin" / "python"
    python.unlink()
    python.write_text("#!/bin/sh\necho 'broken interpreter' >&2\nexit 3\n")
    python.chmod(0o755)
    run = user_error(tfr("rollback", "--env", env, "--yes"), "does not work at", "swapped generation 2 back in")
    assert "broken interpreter" in run.err
    assert Store.open(env).current_number == 2 and tf_at(env, kit_env) == "2.16.1"


def test_rollback_fails_when_the_tree_reports_another_tensorflow(managed, tfr, kit_env):
    env = managed(2)
    meta = _tf_dist_info(_parked(env, 1)) / "METADATA"
    meta.write_text(re.sub(r"(?m)^Version: .*$", "Version: 2.15.0", meta.read_text()))
    run = user_error(tfr("rollback", "--env", env, "--yes"), "expected 2.15.1, found 2.15.0")
    assert Store.open(env).current_number == 2 and tf_at(env, kit_env) == "2.16.1", run


def test_rollback_check_import_runs_tensorflow_at_the_path(managed, tfr, kit_env):
    """A TensorFlow that no longer imports passes the cheap check (its versions are right) but not --check import."""
    env = managed(2)
    (init_py,) = list(_parked(env, 1).glob("lib/python*/site-packages/tensorflow/__init__.py"))
    init_py.write_text('raise ImportError("fake: libtensorflow_framework.so.2 is gone")\n')
    run = tfr("rollback", "--env", env, "--yes", "--check", "import")
    assert run.code == 1 and "swapped generation 2 back in" in run.err, str(run)
    assert "imports and computes" in run.err and "libtensorflow_framework.so.2 is gone" in run.err, str(run)
    assert Store.open(env).current_number == 2
    done = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()  # the cheap check does not import it
    assert done["to_generation"] == 1


def test_check_option_refuses_unknown_values(tfr, tmp_path):
    run = tfr("rollback", "--env", tmp_path, "--yes", "--check", "deepest")
    assert run.code == 2 and "--check versions" in run.err and "--check import" in run.err, str(run)


def test_at_path_check_fails_on_another_tree(managed):
    env = managed(2)
    st = os.lstat(env)
    other = (st.st_dev, st.st_ino + 1)
    check = smoke.at_path_check(env, versions={"tensorflow-cpu": "2.16.1"}, inode=other)
    assert not check.ok and "not the tree that was checked" in check.output
    good = smoke.at_path_check(
        env, versions={"tensorflow-cpu": "2.16.1", "scipy": "1.11.4"}, inode=(st.st_dev, st.st_ino)
    )
    assert good.ok, good.output
    missing = smoke.at_path_check(env, versions={"tensorflow-cpu": "2.16.1", "not-installed": "1.0"})
    assert not missing.ok and "not-installed: expected 1.0, found nothing" in missing.output


def test_piped_upgrade_progress_is_one_line_per_stage(managed, tfr, kit_index, kit_env):
    """Without a terminal every stage is one line (no live status); the stages say what is happening."""
    env = managed(2)
    run = ok(tfr("upgrade", "--env", env, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes"))
    stages = [m.group(1) for m in (re.match(r"^\[\s*\d+\.\d+s\] ([\w-]+)", line) for line in run.err.splitlines()) if m]
    assert len(stages) == len(set(stages)), stages
    for expected in ("snapshot", "resolve", "pre-flight", "build", "link", "bytecode", "checks", "swap", "verify"):
        assert expected in stages, (expected, run.err)
    assert "\r" not in run.err and "\x1b[" not in run.err
    assert (
        re.search(r"link: linking \d+ packages", run.err)
        and "checks: smoke checks in the new env: importing TensorFlow 2.18" in run.err
    ), run.err
    assert "interpreter starts and reports the checked versions" in run.err + run.out
