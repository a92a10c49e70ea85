"""Benchmark: the target search (issue 20, point 9): a search that builds N targets against one warm upgrade.

On the test kit's offline index (tests/kit: tiny wheels with the real dependency shapes), an env with
tensorflow-cpu 2.15.1 and ``tfops-demo`` 1.0.0, whose op library loads only with TensorFlow 2.15. The default
``tfrebuild upgrade --yes`` builds four targets (2.21.0; 2.21.0 with tfops-demo moved forward; 2.20.0; 2.18.0,
which passes). The reference is one warm upgrade of the same env to where the search lands
(``--to 2.18.0 --strategy eager``, the command the strict ``--to`` failure names: one build). Both start from fresh
copies of the same env, after one untimed search that warms uv's cache and the pyc cache. The aim: N builds cost at
most N × one warm upgrade.

Usage (from the repository root): ``python benchmarks/bench_search.py [--runs 3]``. Prints one Markdown row per
measurement; asserts nothing. The kit's wheels are small, so the ratio measures tfrebuild's own work per try
(plans, venv, checks), which is what the search repeats; real TensorFlow's downloads are cached after the first try.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.kit import build_catalog, copy_seed_wheels, create_venv, offline_env  # noqa: E402

PACKAGES = ["tensorflow-cpu==2.15.1", "numpy==1.26.4", "tfops-demo==1.0.0"]


def upgrade(env: Path, environ: dict, index: Path, *args: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rebuild",
            "upgrade",
            "--env",
            str(env),
            "--offline",
            "--find-links",
            str(index),
            "--yes",
            "--json",
            *args,
        ],
        env=environ,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"upgrade failed:\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tfrebuild-bench-search-") as tmp:
        root = Path(tmp)
        index = build_catalog(root / "index")
        copy_seed_wheels(index)
        environ = offline_env(cache_dir=root / "cache", find_links=index)
        base = create_venv(root / "base", PACKAGES, find_links=index, env=environ)

        def fresh(name: str) -> Path:
            dest = root / name / "env"
            dest.parent.mkdir()
            shutil.copytree(base, dest, symlinks=True)
            return dest

        upgrade(fresh("warm"), environ, index)  # untimed: caches warm, as a user's second try would be
        searches, singles, builds = [], [], 0
        for i in range(args.runs):
            seconds, doc = upgrade(fresh(f"search{i}"), environ, index)
            searches.append(seconds)
            builds = sum(1 for t in doc["tries"] if t["built"])
            seconds, doc = upgrade(
                fresh(f"single{i}"), environ, index, "--to", doc["plan"]["tf_new"], "--strategy", "eager"
            )  # what the search found: tfops-demo moved too
            singles.append(seconds)
        search, single = statistics.median(searches), statistics.median(singles)
        print(
            f"| search, {builds} builds (default upgrade, {args.runs}×) | {search:.1f} s | "
            f"{search / single:.2f}× one warm upgrade, {search / single / builds:.2f}× per build | "
            f"≤ {builds}×: {'met' if search <= builds * single else '**not met**'} |"
        )
        print(f"| one warm upgrade to the same landing point ({args.runs}×) | {single:.1f} s | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
