"""Issue 15 in one run: upgrade vs raw uv (+pyc) vs pip, rollback wall, plan vs uv compile, disk per generation,
a cold-cache row and a 300-distribution snapshot, printed as ONE Markdown table.

Every contender starts from its own ``cp -a`` copy of ONE pip-made venv (``tensorflow-cpu==2.15.1 scipy==1.11.4
pandas``, see bench_upgrade.py, whose helpers and isolation this script uses: ``PIP_CONFIG_FILE=/dev/null``, no
``PIP_*``/``UV_*`` variables, PyPI only, uv's default cache). Order against drift: the upgrade contenders run
A-B-C-D in odd rounds and D-C-B-A in even rounds; plan and uv compile alternate (A-B-A-B-A-B); rollbacks alternate
between the two generations.

Rows:

* upgrade: ``tfrebuild upgrade --yes --json`` (warm uv cache and warm pyc cache: an untimed upgrade ran first),
  raw uv +pyc (``uv venv`` + ``uv pip install --compile-bytecode`` of the same pins + one ``import tensorflow``),
  raw uv (the same without bytecode), ``pip install --upgrade tensorflow-cpu`` in place;
* cold cache: the same tfrebuild upgrade and raw uv +pyc, each with an empty uv cache (``UV_CACHE_DIR``) and, for
  tfrebuild, an empty pyc cache (``TFREBUILD_PYC_CACHE``): downloads included;
* rollback: ``tfrebuild rollback --yes --json`` on the env the first timed upgrade made (default check), wall time,
  and ``--check import`` for comparison;
* plan: ``tfrebuild plan --env BASE --json`` against ``uv pip compile --upgrade-package tensorflow-cpu`` of the same
  requests with the installed pins as preferences (the output file seeded with them);
* disk: what the new generation wrote for itself only (files with no other hard link, and its directories) as a
  share of the original env (the first timed upgrade's env);
* snapshot: ``tfrebuild snapshot`` of a venv of 300 tiny distributions (bench_snapshot.py's), end to end.

tfrebuild itself is installed the README's way (``uv tool install --compile-bytecode`` of this checkout) into the
work folder, and every tfrebuild row runs that console script; ``--from-checkout`` runs ``python -m rebuild`` of
this interpreter instead.

Usage: ``python benchmarks/bench_all.py [--runs 2] [--base PATH] [--no-cold] [--keep] [--from-checkout]``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_upgrade as bu  # noqa: E402
from bench_rollback import measure_disk  # noqa: E402

AIMS = {"upgrade": 1.1, "rollback_s": 0.5, "plan": 3.0, "snapshot_s": 0.35, "disk_pct": 5.0}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def env_with(**extra: str) -> dict[str, str]:
    env = bu.clean_environ()
    env.update(extra)
    return env


def run_env(cmd, env, cwd=None, check=True, timeout=3600):
    import subprocess

    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc


def tfrebuild_upgrade(base: Path, where: Path, env: dict[str, str]) -> tuple[float, dict, Path]:
    target = bu.copy_env(base, where / "tf")
    seconds, proc = run_env(bu.tfrebuild_cmd("upgrade", "--env", target, "--yes", "--json"), env, cwd=where)
    return seconds, json.loads(proc.stdout), target


def raw_uv(where: Path, pins: list[str], python: str, compile_bytecode: bool, env: dict[str, str]) -> float:
    new = where / "new"
    install = [bu.uv_bin(), "pip", "install", "--quiet", "--python", new / "bin" / "python", *pins]
    if compile_bytecode:
        install.append("--compile-bytecode")
    start = time.perf_counter()
    run_env([bu.uv_bin(), "venv", "--quiet", "--python", python, new], env)
    run_env(install, env)
    run_env([new / "bin" / "python", "-c", "import tensorflow"], env)
    return time.perf_counter() - start


def pip_upgrade(base: Path, where: Path) -> tuple[float, bool]:
    target = bu.copy_env(base, where / "tf")
    seconds, _ = run_env([target / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
                          "--upgrade", "tensorflow-cpu"], bu.clean_environ(), check=False)
    check = run_env([target / "bin" / "python", "-m", "pip", "check", "--disable-pip-version-check"],
                    bu.clean_environ(), check=False)[1]
    scipy = run_env([target / "bin" / "python", "-c", "import scipy.linalg"], bu.clean_environ(), check=False)[1]
    return seconds, check.returncode == 0 and scipy.returncode == 0


def clear(where: Path) -> None:
    for child in list(where.iterdir()):
        bu.rmtree(child)
    shutil.rmtree(where, ignore_errors=True)


def plan_vs_compile(base: Path, tmp: Path, rounds: int = 3) -> tuple[list[float], list[float]]:
    pins = bu.freeze(base)
    requested = ["tensorflow-cpu", "scipy", "pandas"] + [n for n in ("pip", "setuptools", "wheel") if n in pins]
    req = tmp / "plan-requests.in"
    req.write_text("\n".join(requested) + "\n")
    out = tmp / "plan-resolved.txt"
    plans, compiles = [], []
    for _ in range(rounds):
        plans.append(run_env(bu.tfrebuild_cmd("plan", "--env", base, "--json"), bu.clean_environ(), cwd=tmp)[0])
        out.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        compiles.append(run_env([bu.uv_bin(), "pip", "compile", req, "-o", out, "--upgrade-package", "tensorflow-cpu",
                                 "--python", base / "bin" / "python", "--quiet"], bu.clean_environ())[0])
    return plans, compiles


def rollbacks(env: Path, n: int = 10) -> tuple[list[float], list[float], list[str]]:
    walls, deep, names = [], [], []
    for _ in range(n + n % 2):
        seconds, proc = run_env(bu.tfrebuild_cmd("rollback", "--env", env, "--yes", "--json"), bu.clean_environ())
        walls.append(seconds)
        names = [c["name"] for c in json.loads(proc.stdout)["checks"]]
    for _ in range(2):
        deep.append(run_env(bu.tfrebuild_cmd("rollback", "--env", env, "--yes", "--json", "--check", "import"),
                            bu.clean_environ())[0])
    return walls, deep, names


def snapshot_300(tmp: Path, repeat: int = 5) -> list[float]:
    import bench_snapshot as bs
    from tests.kit.venvs import offline_env

    venv = bs.make_env(tmp, 300, offline_env())
    out = tmp / "snap.toml"
    env = bu.clean_environ()
    cmd = bu.tfrebuild_cmd("snapshot", "--env", venv, "-o", out, "--force")
    run_env(cmd, env)  # warm-up
    return [run_env(cmd, env)[0] for _ in range(repeat)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--base", help="existing pip-made tensorflow-cpu 2.15.1 venv to copy (never changed)")
    parser.add_argument("--workdir", type=Path, default=bu.DEFAULT_WORKDIR)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache row (it downloads every wheel)")
    parser.add_argument("--keep", action="store_true")
    bu.add_tool_option(parser)
    args = parser.parse_args(argv)
    tmp = bu.make_workdir(args.workdir, "bench-all-")
    bu.log(f"work folder {tmp}")
    rows: list[tuple[str, str, str, str]] = []
    try:
        bu.choose_tfrebuild(args, tmp, bu.clean_environ())
        base = bu.base_venv(args, tmp)
        python = bu.run([base / "bin" / "python", "-c", "import sys; print(sys._base_executable)"]).stdout.strip()
        pandas = bu.freeze(base)["pandas"]

        bu.log("warm-up (untimed): tfrebuild upgrade and pip upgrade on spare copies")
        warm = tmp / "warm"
        warm.mkdir()
        _, doc, _ = tfrebuild_upgrade(base, warm, bu.clean_environ())
        target = doc["plan"]["tf_new"]
        clear(warm)
        warm.mkdir()
        pip_upgrade(base, warm)
        clear(warm)
        pins = [f"tensorflow-cpu=={target}", "scipy==1.11.4", f"pandas=={pandas}"]

        times: dict[str, list[float]] = {"tfrebuild": [], "uv+pyc": [], "uv": [], "pip": []}
        stages: list[dict] = []
        kept_env = None
        pip_ok = []
        order = list(times)
        for i in range(args.runs):
            for name in (order if i % 2 == 0 else order[::-1]):
                where = tmp / f"run{i}-{name.replace('+', '')}"
                where.mkdir()
                bu.log(f"round {i + 1}: {name}")
                if name == "tfrebuild":
                    seconds, doc, env = tfrebuild_upgrade(base, where, bu.clean_environ())
                    stages.append({"resolve": doc["plan"]["seconds"], "build": doc["build_seconds"],
                                   "checks": sum(c["seconds"] for c in doc["checks"]), "swap_ms": doc["swap_ms"],
                                   "verify": sum(c["seconds"] for c in doc["after_swap"]), "total": doc["seconds"]})
                    if kept_env is None:
                        kept_env = where  # rollback and disk are measured on it
                        times[name].append(seconds)
                        continue
                elif name == "pip":
                    seconds, good = pip_upgrade(base, where)
                    pip_ok.append(good)
                else:
                    seconds = raw_uv(where, pins, python, name == "uv+pyc", bu.clean_environ())
                times[name].append(seconds)
                clear(where)
                bu.log(f"  {seconds:.1f} s")

        env = kept_env / "tf"
        store_gen1 = None
        from rebuild.store.store import Store

        store = Store.open(env)
        store_gen1 = store.generation_dir(1) / "env"
        bu.log("disk of the new generation")
        disk = measure_disk(store_gen1, env)
        bu.log("rollbacks")
        walls, deep, names = rollbacks(env)
        bu.log("plan vs uv pip compile")
        plans, compiles = plan_vs_compile(base, tmp)
        bu.log("snapshot of 300 distributions")
        snaps = snapshot_300(tmp)
        cold = None
        if not args.no_cold:
            bu.log("cold caches: tfrebuild upgrade, then raw uv +pyc (each downloads every wheel)")
            where = tmp / "cold-tfrebuild"
            where.mkdir()
            cold_env = env_with(UV_CACHE_DIR=str(tmp / "uv-cache-cold-1"), TFREBUILD_PYC_CACHE=str(tmp / "pyc-cold"))
            cold_t, cold_doc, _ = tfrebuild_upgrade(base, where, cold_env)
            clear(where)
            where = tmp / "cold-uv"
            where.mkdir()
            cold_u = raw_uv(where, pins, python, True, env_with(UV_CACHE_DIR=str(tmp / "uv-cache-cold-2")))
            clear(where)
            cold = (cold_t, cold_u, cold_doc)

        t, up, u, p = (med(times[k]) for k in ("tfrebuild", "uv+pyc", "uv", "pip"))
        s = {k: med([x[k] for x in stages]) for k in stages[0]}

        def verdict(ok: bool) -> str:
            return "met" if ok else "**not met**"

        rows.append(("upgrade: tfrebuild (warm uv + pyc cache)", f"{t:.1f} s",
                     f"{t / up:.2f}× raw uv +pyc, {t / u:.2f}× raw uv, {t / p:.2f}× pip",
                     f"≤ {AIMS['upgrade']}× raw uv +pyc: {verdict(t / up <= AIMS['upgrade'])}"))
        rows.append(("  tfrebuild stages (median)", f"resolve {s['resolve']:.1f} s, build {s['build']:.1f} s, "
                     f"checks {s['checks']:.1f} s, swap {s['swap_ms']:.0f} ms, check at path {s['verify']:.2f} s",
                     "", ""))
        rows.append(("upgrade: raw uv +pyc", f"{up:.1f} s", "uv venv + uv pip install --compile-bytecode + import", ""))
        rows.append(("upgrade: raw uv (no bytecode)", f"{u:.1f} s", "", ""))
        rows.append(("upgrade: pip install --upgrade (in place)", f"{p:.1f} s",
                     "env consistent: " + ("yes" if all(pip_ok) else "**no** (pip check / import scipy.linalg fail)"), ""))
        if cold is not None:
            ct, cu, cdoc = cold
            rows.append(("cold caches: tfrebuild upgrade vs raw uv +pyc", f"{ct:.1f} s vs {cu:.1f} s",
                         f"{ct / cu:.2f}× (tfrebuild build {cdoc['build_seconds']:.1f} s)", "(no aim)"))
        rw = med(walls)
        rows.append((f"rollback wall ({len(walls)}×, default check)", f"{rw:.2f} s",
                     f"min {min(walls):.2f}, max {max(walls):.2f}; check: {', '.join(names)}",
                     f"≤ {AIMS['rollback_s']} s: {verdict(rw <= AIMS['rollback_s'])}"))
        rows.append(("rollback wall, --check import (2×)", f"{med(deep):.2f} s", "TensorFlow imported at the path", ""))
        pm, cm = med(plans), med(compiles)
        rows.append(("plan vs uv pip compile (3× each, A-B-A)", f"{pm:.2f} s vs {cm:.2f} s", f"{pm / cm:.2f}×",
                     f"≤ {AIMS['plan']}×: {verdict(pm / cm <= AIMS['plan'])}"))
        pct = 100 * disk.new_written / disk.original
        rows.append(("disk per new generation (written for it only)", f"{disk.new_written / 2**20:,.0f} MiB",
                     f"{pct:.1f} % of the env ({disk.original / 2**20:,.0f} MiB); "
                     f"{disk.n_linked:,} files hard-linked from uv's and the pyc cache",
                     f"≤ {AIMS['disk_pct']} %: {verdict(pct <= AIMS['disk_pct'])}"))
        sm = med(snaps)
        rows.append(("snapshot, 300 distributions, end to end (5×)", f"{sm:.2f} s", f"min {min(snaps):.2f}",
                     f"≤ {AIMS['snapshot_s']} s: {verdict(sm <= AIMS['snapshot_s'])}"))

        print(f"{bu.machine_line()}; runs {args.runs}; pip configuration off (PIP_CONFIG_FILE=/dev/null), PyPI only; "
              f"target tensorflow-cpu {target}\n")
        print("| measurement | median | ratio / detail | aim |")
        print("|---|---:|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print("\nraw: " + json.dumps({"times": times, "stages": stages, "rollback": walls, "rollback_import": deep,
                                      "plan": plans, "compile": compiles, "snapshot_300": snaps,
                                      "cold": cold[:2] if cold else None}, default=float))
    finally:
        if args.keep:
            bu.log(f"kept {tmp}")
        else:
            for child in list(tmp.iterdir()):
                bu.rmtree(child) if child.is_dir() else child.unlink()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
