"""Unit tests of the one transaction (``rebuild.core.transaction``) with the build and the checks faked.

The end-to-end behaviour (real venvs, SIGKILL at every fault point) is in test_upgrade.py and
test_apply.py; here each step's failure is provoked directly and the cleanup is checked: before
the swap nothing is left behind, after it the path holds one complete environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rebuild.commands.apply import ApplyResult
from rebuild.commands.upgrade import UpgradeResult
from rebuild.core import build, smoke, transaction
from rebuild.env.profile import Index
from rebuild.errors import UserError
from rebuild.store.store import Store

PYLOCK = 'lock-version = "1.0"\ncreated-by = "test"\npackages = []\n'


class Fakes:
    """build.build makes ``staging/env`` with a marker; the checks pass unless told which ones fail."""

    def __init__(self, monkeypatch, marker: str = "new"):
        self.fail_full = self.fail_quick = False
        self.interrupt_checks = False
        self.profiles: list[tuple[int, object, dict]] = []

        def fake_build(staging, python, pylock, index, options, **kw):
            env = staging / "env"
            env.mkdir()
            (env / "marker").write_text(marker)
            (staging / "pylock.toml").write_text(pylock)
            return build.BuildResult(env=env, pylock=staging / "pylock.toml", seconds=0.5, estimate=0)

        def fake_checks(env, *, tf_version, imports, commands=(), quick=False, **kw):
            if self.interrupt_checks and not quick:
                raise KeyboardInterrupt
            fails = self.fail_quick if quick else self.fail_full
            return smoke.Report(str(env), [smoke.Check("quick" if quick else "full", not fails, 0.1, "boom")])

        def fake_at_path(env, *, deep, tf_version, versions, inode=None, **kw):
            self.at_path.append({"deep": deep, "versions": versions, "inode": inode})
            return fake_checks(env, tf_version=tf_version, imports=[], quick=True)

        self.at_path: list[dict] = []
        monkeypatch.setattr(transaction.build, "build", fake_build)
        monkeypatch.setattr(transaction.smoke, "run_checks", fake_checks)
        monkeypatch.setattr(transaction.smoke, "run_at_path", fake_at_path)

    def write_profile(self, store, number, profile=None, **kw):
        store.generation_dir(number).mkdir(parents=True, exist_ok=True)
        self.profiles.append((number, profile, kw))


def old_env(tmp_path: Path) -> Path:
    env = tmp_path / "venv"
    env.mkdir()
    (env / "marker").write_text("old")
    return env


def spec(store: Store, fakes: Fakes, tmp_path: Path, **kw) -> transaction.Spec:
    fields = dict(
        store=store,
        op="test-20240101T000000-1-abcd",
        kind="upgrade",
        command="tfrebuild test",
        python=Path("/usr/bin/python3"),
        python_version="3.11.7",
        tensorflow="tensorflow 2.18.0",
        pylock=PYLOCK,
        index=Index(),
        build=build.BuildOptions(),
        checks=smoke.Checks(tf_version="2.18.0", imports=[]),
        write_profile=fakes.write_profile,
        like="LIKE",
        log=tmp_path / "test.log",
        adopt=transaction.Adoption(tensorflow="tensorflow 2.15.1", python="3.11.7", like="OLD"),
    )
    fields.update(kw)
    return transaction.Spec(**fields)


def run(s: transaction.Spec) -> transaction.TransactionResult:
    with s.store.lock(s.command):
        return transaction.run(s, transaction.TransactionResult())


def test_results_share_the_transaction_fields():
    assert issubclass(UpgradeResult, transaction.TransactionResult)
    assert issubclass(ApplyResult, transaction.TransactionResult)
    r = ApplyResult(profile="p", env="e", new_env=True)
    assert r.swap_method == "" and r.changed is False and r.checks == [] and r.generation is None


def test_existing_unmanaged_env_is_adopted_swapped_and_recorded(monkeypatch, tmp_path):
    fakes = Fakes(monkeypatch)
    env = old_env(tmp_path)
    store = Store.unmanaged(env)
    r = run(spec(store, fakes, tmp_path))
    assert r.changed and (r.generation, r.previous) == (2, 1) and r.build_seconds == 0.5
    assert (env / "marker").read_text() == "new"
    assert (store.generation_dir(1) / "env" / "marker").read_text() == "old"
    assert (store.generation_dir(2) / "pylock.toml").read_text() == PYLOCK
    assert store.current.tensorflow == "tensorflow 2.18.0" and store.generation(1).tensorflow == "tensorflow 2.15.1"
    assert [(n, p) for n, p, _ in fakes.profiles] == [(1, "OLD"), (2, None)]
    assert fakes.profiles[1][2] == {"like": "LIKE", "commands": None}
    assert r.swap_method in ("renameat2", "rename")
    assert store.journal() is None and not list(store.staging_root.iterdir())


@pytest.mark.parametrize("how", ["build", "checks", "interrupt", "in-use"])
def test_failure_before_the_swap_leaves_no_trace(monkeypatch, tmp_path, how):
    fakes = Fakes(monkeypatch)
    env = old_env(tmp_path)
    store = Store.unmanaged(env)
    refusal = None
    if how == "build":

        def broken(*a, **kw):
            raise UserError("uv failed")

        monkeypatch.setattr(transaction.build, "build", broken)
    fakes.fail_full = how == "checks"
    fakes.interrupt_checks = how == "interrupt"
    if how == "in-use":

        def refusal():
            raise UserError("in use")

    with pytest.raises((UserError, KeyboardInterrupt)):
        run(spec(store, fakes, tmp_path, before_swap=refusal))
    assert (env / "marker").read_text() == "old" and sorted(os.listdir(env)) == ["marker"]
    assert not store.state.exists(), "the state folder this run created is removed again"


def test_failure_before_the_swap_keeps_a_managed_store(monkeypatch, tmp_path):
    fakes = Fakes(monkeypatch)
    env = old_env(tmp_path)
    store = Store.unmanaged(env)
    run(spec(store, fakes, tmp_path))
    fakes.fail_full = True
    with pytest.raises(UserError, match="before the swap"):
        run(spec(store, fakes, tmp_path, op="test-20240101T000001-1-abcd"))
    assert store.current_number == 2 and not store.generation_dir(3).exists()
    assert store.journal() is None and not list(store.staging_root.iterdir())


def test_failed_check_after_the_swap_swaps_back(monkeypatch, tmp_path):
    fakes = Fakes(monkeypatch)
    env = old_env(tmp_path)
    store = Store.unmanaged(env)
    fakes.fail_quick = True
    with pytest.raises(UserError, match="swapped generation 1 back in"):
        run(spec(store, fakes, tmp_path))
    assert (env / "marker").read_text() == "old" and store.current_number == 1
    assert store.journal() is None


def test_new_path_is_moved_into_place_and_adopted(monkeypatch, tmp_path):
    fakes = Fakes(monkeypatch)
    env = tmp_path / "fresh"
    store = Store.unmanaged(env)
    r = run(spec(store, fakes, tmp_path, kind="apply", new_env=True, adopt=None, commands=["true"]))
    assert r.changed and (r.generation, r.previous) == (1, None) and r.swap_method == "rename"
    assert (env / "marker").read_text() == "new"
    store = Store.open(env)
    assert store is not None and store.current.tensorflow == "tensorflow 2.18.0"
    assert (store.generation_dir(1) / "pylock.toml").read_text() == PYLOCK
    assert fakes.profiles == [(1, None, {"like": "LIKE", "commands": ["true"]})]
    assert store.journal() is None and not list(store.staging_root.iterdir())


def test_new_path_failing_after_the_move_is_taken_away(monkeypatch, tmp_path):
    fakes = Fakes(monkeypatch)
    env = tmp_path / "fresh"
    store = Store.unmanaged(env)
    fakes.fail_quick = True
    with pytest.raises(UserError, match="nothing exists at"):
        run(spec(store, fakes, tmp_path, kind="apply", new_env=True, adopt=None))
    assert not os.path.lexists(env) and not store.managed
    assert store.journal() is None and not list(store.staging_root.iterdir())
