"""Every distribution keeps its source through plan and upgrade (issue 12, points 1 and 2).

Offline on the kit: a venv with the classic TF 2.15 set plus packages installed from local
sources (an editable project whose name also exists on the index with a higher version, a
local folder, a local wheel file, a git repository) is upgraded; each one comes back from
where it was installed, never from the index by name. A gone local source is refused before
any build; tfrebuild installed in the env is left out and never requested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.kit.wheels import build_wheel

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "numpy==1.24.3"]


def _project(root: Path, name: str, version: str, deps: list[str], value: str = "1") -> Path:
    """A setuptools project (setuptools comes from the kit index, so it builds offline)."""
    pkg = name.replace("-", "_")
    (root / pkg).mkdir(parents=True)
    (root / pkg / "__init__.py").write_text(f"VALUE = {value}\n__version__ = '{version}'\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
        dependencies = {json.dumps(deps)}
        [tool.setuptools]
        packages = ["{pkg}"]
        """)
    )
    return root


def _direct_url(env: Path, name: str) -> dict:
    (info,) = env.glob(f"lib/python3.*/site-packages/{name}-*.dist-info")
    return json.loads((info / "direct_url.json").read_text())


@pytest.fixture
def decoys(tmp_path: Path) -> Path:
    """An index folder with unrelated projects named like the local ones, at higher versions."""
    folder = tmp_path / "decoys"
    for name in ("mymodel", "localfolder", "localwheel", "vcsmod"):
        build_wheel(folder, name, "9.0.0", modules={f"{name}/__init__.py": "VALUE = 'decoy'\n"})
    return folder


