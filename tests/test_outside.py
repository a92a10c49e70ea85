"""An env recreated or changed outside tfrebuild continues its history (offline, on the kit's wheels).

A user upgrades, then recreates the venv by hand with pip (``rm -rf .venv && python -m venv .venv &&
pip install …``) and upgrades again: ``status`` says the tree at the path is not the recorded generation and
what differs; ``upgrade`` adopts the env as it is now as a new generation before anything else and builds on
it; every earlier generation whose tree is kept stays reachable, ``rollback --to 1`` included.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from tests.kit.cli import run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


def _state(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def _tf_at(env: Path) -> list[str]:
    (site,) = env.glob("lib/python3.*/site-packages")
    return sorted(p.name for p in site.glob("tensorflow_cpu-*.dist-info"))


@pytest.mark.slow
def test_venv_recreated_with_pip_between_two_upgrades(make_venv, kit_env, kit_index, tmp_path):
    env = make_venv(tmp_path / "proj" / ".venv", CLASSIC)

    def cli(*args: str):
        return run_cli(kit_env, *args[:1], "--env", env, *args[1:], cwd=tmp_path)

    offline = ("--offline", "--find-links", str(kit_index))
    first = cli("upgrade", "--to", "2.16", "--yes", *offline)
    assert first.code == 0, first.err
    assert _tf_at(env) == ["tensorflow_cpu-2.16.1.dist-info"]

    # The user recreates the venv by hand, with pip (a stdlib venv, another directory at the same path).
    shutil.rmtree(env)
    make_venv(env, ["tensorflow-cpu==2.18.0", "scipy==1.11.4", "pandas", "numpy==1.26.4"], creator="venv")

    status = cli("status")
    assert status.code == 0, status.err
    assert "is not generation 2 as tfrebuild recorded it: it was recreated outside tfrebuild" in status.out, status.out
    assert "tensorflow-cpu 2.16.1 → 2.18.0" in status.out, status.out
    doc = cli("status", "--json").json()
    assert doc["current"] == 2 and "recreated outside tfrebuild" in doc["drift"], doc

    second = cli("upgrade", "--to", "2.20", "--yes", "--json", *offline)
    assert second.code == 0, second.err
    done = second.json()
    assert done["adopted"].startswith(f"adopted {env} as generation 3 (tensorflow-cpu 2.18.0)"), done["adopted"]
    assert (done["generation"], done["previous"]) == (4, 3), done
    assert done["plan"]["tf_old"] == "2.18.0" and done["plan"]["tf_new"] == "2.20.0", done["plan"]
    assert _tf_at(env) == ["tensorflow_cpu-2.20.0.dist-info"]

    history = cli("history", "--json").json()
    rows = {r["number"]: r for r in history["rows"]}
    assert rows[3]["command"] == "adopted: recreated outside tfrebuild" and rows[3]["present"], rows
    assert rows[3]["tensorflow"] == "tensorflow-cpu 2.18.0"
    assert not rows[2]["present"], "generation 2's tree was removed by the user; its record stays"
    meta2 = tomllib.loads((_state(env) / "generations" / "2" / "meta.toml").read_text())
    assert "recreated outside tfrebuild" in meta2["note"], meta2
    assert (_state(env) / "generations" / "3" / "profile.toml").is_file(), "the adopted env's profile, taken fresh"

    # Every generation with a tree is reachable: the hand-made one, and generation 1 from before it all.
    back = cli("rollback", "--yes")
    assert back.code == 0, back.err
    assert _tf_at(env) == ["tensorflow_cpu-2.18.0.dist-info"]
    to1 = cli("rollback", "--to", "1", "--yes")
    assert to1.code == 0, to1.err
    assert _tf_at(env) == ["tensorflow_cpu-2.15.1.dist-info"]
    lost = cli("rollback", "--to", "2", "--yes")
    assert lost.code != 0 and "no environment tree any more" in lost.err, lost.err
    assert cli("status").out.count("recreated outside") == 0, "the env at the path is generation 1's tree again"


@pytest.mark.slow
def test_packages_changed_in_place_are_adopted_first(make_venv, kit_env, kit_index, tmp_path, uv):
    env = make_venv(tmp_path / "tf", CLASSIC)

    def cli(*args: str):
        return run_cli(kit_env, *args[:1], "--env", env, *args[1:], cwd=tmp_path)

    offline = ("--offline", "--find-links", str(kit_index))
    assert cli("upgrade", "--to", "2.16", "--yes", *offline).code == 0
    # `pip install --upgrade` in place (here uv pip, as the kit's installer): the same directory, other packages
    uv("pip", "install", "--python", env / "bin" / "python", "--offline", "--find-links", kit_index, "scipy==1.14.1")
    status = cli("status")
    assert "changed in place outside tfrebuild" in status.out and "scipy 1.11.4 → 1.14.1" in status.out, status.out

    # A refusal that does not depend on the plan comes before any resolution or adoption.
    refused = cli("upgrade", "--to", "nonsense", "--yes", *offline)
    assert refused.code == 2 and "resolve" not in refused.err and "adopted" not in refused.out, refused.err
    assert not (_state(env) / "generations" / "3").exists()

    again = cli("upgrade", "--to", "2.18", "--yes", "--json", *offline)
    assert again.code == 0, again.err
    doc = again.json()
    assert "as generation 3" in doc["adopted"] and "changed in place" in doc["adopted"], doc["adopted"]
    assert (doc["generation"], doc["previous"]) == (4, 3), doc
    assert cli("rollback", "--to", "1", "--yes").code == 0
    assert _tf_at(env) == ["tensorflow_cpu-2.15.1.dist-info"]


@pytest.mark.slow
def test_venv_cleared_in_place_is_recreated_not_the_same_tree(make_venv, kit_env, kit_index, tmp_path, uv):
    """`python -m venv --clear .venv` recreates the venv in the same directory (same inode), at once after the
    upgrade: still recreated. The directory's inode cannot tell (a directory deleted and made again can get the freed
    inode back, as CI once saw), nor can the record's whole-second time: the venv's own stamp does."""
    import subprocess

    from tests.kit.venvs import find_python

    python = find_python("3.11")
    if python is None:
        pytest.skip("Python 3.11 is not installed here")
    env = make_venv(tmp_path / "tf", CLASSIC)

    def cli(*args: str):
        return run_cli(kit_env, *args[:1], "--env", env, *args[1:], cwd=tmp_path)

    offline = ("--offline", "--find-links", str(kit_index))
    assert cli("upgrade", "--to", "2.16", "--yes", *offline).code == 0
    inode = env.stat().st_ino
    meta = tomllib.loads((_state(env) / "generations" / "2" / "meta.toml").read_text())
    assert meta["venv"] == "{0.st_ino}:{0.st_mtime_ns}".format((env / "pyvenv.cfg").stat()), meta
    subprocess.run([str(python), "-m", "venv", "--clear", "--without-pip", str(env)], check=True)
    assert env.stat().st_ino == inode
    uv("pip", "install", "--python", env / "bin" / "python", "--offline", "--find-links", kit_index, *CLASSIC)
    status = cli("status")
    assert "it was recreated outside tfrebuild (the venv at the path was made again;" in status.out, status.out
    up = cli("upgrade", "--to", "2.18", "--yes", "--json", *offline)
    assert up.code == 0, up.err
    assert "as generation 3 (tensorflow-cpu 2.15.1)" in up.json()["adopted"], up.json()["adopted"]
    assert cli("rollback", "--to", "1", "--yes").code == 0
    assert _tf_at(env) == ["tensorflow_cpu-2.15.1.dist-info"]
