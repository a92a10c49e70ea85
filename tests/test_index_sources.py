"""Indexes and find-links as pip sees them, and the newer release another Python gets (issue 11, points 2 and 5).

The scene for point 2 (built per test, offline): an env with the kit's ``tensorflow-cpu 2.15.1`` and a
package ``srcpkg 1.0`` (one compiled wheel per CPython minor, ``cp3X-none-any``). A "full" PEP 503
index (``file://``) has every ``srcpkg`` wheel; a "mirror" lists ``srcpkg 1.0`` with wheels for *other*
Pythons only, and ``srcpkg 0.9`` complete. The configuration is real files: a ``pip.conf`` (via
``PIP_CONFIG_FILE``, with ``HOME``/``XDG_*`` pointed into the test folder so the machine's own files
are not read) or a ``uv.toml``; the kit's wheels come in as configured find-links. pip counts every
file of every source, so the plan must keep ``srcpkg 1.0`` and be the plan of the full index alone;
uv, given the mirror first, would move it to 0.9.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.kit.cli import CliRun as Run
from tests.kit.wheels import build_wheel

from rebuild.env.profile import Index
from rebuild.index import config as indexconf

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

MINORS = range(9, 14)


def _page(root: Path, project: str, wheels: list[Path]) -> None:
    """A PEP 503 project page under ``root`` linking ``wheels`` (with sha256 fragments)."""
    page = root / project
    page.mkdir(parents=True, exist_ok=True)
    links = "".join(
        f'<a href="{w.as_uri()}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a><br>\n' for w in wheels
    )
    (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    (root / "index.html").write_text(f'<!DOCTYPE html><html><body><a href="{project}/">{project}</a></body></html>\n')


@pytest.fixture
def scene(tmp_path: Path, make_venv, kit_index: Path) -> dict:
    files = tmp_path / "files"
    wheels = {(v, m): build_wheel(files, "srcpkg", v, tag=f"cp3{m}-none-any") for v in ("0.9", "1.0") for m in MINORS}
    env = make_venv("env", ["tensorflow-cpu==2.15.1", "srcpkg==1.0"], python="3.11", extra_find_links=[files])
    full = tmp_path / "full"
    _page(full, "srcpkg", list(wheels.values()))
    mirror = tmp_path / "mirror"
    _page(mirror, "srcpkg", [wheels[("0.9", m)] for m in MINORS] + [wheels[("1.0", m)] for m in MINORS if m != 11])
    split = tmp_path / "split-links"  # a find-links folder with the one wheel the mirror lacks
    split.mkdir()
    (split / wheels[("1.0", 11)].name).write_bytes(wheels[("1.0", 11)].read_bytes())
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    return {
        "env": env,
        "full": full.as_uri(),
        "mirror": mirror.as_uri(),
        "split": split,
        "home": home,
        "kit": kit_index,
        "tmp": tmp_path,
    }


def _plan(
    scene: dict,
    kit_env: dict,
    *args: str,
    pip_conf: str | None = None,
    uv_toml: str | None = None,
    extra_env: dict | None = None,
) -> Run:
    environ = {
        k: v
        for k, v in kit_env.items()
        if k not in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "UV_FIND_LINKS", "UV_NO_CONFIG", "PIP_CONFIG_FILE")
    }
    environ.update(
        HOME=str(scene["home"]),
        XDG_CONFIG_HOME=str(scene["home"] / ".config"),
        XDG_CONFIG_DIRS=str(scene["tmp"] / "no-system-config"),
    )
    cwd = scene["tmp"] / f"cwd-{time.monotonic_ns()}"
    cwd.mkdir()
    if pip_conf is not None:
        conf = cwd / "pip.conf"
        conf.write_text(pip_conf)
        environ["PIP_CONFIG_FILE"] = str(conf)
    else:
        environ["PIP_CONFIG_FILE"] = "/dev/null"
    if uv_toml is not None:
        (cwd / "uv.toml").write_text(uv_toml)
    environ.update(extra_env or {})
    cmd = [sys.executable, "-m", "rebuild", "plan", "--env", str(scene["env"]), "--json", *args]
    start = time.monotonic()
    proc = subprocess.run(
        cmd, env=environ, capture_output=True, text=True, timeout=300, cwd=cwd, stdin=subprocess.DEVNULL
    )
    return Run(proc, time.monotonic() - start, cmd)


def _versions(run: Run) -> dict[str, tuple]:
    assert run.code == 0, str(run)
    plan = run.json()["plan"]
    return {"tf": plan["tf_new"], **{c["name"]: (c["old"], c["new"]) for c in plan["changes"]}}


def test_pip_conf_mirror_listing_a_version_with_fewer_files_does_not_move_it(scene, kit_env) -> None:
    alone = _plan(
        scene, kit_env, "--to", "2.16", pip_conf=f"[global]\nindex-url = {scene['full']}\nfind-links = {scene['kit']}\n"
    )
    with_mirror = _plan(
        scene,
        kit_env,
        "--to",
        "2.16",
        pip_conf=f"[global]\nindex-url = {scene['full']}\nextra-index-url = {scene['mirror']}\n"
        f"find-links = {scene['kit']}\n",
    )
    assert "srcpkg" not in _versions(alone)
    assert _versions(with_mirror) == _versions(alone), str(with_mirror)
    index = with_mirror.json()["plan"]["index"]
    assert index["extra_index_urls"] == [scene["mirror"]] and index["index_strategy"] == "unsafe-best-match"


def test_uv_toml_with_best_match_gets_the_same_answer(scene, kit_env) -> None:
    uv_toml = (
        f'index-url = "{scene["full"]}"\nextra-index-url = ["{scene["mirror"]}"]\n'
        f'find-links = ["{scene["kit"]}"]\nindex-strategy = "unsafe-best-match"\n'
    )
    run = _plan(scene, kit_env, "--to", "2.16", uv_toml=uv_toml)
    versions = _versions(run)
    assert "srcpkg" not in versions, str(run)
    assert versions["tf"] == "2.16.1"
    origins = {s["origin"] for s in run.json()["plan"]["index"]["settings"]}
    assert any(o.startswith("uv config") and o.endswith("uv.toml") for o in origins), origins


def test_find_links_files_count_with_the_index_files_of_the_same_version(scene, kit_env) -> None:
    # The only index is the mirror (srcpkg 1.0 without a cp311 wheel); the cp311 wheel is in a find-links folder.
    run = _plan(
        scene,
        kit_env,
        "--to",
        "2.16",
        pip_conf=f"[global]\nindex-url = {scene['mirror']}\nfind-links = {scene['kit']} {scene['split']}\n",
    )
    assert "srcpkg" not in _versions(run), str(run)


def test_uv_args_put_the_primary_first_only_for_best_match() -> None:
    pip_like = Index(
        index_url="https://primary/simple",
        extra_index_urls=["file:///m1", "file:///m2"],
        find_links=["/w"],
        index_strategy="unsafe-best-match",
    )
    assert indexconf.uv_args(pip_like) == [
        "--index",
        "https://primary/simple",
        "--index",
        "file:///m1",
        "--index",
        "file:///m2",
        "--default-index",
        "https://primary/simple",
        "--find-links",
        "/w",
        "--index-strategy",
        "unsafe-best-match",
    ]
    uv_like = Index(index_url="https://primary/simple", extra_index_urls=["https://torch/whl"])
    assert indexconf.uv_args(uv_like)[:4] == [
        "--index-url",
        "https://primary/simple",
        "--extra-index-url",
        "https://torch/whl",
    ]


# --------------------------------------------------------------------------- point 5 on the kit


def _kit_plan(env: Path, kit_env: dict, kit_index: Path, tmp_path: Path, *args: str) -> Run:
    cmd = [
        sys.executable,
        "-m",
        "rebuild",
        "plan",
        "--env",
        str(env),
        "--offline",
        "--find-links",
        str(kit_index),
        *args,
    ]
    start = time.monotonic()
    proc = subprocess.run(
        cmd, env=dict(kit_env), capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL
    )
    return Run(proc, time.monotonic() - start, cmd)


@pytest.mark.slow
def test_plan_names_the_newer_release_another_python_gets(make_venv, kit_env, kit_index, tmp_path) -> None:
    env = make_venv("tf39", ["tensorflow-cpu==2.15.1"], python="3.9")
    run = _kit_plan(env, kit_env, kit_index, tmp_path, "--to", "latest", "--json")
    assert run.code == 0, str(run)
    plan = run.json()["plan"]
    assert plan["tf_new"] == "2.20.0"  # 2.21.0 has no cp39 wheel
    newer = plan["newer_release"]
    assert newer["version"] == "2.21.0" and newer["pythons"] == ["3.10", "3.11", "3.12", "3.13"], newer
    assert newer["python_option"] in newer["pythons"]
    if newer["interpreter"]:
        assert Path(newer["interpreter"]).exists()
    text = _kit_plan(env, kit_env, kit_index, tmp_path, "--to", "latest")
    assert text.code == 0, str(text)
    assert (
        "Newer TensorFlow for another Python: tensorflow-cpu 2.21.0 exists for Python 3.10, 3.11, 3.12, 3.13"
        in text.out
    ), text.out
    assert f"--python {newer['python_option']}" in text.out
    if newer["interpreter"]:  # the advice works: that --python plans 2.21.0
        moved = _kit_plan(
            env, kit_env, kit_index, tmp_path, "--to", "latest", "--python", newer["python_option"], "--json"
        )
        assert moved.code == 0, str(moved)
        assert moved.json()["plan"]["tf_new"] == "2.21.0"
        assert moved.json()["plan"]["newer_release"] is None


def test_no_newer_release_note_when_the_python_is_not_the_limit(make_venv, kit_env, kit_index, tmp_path) -> None:
    env = make_venv("tf39", ["tensorflow-cpu==2.15.1"], python="3.9")
    run = _kit_plan(env, kit_env, kit_index, tmp_path, "--to", "2.20", "--json")
    assert run.code == 0, str(run)
    assert run.json()["plan"]["newer_release"] is None  # nothing newer within 2.20.*
    assert json.dumps(run.json()).count("2.21.0") == 0
