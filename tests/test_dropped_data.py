"""Issue 23, point 5: nothing the user has is dropped silently.

Real kit venvs, real upgrades (offline, the kit's index):

- the user's own ``.pth`` file and loose module and package in site-packages are carried into the new env
  (``plan`` and ``upgrade`` say "carried into the new env"; ``--json`` has ``carried_by_rebuild``) and import
  after the upgrade; one that is a symbolic link is not carried, and the plan says why;
- ``include-system-site-packages = true`` is kept: a package only the system site-packages provide still imports;
- a distribution whose metadata is broken (no METADATA, garbage, no Name/Version) is named "not carried" with what
  to do; its import worked before, so the upgrade refuses before the swap, naming it, and the env is unchanged.
Files a distribution installed (``distutils-precedence.pth`` of setuptools, uv's ``_virtualenv.pth``) are not named.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli, tree_state

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed"), pytest.mark.slow]


def _tfr(kit_env, verb, env, kit_index, tmp_path, *more, timeout=300):
    """``tfrebuild <verb> --env ENV --offline --find-links <kit> --to 2.16 MORE…``."""
    args = ("--env", env, "--offline", "--find-links", kit_index, "--to", "2.16", *more)
    return run_cli(kit_env, verb, *args, cwd=tmp_path, timeout=timeout)


def _upgrade(kit_env, env, kit_index, tmp_path, *more):
    """``tfrebuild upgrade --to 2.16 --yes`` of ``env`` from the kit's wheels, offline."""
    return _tfr(kit_env, "upgrade", env, kit_index, tmp_path, "--yes", *more)


def site(env: Path) -> Path:
    (sp,) = env.glob("lib/python3.*/site-packages")
    return sp


def py(env: Path, code: str, venv_run) -> str:
    run = venv_run(env, code)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip()


def the_users_files(env: Path, tmp_path: Path) -> None:
    sp = site(env)
    (sp / "mytool.py").write_text("X = 1\n")  # a loose module of the user's
    (sp / "mypkg").mkdir()
    (sp / "mypkg" / "__init__.py").write_text("Y = 2\n")  # a loose package
    src = tmp_path / "src"
    src.mkdir()
    (src / "srcmod.py").write_text("Z = 3\n")
    (sp / "extra-paths.pth").write_text(str(src) + "\n")  # the user's own .pth
    (tmp_path / "elsewhere.py").write_text("W = 4\n")
    (sp / "linked.py").symlink_to(tmp_path / "elsewhere.py")  # a link: never followed, never carried
    if os.geteuid() == 0:  # another user's file in root's env: not carried
        (sp / "theirs.py").write_text("V = 5\n")
        os.chown(sp / "theirs.py", 65534, 65534)


def system_site(env: Path) -> None:
    cfg = env / "pyvenv.cfg"
    cfg.write_text(
        cfg.read_text().replace("include-system-site-packages = false", "include-system-site-packages = true")
    )


def system_only_module(env: Path, venv_run) -> str:
    """A top-level module the env imports only through the system site-packages (skip when there is none)."""
    for name in ("annotated_types", "attr", "blinker", "pip", "six", "idna"):
        if not list(site(env).glob(f"{name}*")) and venv_run(env, f"import {name}").returncode == 0:
            return name
    pytest.skip("the base interpreter's site-packages has none of the candidate modules")


