"""What a plan starts (issue 26 point 2: plan's fixed costs), counted through the one runner (rebuild.util.proc).

A warm plan of a classic env runs the probe, uv's target search, uv's resolution and uv's lock, which is made from
the cache the resolution just filled (``--offline``); the env's base interpreter is not run again to ask its
version when the env's python links to it (the probe ran it). In-process on a kit env, the index served over HTTP
on 127.0.0.1 (so that the lock's cache read is the one a real index gets), real uv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rebuild.core import plan as planning
from rebuild.util import proc
from tests.kit.simple_index import SimpleIndex

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed"), pytest.mark.slow]

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


def test_a_plan_runs_the_probe_and_three_uv_runs_the_lock_from_the_cache(
    make_venv, kit_os_env, kit_index, tmp_path: Path, monkeypatch
) -> None:
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    base = os.path.realpath(env / "bin" / "python")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    for name in ("UV_OFFLINE", "UV_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    started: list[list[str]] = []
    real_run = proc.run

    def counting(args, *rest, **kw):  # the real runner, each command line noted
        started.append([str(a) for a in args])
        return real_run(args, *rest, **kw)

    monkeypatch.setattr(proc, "run", counting)
    with SimpleIndex(kit_index) as served:
        the_plan = planning.make_plan(planning.Options(env=env, to="2.18", index_url=served.url))
    assert the_plan.tf_new.startswith("2.18") and the_plan.pylock
    uv_runs = [a for a in started if Path(a[0]).name == "uv"]
    compiles = [a for a in uv_runs if a[1:4] == ["--no-python-downloads", "pip", "compile"]]
    assert len(compiles) == len(uv_runs) == 3, uv_runs  # the target, the resolution, the lock
    assert "--only-binary" in compiles[0] and "--no-deps" in compiles[0]  # the target: TensorFlow's wheel alone
    assert "--format" not in compiles[1] and "--offline" not in compiles[1]  # the resolution reads the index
    assert compiles[2][compiles[2].index("--format") + 1] == "pylock.toml" and "--offline" in compiles[2]
    probes = [a for a in started if a[-1].endswith("_probe.py")]
    assert len(probes) == 1, started
    base_runs = [a for a in started if os.path.realpath(a[0]) == base and not a[-1].endswith("_probe.py")]
    assert base_runs == [], base_runs  # the base interpreter's version came from the probe
