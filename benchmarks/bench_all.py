"""Issues 15 and 26 in one run: every speed aim measured side by side and printed as ONE Markdown table.

Every contender starts from its own ``cp -a`` copy of a pip-made venv that is never changed: the classic env
(``tensorflow-cpu==2.15.1 scipy==1.11.4 pandas``, ``--base``) and, for the big-env rows, a ~300-distribution env
(``--big-base``: tensorflow-cpu 2.15.1 and a data-science stack). Isolation as in bench_upgrade.py (whose helpers
this script uses): ``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*``/``UV_*`` variables, PyPI only, uv's default cache.
Order against drift: paired contenders run A-B in odd rounds and B-A in even ones (the classic upgrade's four:
A-B-C-D, then D-C-B-A); plan and uv compile alternate; rollbacks alternate between the two generations. Medians.

Sections (``--skip NAME`` leaves one out; bench_sections.py holds the issue-26 ones):

* classic: ``tfrebuild upgrade --yes --json`` (warm uv and pyc caches: an untimed upgrade ran first) vs raw uv +pyc
  (``uv venv`` + ``uv pip install --compile-bytecode`` of the same pins + one ``import tensorflow``); with ``pip``
  also raw uv without bytecode and ``pip install --upgrade tensorflow-cpu`` in place; rollback (10×, and 2×
  ``--check import``) and disk per generation on the env the first timed upgrade made (always measured);
* plan alone vs ``uv pip compile --upgrade-package tensorflow-cpu`` of the same requests with the installed pins
  as preferences, idle and (``busy``) with two busy-loop processes running;
* pair: ``plan`` then ``upgrade`` of the same copy vs ``upgrade`` alone, and whether the upgrade's JSON says it
  reused the plan's resolution;
* checks: the upgrade with ``--model`` (a tiny Keras model saved by the base env's TensorFlow) and the old env's
  reference checks vs without both (``--no-reference-checks``, no model);
* search: an upgrade whose profile's smoke command fails on the two newest minors (three builds) vs one warm
  upgrade straight to where it lands;
* snapshot300: ``tfrebuild snapshot`` of bench_snapshot.py's 300 tiny distributions;
* cold: tfrebuild upgrade with an empty uv cache and an empty pyc cache vs raw uv +pyc with an empty uv cache
  (A-B-A; A-B with ``--runs 1``);
* big: on the big env, an untimed warm-up upgrade, then tfrebuild upgrade (its own peak RSS: VmHWM polled) vs raw
  uv +pyc of the pins of tfrebuild's new env; snapshot (5×), rollback (10×) and disk per generation.

tfrebuild itself is installed the README's way (``uv tool install --compile-bytecode`` of this checkout) into the
work folder, and every tfrebuild row runs that console script; ``--from-checkout`` runs ``python -m rebuild`` of
this interpreter instead.

Usage: ``python benchmarks/bench_all.py [--runs 2] [--base PATH] [--big-base PATH] [--skip SECTION ...]
[--workdir DIR] [--keep] [--from-checkout]``. Prints an estimate of its duration first. Asserts nothing.
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

import bench_sections as bs  # noqa: E402
import bench_upgrade as bu  # noqa: E402
from bench_rollback import measure_disk  # noqa: E402

# issue 15's aims, tightened or added by issue 26 (plan 2.0×, and the cold, pair, checks, search and big-env rows)
AIMS = {
    "upgrade": 1.1,
    "rollback_s": 0.5,
    "plan": 2.0,
    "snapshot_s": 0.35,
    "disk_pct": 5.0,
    "cold": 1.0,
    "pair": 1.2,
    "checks": 1.15,
    "search": 3.0,
    "big_upgrade": 1.1,
    "big_snapshot_s": 0.35,
    "big_rollback_s": 0.3,
    "rss_mb": 150,
}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def env_with(**extra: str) -> dict[str, str]:
    env = bu.clean_environ()
    env.update(extra)
    return env


def run_env(cmd, env, cwd=None, check=True, timeout=3600):
    import subprocess

    start = time.perf_counter()
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise SystemExit(
            f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
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
    seconds, _ = run_env(
        [
            target / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--upgrade",
            "tensorflow-cpu",
        ],
        bu.clean_environ(),
        check=False,
    )
    check = run_env(
        [target / "bin" / "python", "-m", "pip", "check", "--disable-pip-version-check"],
        bu.clean_environ(),
        check=False,
    )[1]
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
        compiles.append(
            run_env(
                [
                    bu.uv_bin(),
                    "pip",
                    "compile",
                    req,
                    "-o",
                    out,
                    "--upgrade-package",
                    "tensorflow-cpu",
                    "--python",
                    base / "bin" / "python",
                    "--quiet",
                ],
                bu.clean_environ(),
            )[0]
        )
    return plans, compiles


def rollbacks(env: Path, n: int = 10) -> tuple[list[float], list[float], list[str]]:
    walls, deep, names = [], [], []
    for _ in range(n + n % 2):
        seconds, proc = run_env(bu.tfrebuild_cmd("rollback", "--env", env, "--yes", "--json"), bu.clean_environ())
        walls.append(seconds)
        names = [c["name"] for c in json.loads(proc.stdout)["checks"]]
    for _ in range(2):
        deep.append(
            run_env(
                bu.tfrebuild_cmd("rollback", "--env", env, "--yes", "--json", "--check", "import"), bu.clean_environ()
            )[0]
        )
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


def cold_caches(base: Path, tmp: Path, pins: list[str], python: str, runs: int) -> dict:
    """tfrebuild upgrade (empty uv cache, empty pyc cache) and raw uv +pyc (empty uv cache): A-B-A with --runs ≥ 2,
    A-B with --runs 1; every run gets new empty caches, removed after it."""
    names = ["tfrebuild", "uv+pyc", "tfrebuild"] if runs >= 2 else ["tfrebuild", "uv+pyc"]
    out: dict = {"tfrebuild": [], "uv+pyc": [], "build": []}
    for i, name in enumerate(names):
        where = tmp / f"cold{i}"
        where.mkdir()
        caches = {"UV_CACHE_DIR": str(where / "uv-cache")}
        bu.log(f"cold caches, run {i + 1}/{len(names)}: {name}")
        if name == "tfrebuild":
            caches["TFREBUILD_PYC_CACHE"] = str(where / "pyc-cache")
            seconds, doc, _ = tfrebuild_upgrade(base, where, env_with(**caches))
            out["build"].append(doc["build_seconds"])
        else:
            seconds = raw_uv(where, pins, python, True, env_with(**caches))
        out[name].append(seconds)
        bu.log(f"  {seconds:.1f} s")
        clear(where)
    return out


def commit() -> str:
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(bu.REPO), *a], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (+ uncommitted changes)" if git("status", "--porcelain", "-uno") else ""
    )


SECTIONS = ("classic", "pip", "cold", "pair", "busy", "checks", "search", "big", "snapshot300")


def estimate(args) -> float:
    """Seconds on an idle 2-CPU machine (from earlier runs; a busy machine takes longer)."""
    r = args.runs
    est = 60 + 60  # tfrebuild install, base checks, classic warm-up
    est += r * (45 + (50 if "pip" not in args.skip else 0)) + 25  # classic rounds, rollbacks, disk
    est += 25 if "busy" in args.skip else 45  # plan vs compile, idle (and busy)
    est += 0 if "pair" in args.skip else r * 40
    est += 0 if "checks" in args.skip else 20 + r * 45
    est += 0 if "search" in args.skip else 20 + r * 60
    est += 0 if "snapshot300" in args.skip else 30
    est += 0 if "cold" in args.skip else (130 if r >= 2 else 80)
    est += 0 if "big" in args.skip else 240 + r * 200 + 60
    return est


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=2, help="rounds of every A-B row (the order is reversed every round: A-B, B-A, ...)"
    )
    parser.add_argument("--base", help="existing pip-made tensorflow-cpu 2.15.1 venv to copy (never changed)")
    parser.add_argument(
        "--big-base",
        help="existing pip-made ~300-distribution venv with tensorflow-cpu 2.15.1 "
        "to copy for the big-env rows (never changed); without it the big-env rows are skipped",
    )
    parser.add_argument("--workdir", type=Path, default=bu.DEFAULT_WORKDIR)
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SECTIONS,
        help="skip a section (repeatable): " + ", ".join(SECTIONS),
    )
    parser.add_argument("--no-cold", action="store_true", help="same as --skip cold")
    parser.add_argument("--keep", action="store_true")
    bu.add_tool_option(parser)
    args = parser.parse_args(argv)
    if args.no_cold:
        args.skip.append("cold")
    if not args.big_base:
        args.skip.append("big")
    if "classic" in args.skip:
        args.skip.append("pip")
    est = estimate(args)
    bu.log(
        f"estimated duration: about {est / 60:.0f} min on an idle 2-CPU machine (skipped: "
        f"{', '.join(sorted(set(args.skip))) or 'nothing'})"
    )
    tmp = bu.make_workdir(args.workdir, "bench-all-")
    bu.log(f"work folder {tmp}")
    began = time.monotonic()
    rows: list[tuple[str, str, str, str]] = []
    raw: dict = {}

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    def row(*cells: str) -> None:
        rows.append(tuple(cells) + ("",) * (4 - len(cells)))

    try:
        bu.choose_tfrebuild(args, tmp, bu.clean_environ())
        base = bu.base_venv(args, tmp)
        python = bu.run([base / "bin" / "python", "-c", "import sys; print(sys._base_executable)"]).stdout.strip()
        pandas = bu.freeze(base)["pandas"]

        bu.log(
            "warm-up (untimed): tfrebuild upgrade"
            + ("" if "pip" in args.skip else " and pip upgrade")
            + " on spare copies"
        )
        warm = tmp / "warm"
        warm.mkdir()
        _, doc, _ = tfrebuild_upgrade(base, warm, bu.clean_environ())
        target = doc["plan"]["tf_new"]
        clear(warm)
        if "pip" not in args.skip:
            warm.mkdir()
            pip_upgrade(base, warm)
            clear(warm)
        pins = [f"tensorflow-cpu=={target}", "scipy==1.11.4", f"pandas=={pandas}"]

        # ---- classic env, warm caches: upgrade rows, then rollback and disk on the first timed upgrade's env
        times: dict[str, list[float]] = {"tfrebuild": [], "uv+pyc": [], "uv": [], "pip": []}
        if "pip" in args.skip:
            del times["uv"], times["pip"]
        stages: list[dict] = []
        kept_env = None
        pip_ok = []
        order = list(times)
        for i in range(args.runs if "classic" not in args.skip else 1):
            for name in order if i % 2 == 0 else order[::-1]:
                if "classic" in args.skip and name != "tfrebuild":
                    continue
                where = tmp / f"run{i}-{name.replace('+', '')}"
                where.mkdir()
                bu.log(f"round {i + 1}: {name}")
                if name == "tfrebuild":
                    seconds, doc, env = tfrebuild_upgrade(base, where, bu.clean_environ())
                    stages.append(
                        {
                            "resolve": doc["plan"]["seconds"],
                            "build": doc["build_seconds"],
                            "checks": sum(c["seconds"] for c in doc["checks"]),
                            "swap_ms": doc["swap_ms"],
                            "verify": sum(c["seconds"] for c in doc["after_swap"]),
                            "total": doc["seconds"],
                        }
                    )
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
        raw.update(times=times, stages=stages)
        from rebuild.store.store import Store

        env = kept_env / "tf"
        bu.log("disk of the new generation")
        disk = measure_disk(Store.open(env).generation_dir(1) / "env", env)
        bu.log("rollbacks")
        walls, deep, names = rollbacks(env)
        clear(kept_env)
        raw.update(rollback=walls, rollback_import=deep)
        t = med(times["tfrebuild"])
        s = {k: med([x[k] for x in stages]) for k in stages[0]}
        if "classic" not in args.skip:
            up = med(times["uv+pyc"])
            detail = f"{t / up:.2f}× raw uv +pyc" + (
                "" if "pip" in args.skip else f", {t / med(times['uv']):.2f}× raw uv, {t / med(times['pip']):.2f}× pip"
            )
            row(
                "upgrade: tfrebuild (warm uv + pyc cache)",
                f"{t:.1f} s",
                detail,
                f"≤ {AIMS['upgrade']}× raw uv +pyc: {verdict(t / up <= AIMS['upgrade'])}",
            )
        else:
            row("upgrade: tfrebuild (warm uv + pyc cache, 1 run)", f"{t:.1f} s", "", "")
        row(
            "  tfrebuild stages (median)",
            f"resolve {s['resolve']:.1f} s, build {s['build']:.1f} s, "
            f"checks {s['checks']:.1f} s, swap {s['swap_ms']:.0f} ms, check at path {s['verify']:.2f} s",
        )
        if "classic" not in args.skip:
            row(
                "upgrade: raw uv +pyc",
                f"{med(times['uv+pyc']):.1f} s",
                "uv venv + uv pip install --compile-bytecode + import",
            )
        if "pip" not in args.skip:
            row("upgrade: raw uv (no bytecode)", f"{med(times['uv']):.1f} s")
            row(
                "upgrade: pip install --upgrade (in place)",
                f"{med(times['pip']):.1f} s",
                "env consistent: " + ("yes" if all(pip_ok) else "**no** (pip check / import scipy.linalg fail)"),
            )
        rw = med(walls)
        row(
            f"rollback wall ({len(walls)}×, default check)",
            f"{rw:.2f} s",
            f"min {min(walls):.2f}, max {max(walls):.2f}; check: {', '.join(names)}",
            f"≤ {AIMS['rollback_s']} s: {verdict(rw <= AIMS['rollback_s'])}",
        )
        row("rollback wall, --check import (2×)", f"{med(deep):.2f} s", "TensorFlow imported at the path")
        pct = 100 * disk.new_written / disk.original
        row(
            "disk per new generation (written for it only)",
            f"{disk.new_written / 2**20:,.0f} MiB",
            f"{pct:.1f} % of the env ({disk.original / 2**20:,.0f} MiB); "
            f"{disk.n_linked:,} files hard-linked from uv's and the pyc cache",
            f"≤ {AIMS['disk_pct']} %: {verdict(pct <= AIMS['disk_pct'])}",
        )

        # ---- plan alone vs uv pip compile, idle and with a CPU hog
        bu.log("plan vs uv pip compile (idle)")
        plans, compiles = plan_vs_compile(base, tmp)
        raw.update(plan=plans, compile=compiles)
        pm, cm = med(plans), med(compiles)
        row(
            f"plan vs uv pip compile --upgrade-package, idle ({len(plans)}× each, A-B-A-B…)",
            f"{pm:.2f} s vs {cm:.2f} s",
            f"{pm / cm:.2f}×",
            f"≤ {AIMS['plan']}×: {verdict(pm / cm <= AIMS['plan'])}",
        )
        if "busy" not in args.skip:
            bu.log("plan vs uv pip compile with a CPU hog (2 busy-loop processes)")
            with bs.cpu_hog(2):
                plans, compiles = plan_vs_compile(base, tmp)
            raw.update(plan_busy=plans, compile_busy=compiles)
            pm, cm = med(plans), med(compiles)
            row(
                f"plan vs uv pip compile, CPU hog running ({len(plans)}× each)",
                f"{pm:.2f} s vs {cm:.2f} s",
                f"{pm / cm:.2f}× (2 processes of `python -c 'while True: pass'`)",
                f"≤ {AIMS['plan']}×: {verdict(pm / cm <= AIMS['plan'])}",
            )

        # ---- plan then upgrade vs upgrade alone
        if "pair" not in args.skip:
            pair = bs.plan_pair(base, tmp, args.runs)
            raw["plan_then_upgrade"] = pair
            a, b = med(pair["pair"]), med(pair["alone"])
            row(
                f"plan then upgrade vs upgrade alone ({args.runs}× each, A-B-B-A…)",
                f"{a:.1f} s vs {b:.1f} s",
                f"{a / b:.2f}× (plan {med(pair['plan_in_pair']):.1f} s of it); upgrade reused the plan's "
                f"resolution: {', '.join(sorted(set(pair['reuse'])))}",
                f"≤ {AIMS['pair']}×: {verdict(a / b <= AIMS['pair'])}",
            )

        # ---- the new checks on and off; the three-try search
        if "checks" not in args.skip:
            on_off = bs.checks_on_off(base, tmp, args.runs)
            raw["checks_on_off"] = {k: on_off[k] for k in ("on", "off")}
            a, b = med(on_off["on"]), med(on_off["off"])
            row(
                f"upgrade with the reference checks and a model check vs without both ({args.runs}× each)",
                f"{a:.1f} s vs {b:.1f} s",
                f"{a / b:.2f}× (A: the old env's reference checks on (the model beside the new env's checks; its imports if one fails) and a tiny "
                "Keras model saved by TF 2.15 checked in the new env, `--model`; B: `--no-reference-checks`, no model)",
                f"≤ {AIMS['checks']}×: {verdict(a / b <= AIMS['checks'])}",
            )
        if "search" not in args.skip:
            found = bs.search(base, tmp, args.runs, target)
            raw["search"] = found
            a, b = med(found["search"]), med(found["single"])
            row(
                f"target search, {max(found['builds'])} builds vs one warm upgrade ({args.runs}× each)",
                f"{a:.1f} s vs {b:.1f} s",
                f"{a / b:.2f}× (a smoke command fails on the two newest minors; lands on "
                f"{', '.join(sorted(set(found['landed'])))})",
                f"≤ {AIMS['search']}×: {verdict(a / b <= AIMS['search'])}",
            )

        # ---- snapshot of 300 tiny distributions
        if "snapshot300" not in args.skip:
            bu.log("snapshot of 300 distributions")
            snaps = snapshot_300(tmp)
            raw["snapshot_300"] = snaps
            sm = med(snaps)
            row(
                "snapshot, 300 tiny distributions, end to end (5×)",
                f"{sm:.2f} s",
                f"min {min(snaps):.2f}",
                f"≤ {AIMS['snapshot_s']} s: {verdict(sm <= AIMS['snapshot_s'])}",
            )

        # ---- cold caches
        if "cold" not in args.skip:
            cold = cold_caches(base, tmp, pins, python, args.runs)
            raw["cold"] = cold
            ct, cu = med(cold["tfrebuild"]), med(cold["uv+pyc"])
            n = len(cold["tfrebuild"]) + len(cold["uv+pyc"])
            row(
                "cold caches: tfrebuild upgrade vs raw uv +pyc (" + ("A-B-A" if n == 3 else "A-B") + ")",
                f"{ct:.1f} s vs {cu:.1f} s",
                f"{ct / cu:.2f}× (tfrebuild build {med(cold['build']):.1f} s; empty "
                "uv cache each, and an empty pyc cache for tfrebuild)",
                f"≤ {AIMS['cold']}×: {verdict(ct / cu <= AIMS['cold'])}",
            )

        # ---- the big env
        if "big" not in args.skip:
            big = bs.big_env(Path(args.big_base).resolve(), tmp, args.runs, python, raw_uv)
            bt, bu_ = med(big["times"]["tfrebuild"]), med(big["times"]["uv+pyc"])
            st = {k: med([x[k] for x in big["stages"]]) for k in big["stages"][0]}
            row(
                f"big env ({big['n']} distributions): tfrebuild upgrade vs raw uv +pyc ({args.runs}× each)",
                f"{bt:.1f} s vs {bu_:.1f} s",
                f"{bt / bu_:.2f}× (target {big['target']}; raw uv installs the "
                f"{big['n_new']} pins of tfrebuild's new env; tfrebuild resolve {st['resolve']:.1f} s, build "
                f"{st['build']:.1f} s, checks {st['checks']:.1f} s)",
                f"≤ {AIMS['big_upgrade']}×: {verdict(bt / bu_ <= AIMS['big_upgrade'])}",
            )
            peak = max(big["peak_kib"]) / 1024
            row(
                "  tfrebuild's own peak RSS during the big-env upgrade",
                f"{peak:.0f} MB",
                f"VmHWM of the tfrebuild process, max of {len(big['peak_kib'])} (uv and the checks excluded)",
                f"≤ {AIMS['rss_mb']} MB: {verdict(peak <= AIMS['rss_mb'])}",
            )
            sm = med(big["snapshot"])
            row(
                "  big env: snapshot, end to end (5×)",
                f"{sm:.2f} s",
                f"min {min(big['snapshot']):.2f}",
                f"≤ {AIMS['big_snapshot_s']} s: {verdict(sm <= AIMS['big_snapshot_s'])}",
            )
            rb = med(big["rollback"])
            row(
                "  big env: rollback wall (10×, default check)",
                f"{rb:.2f} s",
                f"min {min(big['rollback']):.2f}, max {max(big['rollback']):.2f}; classic env: {rw:.2f} s",
                f"≤ {AIMS['big_rollback_s']} s: {verdict(rb <= AIMS['big_rollback_s'])}",
            )
            d = big["disk"]
            pct = 100 * d.new_written / d.original
            row(
                "  big env: disk per new generation (written for it only)",
                f"{d.new_written / 2**20:,.0f} MiB",
                f"{pct:.1f} % of the env ({d.original / 2**20:,.0f} MiB); {d.n_linked:,} files hard-linked",
                f"≤ {AIMS['disk_pct']} %: {verdict(pct <= AIMS['disk_pct'])}",
            )
            raw["big"] = {k: v for k, v in big.items() if k != "disk"}

        print(
            f"{bu.machine_line()}; commit {commit()}; runs {args.runs}; skipped: "
            f"{', '.join(sorted(set(args.skip))) or 'nothing'}; {(time.monotonic() - began) / 60:.0f} min; "
            f"pip configuration off (PIP_CONFIG_FILE=/dev/null), no PIP_*/UV_* variables, PyPI only; "
            f"target tensorflow-cpu {target}\n"
        )
        print("| measurement | median | ratio / detail | aim |")
        print("|---|---:|---|---|")
        for cells in rows:
            print("| " + " | ".join(cells) + " |")
        print("\nraw: " + json.dumps(raw, default=float))
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