@pytest.mark.parametrize("damage", ["no-metadata", "garbage", "no-name"])
def test_plan_says_what_is_carried_and_what_is_not(damage, make_venv, kit_env, kit_index, tmp_path):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    sp = site(env)
    the_users_files(env, tmp_path)
    (dist,) = sp.glob("scipy-*.dist-info")
    meta = dist / "METADATA"
    if damage == "no-metadata":
        meta.unlink()
    elif damage == "garbage":
        meta.write_bytes(b"\xff\xfe garbage \x00\n")
    else:
        meta.write_text("Metadata-Version: 2.1\nSummary: no name, no version\n")
    system_site(env)
    (sp / "tfrebuild-legacy-keras.pth").write_text("import os\n")  # tfrebuild's own: the Keras mode decides it
    run = _tfr(kit_env, "plan", env, kit_index, tmp_path, "--keras", "3", timeout=180)
    assert "Traceback" not in run.text, str(run)
    text = run.out
    assert "fixed by this upgrade) broken-dist-info" not in text, text
    assert "(not carried into the new env) broken-dist-info" in text, text
    carried = [line for line in text.splitlines() if "(carried into the new env)" in line]
    assert any("mytool" in line for line in carried) and any("extra-paths.pth" in line for line in carried), text
    assert any("mypkg" in line for line in carried), text
    assert "(carried into the new env) system-site-packages" in text, text
    assert any("linked" in line and "(not carried into the new env)" in line for line in text.splitlines()), text
    assert "linked.py is a symbolic link" in text, text
    if os.geteuid() == 0:
        assert "theirs.py belongs to uid 65534, not to the env's owner (uid 0)" in text, text
    assert "_virtualenv.pth" not in text and "legacy-keras" not in text, text
    doc = _tfr(kit_env, "plan", env, kit_index, tmp_path, "--keras", "3", "--json", timeout=180).json()
    found = doc["plan"]["preflight"]
    assert {f["id"] for f in found if f.get("carried_by_rebuild")} == {"orphan-package", "system-site-packages"}, found
    assert {f["id"] for f in found if f.get("dropped_by_rebuild")} == {"broken-dist-info", "orphan-package"}, found
    assert all(f["fix"] for f in found if f.get("dropped_by_rebuild") or f.get("carried_by_rebuild"))
    items = {Path(i["path"]).name: i for i in doc["plan"]["carry"]["items"]}
    assert items["mytool.py"]["carried"] and items["extra-paths.pth"]["carried"] and items["mypkg"]["carried"]
    assert not items["linked.py"]["carried"] and "symbolic link" in items["linked.py"]["why"]
    assert doc["plan"]["carry"]["system_site"] is True and "tfrebuild-legacy-keras.pth" not in items
    assert "scipy" in doc["plan"]["carry"]["imports"], doc["plan"]["carry"]


def test_upgrade_carries_the_users_files_and_system_site(make_venv, kit_env, kit_index, tmp_path, venv_run):
    """scipy too: a system package that requires it (this machine's base Python has some) made it "a dependency" and
    the plan dropped it ("no longer required"); only the env's own packages make a package a dependency now."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    the_users_files(env, tmp_path)
    system_site(env)
    system = system_only_module(env, venv_run)
    probe = (
        f"import mytool, mypkg, srcmod, scipy, {system}, tensorflow; print(tensorflow.__version__, mytool.X + mypkg.Y)"
    )
    assert py(env, probe, venv_run) == "2.15.1 3"
    run = _upgrade(kit_env, env, kit_index, tmp_path)
    assert run.code == 0, str(run)
    assert "Traceback" not in run.text
    assert "(carried into the new env) orphan-package: mytool" in run.out, run.out
    assert "(carried into the new env) system-site-packages" in run.out, run.out
    assert py(env, probe, venv_run) == "2.16.1 3"
    assert "include-system-site-packages = true" in (env / "pyvenv.cfg").read_text()
    sp = site(env)
    assert not (sp / "mytool.py").is_symlink() and (sp / "mytool.py").read_text() == "X = 1\n"
    assert not (sp / "linked.py").exists()  # a link is never carried (the plan said so)
    old = next((tmp_path / ".tf.tfrebuild" / "generations").glob("1/env"))
    assert (site(old) / "mytool.py").is_file()  # generation 1 keeps the user's files as they were


def test_broken_metadata_that_imports_stops_the_upgrade_with_a_repair_that_works(
    make_venv, kit_env, kit_index, tmp_path, venv_run
):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    (dist,) = site(env).glob("scipy-*.dist-info")
    (dist / "METADATA").unlink()
    assert py(env, "import scipy; print('ok')", venv_run) == "ok"
    before = tree_state(env)
    run = _upgrade(kit_env, env, kit_index, tmp_path)
    assert run.code == 1, str(run)
    assert "Traceback" not in run.text, str(run)
    assert "scipy import(s) in" in run.err and str(dist) in run.err, run.err
    assert "stops before building; nothing was changed" in run.err, run.err
    assert "build:" not in run.err  # refused before anything was built
    assert tree_state(env) == before
    assert not (tmp_path / ".tf.tfrebuild").exists()
    # the repair the hint gives, run as given (offline, from the kit), then the upgrade goes through
    (repair,) = re.findall(r"`(rm -rf [^`]+)`", run.err)
    assert "--reinstall --no-deps scipy==1.11.4" in repair, repair  # that project only: nothing else moves
    path = f"{Path(sys.executable).parent}:{kit_env.get('PATH', '')}"  # uv: the one installed with tfrebuild
    done = subprocess.run(
        repair,
        shell=True,
        env={**kit_env, "UV_FIND_LINKS": str(kit_index), "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    again = _upgrade(kit_env, env, kit_index, tmp_path)
    assert again.code == 0, str(again)
    assert py(env, "import scipy, tensorflow; print(tensorflow.__version__)", venv_run) == "2.16.1"


def test_broken_metadata_that_does_not_import_is_named_only(make_venv, kit_env, kit_index, tmp_path, venv_run):
    """Its files are gone too (a half-finished uninstall): nothing imports, so nothing is lost; the upgrade goes on and
    the plan still names the folder."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    (dist,) = site(env).glob("scipy-*.dist-info")
    (dist / "METADATA").unlink()
    shutil.rmtree(site(env) / "scipy")
    run = _upgrade(kit_env, env, kit_index, tmp_path)
    assert run.code == 0, str(run)
    assert "(not carried into the new env) broken-dist-info" in run.out, run.out


