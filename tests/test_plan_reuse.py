"""Plan then upgrade resolves once (issue 26 point 2): ``upgrade`` right after ``plan`` with the same inputs reuses
the plan's resolution and says so; other inputs, a stale entry or an entry tfrebuild cannot trust are not reused.

Offline against the kit's local index, real uv, real venvs. The plan cache is a folder of the test's own
(``TFREBUILD_PLAN_CACHE``; the kit turns it off elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rebuild.core import plan as planning
from rebuild.core import reuse
from tests.kit.cli import run_cli

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed"), pytest.mark.slow]

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]
NOBODY = 65534


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_upgrade_right_after_plan_reuses_its_resolution(make_venv, kit_env, kit_index, tmp_path: Path) -> None:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    cache = tmp_path / "plans"
    common = ("--env", env, "--offline", "--find-links", kit_index, "--to", "2.18", "--json")
    over = {"TFREBUILD_PLAN_CACHE": str(cache)}

    planned = run_cli(kit_env, "plan", *common, overrides=over, cwd=tmp_path)
    assert planned.code == 0, planned.err
    plan_doc = planned.json()["plan"]
    assert plan_doc["resolution_reused"] == []  # a plan always resolves itself
    kept = entries(cache)
    assert kept, "plan kept no resolution"
    for entry in kept:  # this user's, no one else's to read or write
        st = os.lstat(entry)
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, os.geteuid())
    assert os.lstat(cache).st_mode & 0o077 == 0

    upgraded = run_cli(kit_env, "upgrade", *common, "--yes", overrides=over, cwd=tmp_path)
    assert upgraded.code == 0, upgraded.err
    doc = upgraded.json()
    reused = doc["plan"]["resolution_reused"]
    assert reused and "tensorflow-cpu 2.18.0" in reused[0] and "tfrebuild plan" in reused[0], reused
    assert any(n.startswith("resolution reused: ") for n in doc["plan"]["notes"]), doc["plan"]["notes"]
    # the same result as the plan's fresh resolution: every change, and what landed in the env
    assert doc["plan"]["changes"] == plan_doc["changes"]
    assert doc["changed"] is True and doc["plan"]["tf_new"] == "2.18.0"
    # the stages are timed; every import passed in the new env, so none ran in the old env (core/baseline.py: its
    # import checks run only when one fails)
    assert {"snapshot", "resolve", "build", "checks", "swap", "verify"} <= set(doc["stages"]), doc["stages"]
    assert doc["overlap"]["baseline"] == {"ran": False, "seconds": None, "waited_seconds": 0}
    landed = subprocess.run(
        [env / "bin" / "python", "-c", "import numpy, scipy; print(numpy.__version__, scipy.__version__)"],
        capture_output=True,
        text=True,
        env=kit_env,
    )
    news = {c["name"]: c["new"] for c in plan_doc["changes"]}
    assert landed.stdout.split() == [news.get("numpy", "1.24.3"), news.get("scipy", "1.11.4")], landed

    # a plan never takes a kept resolution: it always resolves (its time is what it measures)
    text_plan = run_cli(kit_env, "plan", *common[:-1], overrides=over, cwd=tmp_path)
    assert text_plan.code == 0 and "resolution reused" not in text_plan.out, text_plan.out


@pytest.fixture
def inproc(make_venv, kit_os_env, kit_index, tmp_path, monkeypatch):
    """``make(mode, **options)``: make_plan in-process on a classic kit env with a Reuse of ``mode``."""
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    cache = tmp_path / "plans"
    monkeypatch.setenv("TFREBUILD_PLAN_CACHE", str(cache))

    def make(mode: str, **options) -> tuple[planning.Plan, reuse.Reuse]:
        used = reuse.Reuse(mode)
        opts = planning.Options(env=env, to="2.18", offline=True, find_links=[str(kit_index)], **options)
        return planning.make_plan(opts, reuse=used), used

    make.env, make.cache = env, cache
    return make


def test_other_inputs_stale_or_foreign_entries_are_not_reused(inproc, uv, kit_index) -> None:
    fresh, _ = inproc("record")
    assert entries(inproc.cache)

    # another option (the strategy): another resolution, not the plan's
    eager, used = inproc("reuse", strategy="eager")
    assert eager.resolution_reused == [] and used.used == []

    # the same inputs: reused, with the same pins and lock
    again, used = inproc("reuse")
    assert again.resolution_reused and again.pylock == fresh.pylock
    assert [(c.name, c.old, c.new) for c in again.changes] == [(c.name, c.old, c.new) for c in fresh.changes]

    # a stale entry is ignored silently (upgrade resolves as before)
    for entry in entries(inproc.cache):
        data = json.loads(entry.read_text())
        data["created"] -= reuse.TTL + 1
        entry.write_text(json.dumps(data))
    stale, used = inproc("reuse")
    assert stale.resolution_reused == [] and used.refused == []
    assert not any("resolution" in n for n in stale.notes), stale.notes
    assert stale.pylock == fresh.pylock

    # an entry someone else owns is not read, and the plan says why
    inproc("record")
    for entry in entries(inproc.cache):
        os.chown(entry, NOBODY, NOBODY)
    foreign, used = inproc("reuse")
    assert foreign.resolution_reused == [] and used.refused, used
    assert any(n.startswith("resolution not reused: ") and f"uid {NOBODY}" in n for n in foreign.notes), foreign.notes

    # a cache folder others can write is neither read nor written
    shutil.rmtree(inproc.cache)
    inproc("record")
    os.chmod(inproc.cache, 0o777)
    opened, used = inproc("reuse")
    assert opened.resolution_reused == [] and any("can be written by other users" in r for r in used.refused)
    os.chmod(inproc.cache, 0o700)

    # the env changed (another numpy installed): its pins are other preferences, so the entry does not match
    inproc("record")
    uv(
        "pip",
        "install",
        "--no-index",
        "--find-links",
        kit_index,
        "--python",
        inproc.env / "bin" / "python",
        "numpy==1.23.5",
    )
    changed, used = inproc("reuse")
    assert changed.resolution_reused == [] and used.used == []


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"),
    reason="needs root and setpriv(1) to act as another user",
)
def test_a_strangers_plan_cache_is_refused(make_venv, kit_env, kit_index, tmp_path: Path, request) -> None:
    """Another user makes the plan cache (a shared ``XDG_CACHE_HOME``) and plants an entry under the right name:
    the upgrade reads nothing from it and resolves on its own."""
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    shared = Path(tempfile.mkdtemp(prefix="tfr-scratch-", dir="/tmp"))  # a sticky folder both users reach
    os.chmod(shared, 0o1777)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    cache = shared / "plans"
    common = ("--env", env, "--offline", "--find-links", kit_index, "--to", "2.18", "--json")
    over = {"TFREBUILD_PLAN_CACHE": str(cache)}
    planned = run_cli(kit_env, "plan", *common, overrides=over, cwd=tmp_path)
    assert planned.code == 0, planned.err
    (kept,) = entries(cache)
    planted = json.loads(kept.read_text())
    planted["resolved"]["pins"]["numpy"] = "9.9.9"
    shutil.rmtree(cache)
    script = (
        f"import os, json; os.makedirs({str(cache)!r}, mode=0o755); "
        f"open({str(kept)!r}, 'w').write({json.dumps(planted)!r})"
    )
    made = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3", "-I", "-c", script],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert os.lstat(kept).st_uid == NOBODY
    upgraded = run_cli(kit_env, "upgrade", *common, "--yes", overrides=over, cwd=tmp_path)
    assert upgraded.code == 0, upgraded.err
    doc = upgraded.json()
    assert doc["plan"]["resolution_reused"] == []
    assert any(n.startswith("resolution not reused: ") and "belongs to" in n for n in doc["plan"]["notes"])
    assert all(c["new"] != "9.9.9" for c in doc["plan"]["changes"])


@pytest.mark.parametrize("nested", [False, True], ids=["the-file", "a-file-it-names"])
def test_a_constraint_file_is_keyed_by_its_content(inproc, tmp_path, nested: bool) -> None:
    """What a constraints file says decides the resolution: an edit to it makes the plan's resolution another one;
    so does an edit to a file its ``-c``/``-r`` lines name, which uv reads too (a company's pip.conf constraint file
    often includes a shared one)."""
    edited_file = tmp_path / "shared" / "pins.txt"
    edited_file.parent.mkdir()
    edited_file.write_text("numpy<2\n")
    top = tmp_path / "top.txt"
    if nested:
        top.write_text("-c shared/pins.txt\n")
    else:
        top = edited_file
    inproc("record", constraints=[str(top)])
    kept, used = inproc("reuse", constraints=[str(top)])
    assert kept.resolution_reused, used
    edited_file.write_text("numpy<1.27\n")
    edited, used = inproc("reuse", constraints=[str(top)])
    assert edited.resolution_reused == [] and used.used == []


def test_a_named_file_that_cannot_be_read_means_no_reuse(tmp_path) -> None:
    shared = tmp_path / "shared" / "pins.txt"
    shared.parent.mkdir()
    shared.write_text("numpy<2\n")
    top = tmp_path / "top.txt"
    top.write_text("-c shared/pins.txt\n")
    from rebuild.core import reuse

    assert reuse._content(str(top), set()) is not None
    shared.unlink()  # a named file that cannot be read: never reused (uv would refuse it anyway)
    assert reuse._content(str(top), set()) is None
