"""Issue 23, point 4: the tree outranks the store; nothing moves through a link.

A ``store.toml`` edited to name another current generation (one that exists, one that does not, a negative one)
makes ``gc`` refuse, as ``rollback`` does: no generation is deleted (``status`` reports it; issue 22 words it). ``generations`` (or one
generation's folder) replaced by a link to a folder outside is refused before any exchange: the env keeps its
tree and the outside folder is untouched. Real CLI processes on small fake trees.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.test_shared_machine import managed, snapshot

from rebuild.store.store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the store needs Linux")

ROOT = Path(__file__).resolve().parent.parent


def tfr(kit_env, *args):
    return run_cli(kit_env, *[str(a) for a in args], cwd=ROOT, timeout=120)


def refused(run):
    assert run.code not in (0, -9), str(run)
    assert "Traceback" not in run.text, str(run)
    assert "error:" in run.err, str(run)


@pytest.mark.parametrize("current", ["1", "2", "99", "-3"])
@pytest.mark.slow
def test_gc_refuses_a_store_that_disagrees_with_the_tree(tmp_path, kit_env, current):
    store = managed(tmp_path / "tf", 4)  # generation 4 is the tree at the path
    text = store.store_file.read_text()
    store.store_file.write_text(re.sub(r"(?m)^current = \d+", f"current = {current}", text))
    before = snapshot(store.state / "generations")
    env_before = snapshot(store.env)
    for args in (["gc", "--keep", "1", "--yes"], ["gc", "--dry-run"], ["rollback", "--yes"]):
        refused(tfr(kit_env, *args, "--env", store.env))
    status = tfr(kit_env, "status", "--env", store.env)
    if current in ("1", "2"):  # status reads on and says what is wrong (and not that an upgrade would adopt it)
        assert status.code == 0 and "the state file was changed" in status.out, str(status)
        assert "adopts it" not in status.out, str(status)
    else:
        refused(status)
    assert snapshot(store.state / "generations") == before
    assert snapshot(store.env) == env_before


def test_gc_on_an_agreeing_store_still_deletes(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 4)
    run = tfr(kit_env, "gc", "--keep", "2", "--yes", "--env", store.env)
    assert run.code == 0, str(run)
    assert sorted(os.listdir(store.generations_dir)) == ["3", "4"]


@pytest.mark.parametrize("linked", ["generations", "generations/2"])
def test_rollback_through_a_linked_folder_exchanges_nothing(tmp_path, kit_env, linked):
    store = managed(tmp_path / "tf", 3)
    outside = tmp_path / "outside"
    real = store.state / linked
    shutil.move(str(real), str(outside))
    os.symlink(outside, real)
    env_before, outside_before = snapshot(store.env), snapshot(outside)
    for args in (["rollback", "--yes"], ["rollback", "--to", "2", "--yes"], ["gc", "--keep", "1", "--yes"]):
        run = tfr(kit_env, *args, "--env", store.env)
        refused(run)
        assert "symbolic link" in run.err, str(run)
    assert snapshot(store.env) == env_before and (store.env / "MARKER").read_text() == "gen3"
    assert snapshot(outside) == outside_before


def test_the_exchange_itself_refuses_a_link_on_the_way(tmp_path):
    """Even a caller past the open-time check (the link planted after it) exchanges nothing through a link."""
    store = managed(tmp_path / "tf", 3)
    outside = tmp_path / "outside"
    with store.lock("test"):
        shutil.move(str(store.generation_dir(2)), str(outside))
        os.symlink(outside, store.generation_dir(2))
        with pytest.raises(Exception, match="symbolic link"):
            store.rollback_to(2)
    assert (store.env / "MARKER").read_text() == "gen3"
    assert (outside / "env" / "MARKER").read_text() == "gen2"
    assert Store.__name__  # the store object stays usable for inspection


def test_rollback_and_upgrade_on_a_real_env_never_take_a_changed_state_file_for_a_recreated_env(
    tmp_path, kit_env, kit_index
):
    """A real kit env (generation 3 at the path) whose store.toml says generation 1 is current: rollback and upgrade
    refuse; nothing is recorded as an env made outside tfrebuild (issue 22's adoption is for a tree of no record)."""
    from tests.test_generations import _fast_managed

    env = _fast_managed(tmp_path / "p" / "tf", 3, kit_index, kit_env)
    store = Store.open(env)
    store.store_file.write_text(re.sub(r"(?m)^current = \d+", "current = 1", store.store_file.read_text()))
    before, env_before = snapshot(store.state / "generations"), snapshot(env)
    for args in (
        ["rollback", "--yes"],
        ["upgrade", "--to", "2.16", "--offline", "--find-links", kit_index, "--yes"],
        ["gc", "--keep", "1", "--yes"],
    ):
        run = tfr(kit_env, *args, "--env", env)
        refused(run)
        assert "generation 3's tree" in run.err, str(run)
    assert snapshot(store.state / "generations") == before and snapshot(env) == env_before
