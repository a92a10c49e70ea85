"""Issue 23, point 5: nothing the user has is dropped silently.

A kit env holding a distribution whose metadata is broken (no METADATA, garbage, no Name/Version), the user's
own ``.pth`` file and loose module in site-packages, and ``include-system-site-packages = true``: ``plan`` names
each as "not carried into the new env" with what to do (never "fixed by this upgrade"), in text and ``--json``.
Files a distribution installed (``distutils-precedence.pth`` of setuptools, uv's ``_virtualenv.pth``) are not
named.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.kit.cli import run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")


def site(env: Path) -> Path:
    (sp,) = env.glob("lib/python3.*/site-packages")
    return sp


@pytest.mark.parametrize("damage", ["no-metadata", "garbage", "no-name"])
def test_plan_names_what_the_new_env_will_not_have(damage, make_venv, kit_env, kit_index, tmp_path):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1", "scipy==1.11.4"])
    sp = site(env)
    (sp / "mytool.py").write_text("X = 1\n")  # a loose module of the user's
    (sp / "extra-paths.pth").write_text(str(tmp_path / "src") + "\n")  # the user's own .pth
    (dist,) = sp.glob("scipy-*.dist-info")
    meta = dist / "METADATA"
    if damage == "no-metadata":
        meta.unlink()
    elif damage == "garbage":
        meta.write_bytes(b"\xff\xfe garbage \x00\n")
    else:
        meta.write_text("Metadata-Version: 2.1\nSummary: no name, no version\n")
    cfg = env / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("include-system-site-packages = false",
                                           "include-system-site-packages = true"))
    run = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--to", "2.16", cwd=tmp_path,
                  timeout=180)
    assert "Traceback" not in run.text, str(run)
    text = run.out
    assert "fixed by this upgrade) broken-dist-info" not in text, text
    assert "(not carried into the new env) broken-dist-info" in text, text
    assert "mytool" in text and "extra-paths.pth" in text, text
    assert "(not carried into the new env) system-site-packages" in text, text
    assert "_virtualenv.pth" not in text, text
    doc = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--to", "2.16", "--json",
                  cwd=tmp_path, timeout=180).json()
    dropped = {f["id"]: f for f in doc["plan"]["preflight"] if f.get("dropped_by_rebuild")}
    assert {"broken-dist-info", "orphan-package", "system-site-packages"} <= set(dropped), doc["plan"]["preflight"]
    assert all(f["fix"] for f in dropped.values())