def test_broken_metadata_of_a_dependency_the_lock_reinstalls(make_venv, kit_env, kit_index, tmp_path, venv_run):
    """absl-py (a dependency of TensorFlow) with garbage METADATA: the lock installs it again, so the upgrade goes on
    and ``import absl`` works after it."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    (dist,) = site(env).glob("absl_py-*.dist-info")
    (dist / "METADATA").write_bytes(b"\xff\xfe garbage\n")
    run = _upgrade(kit_env, env, kit_index, tmp_path)
    assert run.code == 0, str(run)
    assert "(fixed by this upgrade) broken-dist-info: metadata folder absl_py" in run.out, run.out
    assert py(env, "import absl, tensorflow; print(tensorflow.__version__)", venv_run) == "2.16.1"


def test_pip_marks_survive_a_uv_install_into_the_env(make_venv, kit_env, tmp_path, uv):
    """A pip-made env (REQUESTED on what the user named) with one package later reinstalled by uv (which marks all it
    installs): pip's marks still count, so numpy, named by the user, stays requested (it was ignored with every other
    mark, and on a real env scipy went with it: "no longer required")."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "numpy==1.24.3"], creator="venv")
    uv("pip", "install", "--python", env / "bin" / "python", "--reinstall", "--no-deps", "absl-py==2.1.0")
    doc = run_cli(kit_env, "snapshot", "--env", env, "--json", cwd=tmp_path, timeout=120).json()
    profile = doc.get("profile", doc)
    assert "numpy" in profile["requested"], profile["requested"]
    assert "absl-py" not in profile["requested"], profile["requested"]


def test_upgrade_again_after_rollback_builds_with_the_users_files_as_they_are(
    make_venv, kit_env, kit_index, tmp_path, venv_run
):
    """A kept generation with the planned set is switched to instead of built ("already holds this set"), but its
    tree holds the user's files as they were then: with files to carry, the upgrade builds afresh and carries them."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    (site(env) / "mytool.py").write_text("X = 1\n")
    cli = ["--env", env, "--offline", "--find-links", kit_index]
    assert run_cli(kit_env, "upgrade", *cli, "--to", "2.16", "--yes", cwd=tmp_path, timeout=300).code == 0
    assert run_cli(kit_env, "rollback", "--env", env, "--yes", cwd=tmp_path, timeout=120).code == 0
    (site(env) / "mytool.py").write_text("X = 2\n")  # changed since generation 2 was built
    run = run_cli(kit_env, "upgrade", *cli, "--to", "2.16", "--yes", cwd=tmp_path, timeout=300)
    assert run.code == 0, str(run)
    assert "already holds this set" not in run.text, run.text
    assert py(env, "import mytool, tensorflow; print(tensorflow.__version__, mytool.X)", venv_run) == "2.16.1 2"
