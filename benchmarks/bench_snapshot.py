"""Benchmark of ``tfrebuild snapshot`` on environments of ~50, ~300 and ~1000 distributions.

Aim (issue 15): a snapshot of an environment with 300 distributions takes at most 0.35 s,
end to end (CLI start-up included).

For each size the script writes N tiny distinct wheels ``benchpkg-0001`` ...
(each with a few ``Requires-Dist`` on higher-numbered packages, some behind
markers or extras) with ``tests/kit/wheels.build_wheel``, installs all of them
offline into a fresh uv venv (``uv pip install --no-index --find-links``),
then times, over ``--repeat`` runs each:

* core:       ``rebuild.commands.snapshot.run`` in this process (probe + profile + write);
* CLI:        ``tfrebuild snapshot`` in a subprocess, end to end: the console script of a tfrebuild installed the
              README's way (``uv tool install --compile-bytecode`` of this checkout, into the temporary folder), or
              with ``--from-checkout`` ``python -m rebuild`` of this interpreter;
* probe-only: ``rebuild.env.probe.run`` (the target interpreter scanning its env).

and prints the medians as a table. No assertions: it measures, it does not judge.

    python benchmarks/bench_snapshot.py [--sizes 50,300,1000] [--repeat 5] [--keep] [--from-checkout]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_upgrade as bu  # noqa: E402

from rebuild.env import probe  # noqa: E402
from rebuild.commands import snapshot as snap  # noqa: E402
from tests.kit.venvs import offline_env, uv_bin  # noqa: E402
from tests.kit.wheels import build_wheel  # noqa: E402


def name(i: int) -> str:
    return f"benchpkg-{i:04d}"


def build_wheels(dest: Path, count: int, seed: int = 1234) -> list[str]:
    """``count`` wheels; package i depends on up to 3 packages with a higher number (a DAG)."""
    rng = random.Random(seed)
    names = []
    for i in range(1, count + 1):
        later = list(range(i + 1, count + 1))
        deps = sorted(rng.sample(later, min(len(later), rng.randint(0, 3))))
        requires = []
        for k, j in enumerate(deps):
            if k == 1:
                requires.append(f'{name(j)}>=1.0 ; python_version >= "3.8"')
            else:
                requires.append(f"{name(j)}>=1.0")
        extras = {"test": [f"{name(j)}"]} if i % 10 == 0 and later else None
        build_wheel(dest, name(i), "1.0", requires=requires, extras=extras)
        names.append(name(i))
    return names


def make_env(work: Path, count: int, env: dict[str, str]) -> Path:
    wheels = work / f"wheels-{count}"
    names = build_wheels(wheels, count)
    venv = work / f"env-{count}"
    uv = uv_bin()
    subprocess.run(
        [uv, "venv", "-q", "--no-config", "--no-python-downloads", "--python", sys.executable, str(venv)],
        env=env,
        check=True,
    )
    reqs = work / f"requirements-{count}.txt"
    reqs.write_text("\n".join(names) + "\n")
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--no-config",
            "--no-python-downloads",
            "--no-index",
            "--find-links",
            str(wheels),
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(reqs),
        ],
        env=env,
        check=True,
    )
    return venv


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,300,1000", help="comma-separated numbers of distributions")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    bu.add_tool_option(parser)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    work = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    env = offline_env(cache_dir=work / "uv-cache")
    cli_env = dict(env)
    rows = []
    try:
        tool = bu.choose_tfrebuild(args, work)  # with this machine's own index configuration
        print(
            f"# tfrebuild snapshot benchmark: Python {platform.python_version()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, {args.repeat} repetitions; aim: <= 0.35 s for 300 distributions; tfrebuild: {' '.join(tool)}",
            flush=True,
        )
        for count in sizes:
            t0 = time.perf_counter()
            venv = make_env(work, count, env)
            setup = time.perf_counter() - t0
            out = work / f"profile-{count}.toml"
            python = venv / "bin" / "python"

            # Warm-up (page cache, .pyc of rebuild) and a sanity count.
            result = snap.run(venv, out, force=True)
            found = len(result.profile.packages)

            core = timed(lambda: snap.run(venv, out, force=True), args.repeat)
            cli_cmd = [*tool, "snapshot", "--env", str(venv), "-o", str(out), "--force"]

            def cli() -> None:
                subprocess.run(cli_cmd, env=cli_env, cwd=work, check=True, capture_output=True)

            cli_times = timed(cli, args.repeat)
            probe_times = timed(lambda: probe.run(python), args.repeat)
            rows.append(
                (
                    count,
                    found,
                    statistics.median(core),
                    statistics.median(cli_times),
                    statistics.median(probe_times),
                    setup,
                )
            )
            print(f"  built and measured {count} distributions (setup {setup:.1f}s)", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"# kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| distributions | median s (core) | median s (CLI) | probe-only s |")
    print("|---:|---:|---:|---:|")
    for count, found, core, cli, probe_s, _setup in rows:
        label = f"{count}" if found == count else f"{count} ({found} found)"
        print(f"| {label} | {core:.3f} | {cli:.3f} | {probe_s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