@pytest.fixture
def local_env(make_venv, uv, tmp_path: Path) -> dict:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    py = env / "bin" / "python"
    src = tmp_path / "src"
    mymodel = _project(src / "mymodel", "mymodel", "0.1.0", ["six", "tensorflow-cpu"])
    folder = _project(src / "localfolder", "localfolder", "0.2.0", [])
    wheel_src = _project(src / "localwheel", "localwheel", "0.3.0", [])
    uv("build", "--wheel", "-o", src / "dist", wheel_src)
    (wheel,) = (src / "dist").glob("localwheel-*.whl")
    repo = _project(src / "vcsmod", "vcsmod", "0.4.0", [])
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "one"], check=True)
    commit = subprocess.run(git[:3] + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    uv("pip", "install", "--python", py, "-e", mymodel, folder, wheel, f"git+{repo.as_uri()}")
    return {"env": env, "mymodel": mymodel, "folder": folder, "wheel": wheel, "repo": repo, "commit": commit}


def _cli(kit_env, kit_index, decoys, tmp_path, *args):
    links = ["--find-links", str(kit_index), "--find-links", str(decoys)]
    return run_cli(kit_env, *args, "--offline", *links, cwd=tmp_path)


@pytest.mark.slow
def test_upgrade_keeps_every_local_source(local_env, kit_env, kit_index, decoys, tmp_path, venv_run) -> None:
    env = local_env["env"]
    plan = _cli(kit_env, kit_index, decoys, tmp_path, "plan", "--env", env, "--to", "2.18", "--json")
    assert plan.code == 0, plan
    doc = plan.json()["plan"]
    changed = {c["name"] for c in doc["changes"]}
    assert not changed & {"mymodel", "localfolder", "localwheel", "vcsmod", "six"}, doc["changes"]
    assert any("mymodel 0.1.0 is reinstalled editable from" in n for n in doc["notes"]), doc["notes"]

    res = _cli(kit_env, kit_index, decoys, tmp_path, "upgrade", "--env", env, "--to", "2.18", "--yes")
    assert res.code == 0, res
    proc = venv_run(
        env,
        "import mymodel, localfolder, localwheel, vcsmod, six, tensorflow as tf; "
        "print(mymodel.VALUE, localfolder.VALUE, localwheel.VALUE, vcsmod.VALUE, tf.__version__)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "1", "1", "2.18.0"], proc.stdout  # never the decoys
    # still editable, from the same folder: an edit shows on the next import
    assert _direct_url(env, "mymodel") == {"url": local_env["mymodel"].as_uri(), "dir_info": {"editable": True}}
    (local_env["mymodel"] / "mymodel" / "__init__.py").write_text("VALUE = 2\n")
    assert venv_run(env, "import mymodel; print(mymodel.VALUE)").stdout.strip() == "2"
    assert _direct_url(env, "localfolder")["url"] == local_env["folder"].as_uri()
    assert _direct_url(env, "localwheel")["url"] == local_env["wheel"].as_uri()
    vcs = _direct_url(env, "vcsmod")
    assert vcs["url"] == local_env["repo"].as_uri() and vcs["vcs_info"]["commit_id"] == local_env["commit"], vcs


@pytest.mark.slow
def test_gone_local_source_is_refused_before_any_build(local_env, kit_env, kit_index, decoys, tmp_path) -> None:
    env = local_env["env"]
    moved = local_env["folder"].with_name("moved")
    local_env["folder"].rename(moved)
    res = _cli(kit_env, kit_index, decoys, tmp_path, "upgrade", "--env", env, "--to", "2.18", "--yes")
    assert res.code == 1, res
    assert "localfolder 0.2.0" in res.err and str(local_env["folder"]) in res.err, res.err
    assert "uninstall" in res.err and "Traceback" not in res.err, res.err
    assert not (env.parent / f".{env.name}.tfrebuild").exists()  # nothing built, nothing adopted


@pytest.mark.slow
def test_tfrebuild_in_the_env_is_left_out_and_never_requested(
    make_venv, uv, kit_env, kit_index, tmp_path, venv_run
) -> None:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC + ["six"])
    # a stand-in tfrebuild (offline: the real one's dependencies are not on the kit index), installed the way
    # `pip install .` does (from a local folder), with a dependency only it needs
    tool = _project(tmp_path / "src" / "tfrebuild", "tfrebuild", "0.9.0", ["six"])
    uv("pip", "install", "--python", env / "bin" / "python", tool)
    snap = run_cli(kit_env, "snapshot", "--env", env, "-o", tmp_path / "p.toml", cwd=tmp_path)
    assert snap.code == 0, snap
    text = (tmp_path / "p.toml").read_text()
    import tomllib

    profile = tomllib.loads(text)
    assert "tfrebuild" not in profile["requested"] and "rebuild" not in profile["smoke"]["imports"], profile
    res = run_cli(
        kit_env,
        "upgrade",
        "--env",
        env,
        "--to",
        "2.18",
        "--yes",
        "--json",
        "--offline",
        "--find-links",
        kit_index,
        cwd=tmp_path,
    )
    assert res.code == 0, res
    doc = res.json()
    (gone,) = [c for c in doc["plan"]["changes"] if c["name"] == "tfrebuild"]
    assert gone["new"] is None and "left out" in gone["reason"], gone
    assert venv_run(env, "import importlib.util as u; print(u.find_spec('tfrebuild'))").stdout.strip() == "None"


def test_upgrade_refuses_the_env_it_runs_from(make_venv, kit_env, kit_index, tmp_path) -> None:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    # run tfrebuild with that env's interpreter (its sys.prefix is the env), from this checkout
    import sysconfig

    root = Path(__file__).resolve().parent.parent
    path = f"{root}:{sysconfig.get_paths()['purelib']}"  # this checkout and its dependencies (typer, uv, ...)
    proc = subprocess.run(
        [
            str(env / "bin" / "python"),
            "-m",
            "rebuild",
            "upgrade",
            "--env",
            str(env),
            "--yes",
            "--offline",
            "--find-links",
            str(kit_index),
        ],
        env={**kit_env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "uv tool install" in proc.stderr and "pipx install" in proc.stderr, proc.stderr
    assert not (env.parent / f".{env.name}.tfrebuild").exists()


@pytest.mark.slow
def test_export_keeps_local_sources(local_env, kit_env, kit_index, decoys, tmp_path, uv, venv_run) -> None:
    env, out = local_env["env"], tmp_path / "requirements.txt"
    res = _cli(kit_env, kit_index, decoys, tmp_path, "export", "--env", env, "--format", "requirements", "-o", out)
    assert res.code == 0, res
    text = out.read_text()
    assert f"-e {local_env['mymodel']}" in text, text
    assert f"localfolder @ {local_env['folder'].as_uri()}" in text, text
    assert f"localwheel @ {local_env['wheel'].as_uri()}" in text, text
    assert f"vcsmod @ git+{local_env['repo'].as_uri()}@{local_env['commit']}" in text, text
    fresh = tmp_path / "fresh"
    uv("venv", "--python", env / "bin" / "python", fresh)
    uv("pip", "sync", "--python", fresh / "bin" / "python", out)
    proc = venv_run(fresh, "import mymodel, localfolder, localwheel, vcsmod; print(mymodel.VALUE, vcsmod.VALUE)")
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "1"], proc.stderr


@pytest.mark.slow
def test_apply_of_a_profile_keeps_local_sources(local_env, kit_env, kit_index, decoys, tmp_path, venv_run) -> None:
    """A snapshot (no lock) applied to a new path: the local packages come from where they were, the
    editable one stays editable; the decoys of the same names on the index are never taken."""
    env, profile, new = local_env["env"], tmp_path / "p.toml", tmp_path / "new" / "venv"
    assert run_cli(kit_env, "snapshot", "--env", env, "-o", profile, cwd=tmp_path).code == 0
    refused = _cli(kit_env, kit_index, decoys, tmp_path, "apply", profile, "--env", new, "--yes")
    assert refused.code == 2 and "--allow-sources" in refused.err and not new.exists(), str(refused)
    res = _cli(kit_env, kit_index, decoys, tmp_path, "apply", profile, "--env", new, "--yes", "--allow-sources")
    assert res.code == 0, str(res)
    assert _direct_url(new, "mymodel").get("dir_info", {}).get("editable") is True
    assert _direct_url(new, "localwheel")["url"] == local_env["wheel"].as_uri()
    proc = venv_run(new, "import mymodel, localfolder, localwheel, vcsmod; print(mymodel.VALUE, localwheel.VALUE)")
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "1"], proc.stderr
    (local_env["mymodel"] / "mymodel" / "__init__.py").write_text("VALUE = 'edited'\n")
    proc = venv_run(new, "import mymodel; print(mymodel.VALUE)")
    assert proc.stdout.strip() == "edited", proc.stderr  # editable: the edit shows on the next import
    # a local source that has gone is named before anything is built
    local_env["folder"].rename(local_env["folder"].with_name("moved"))
    gone = _cli(
        kit_env, kit_index, decoys, tmp_path, "apply", profile, "--env", tmp_path / "other", "--yes", "--allow-sources"
    )
    assert gone.code == 1 and "localfolder 0.2.0" in gone.err and "gone" in gone.err, gone
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_bundle_keeps_local_sources_as_references(local_env, kit_env, kit_index, decoys, tmp_path) -> None:
    env, profile, out = local_env["env"], tmp_path / "p.toml", tmp_path / "bundle"
    assert run_cli(kit_env, "snapshot", "--env", env, "-o", profile, cwd=tmp_path).code == 0
    res = _cli(kit_env, kit_index, decoys, tmp_path, "bundle", profile, "-o", out, "--allow-sources", "--json")
    assert res.code == 0, str(res)
    notes = " ".join(res.json()["notes"])
    assert "mymodel 0.1.0 comes from its own source (-e " in notes and "vcsmod 0.4.0 comes from its own source" in notes
    lock = (out / "pylock.toml").read_text()
    assert str(local_env["mymodel"]) in lock and local_env["commit"] in lock  # the references, as they were
    assert not list(out.glob("mymodel*")) and not list(out.glob("*decoy*"))  # nothing of the same name fetched
