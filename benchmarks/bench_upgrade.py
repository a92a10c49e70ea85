"""Benchmark: `tfrebuild upgrade` against doing the same upgrade by hand with uv, and against pip.

Issue: "measure in one run, on the same starting env and a warm uv cache".

Every contender starts from an identical copy (``cp -a``) of ONE real venv made with pip
from PyPI: ``python -m venv`` + ``pip install tensorflow-cpu==2.15.1 scipy==1.11.4 pandas``.

  tfrebuild       ``tfrebuild upgrade --env COPY --yes --json`` end to end (wall time; its JSON
                  gives resolve, build, checks and swap times)
  raw uv          ``uv venv NEW`` + ``uv pip install tensorflow-cpu==T scipy==1.11.4 pandas==P``
                  + ``NEW/bin/python -c "import tensorflow"`` (T = tfrebuild's target, P = the
                  installed pandas), same uv cache
  raw uv +pyc     the same with ``--compile-bytecode`` (tfrebuild compiles bytecode by default)
  pip in place    ``COPY/bin/python -m pip install --upgrade tensorflow-cpu``

Afterwards each resulting env is checked: ``pip check`` (``uv pip check`` for the raw uv envs,
which have no pip) and whether ``import scipy.linalg`` and ``import tensorflow`` work.

Before timing, one untimed ``tfrebuild upgrade`` on a spare copy warms uv's cache (and tells
the target version), and one untimed pip upgrade on another spare copy warms pip's cache, so
no contender pays for downloads.

Isolation: every command runs with ``PIP_CONFIG_FILE=/dev/null`` and without any ``PIP_*``/
``UV_*`` variable (only PyPI; uv's default cache ``~/.cache/uv``, which should be on the
same filesystem as the work folder so uv can hard-link).

The copies are made with ``cp -a``, so the console scripts pip wrote into them still name the
original venv in their shebangs: the benchmark therefore always runs ``COPY/bin/python -m pip``,
never ``COPY/bin/pip``.

Usage (from the repository root)::

    python benchmarks/bench_upgrade.py                 # 1 timed run of each contender
    python benchmarks/bench_upgrade.py --runs 3
    python benchmarks/bench_upgrade.py --base PATH     # reuse a pip-made 2.15.1 venv (copied, never changed)

Prints a Markdown table; asserts nothing. Everything lives in a temporary folder under
``--workdir`` (default ``<repo>/../scratch``, i.e. /work/scratch here), removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO.parent / "scratch"
BASE_PACKAGES = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas"]
AIM_UV_RATIO = 1.3
LOAD_AT_START = os.getloadavg()  # other work on the machine skews wall times: the report shows the load


# --------------------------------------------------------------------------- shared helpers (bench_rollback imports these)


def clean_environ() -> dict[str, str]:
    """``os.environ`` without ``PIP_*``/``UV_*`` (only PyPI, uv's default cache), pip config off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["NO_COLOR"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run(
    cmd: list, *, cwd: Path | None = None, check: bool = True, timeout: float = 3600
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise SystemExit(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def timed(cmd: list, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = run(cmd, **kwargs)
    return time.perf_counter() - start, proc


def uv_bin() -> str:
    from rebuild.util.uv import uv_bin as find

    return find()


# How the benchmarks start tfrebuild: set by ``choose_tfrebuild`` (default: installed as the README says).
TFREBUILD: list[str] = [sys.executable, "-m", "rebuild"]


def tfrebuild_cmd(*args) -> list:
    return [*TFREBUILD, *args]


def add_tool_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-checkout",
        action="store_true",
        help="run `python -m rebuild` of this interpreter instead of a tfrebuild installed the "
        "README's way (`uv tool install --compile-bytecode`) into the work folder",
    )


def choose_tfrebuild(args, tmp: Path, env: dict[str, str] | None = None) -> list[str]:
    """Install tfrebuild from this checkout as a user does (README: ``uv tool install --compile-bytecode .``)
    into ``tmp/tool`` and time its console script; with ``--from-checkout``, ``python -m rebuild`` instead.
    Start-up is part of every end-to-end figure, and it depends on the install: without compiled bytecode, where
    ``PYTHONDONTWRITEBYTECODE`` is set, every start compiles tfrebuild's modules again."""
    global TFREBUILD
    if args.from_checkout:
        TFREBUILD = [sys.executable, "-m", "rebuild"]
        log(f"tfrebuild: {sys.executable} -m rebuild (this checkout, as this interpreter has it)")
        return TFREBUILD
    tools, bins = tmp / "tool" / "tools", tmp / "tool" / "bin"
    env = dict(os.environ if env is None else env)
    env.update(UV_TOOL_DIR=str(tools), UV_TOOL_BIN_DIR=str(bins))
    # The tool's own uv is the one the raw-uv rows run (uv_bin()), so both sides use the same uv.
    uv_version = subprocess.run([uv_bin(), "--version"], capture_output=True, text=True).stdout.split()[1]
    proc = subprocess.run(
        [
            uv_bin(),
            "tool",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--no-python-downloads",
            "--python",
            sys.executable,
            "--with",
            f"uv=={uv_version}",
            str(REPO),
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"uv tool install --compile-bytecode {REPO} failed (exit {proc.returncode}); pass "
            f"--from-checkout to time `python -m rebuild` instead.\n{proc.stderr[-3000:]}"
        )
    TFREBUILD = [str(bins / "tfrebuild")]
    version = subprocess.run([*TFREBUILD, "--version"], capture_output=True, text=True).stdout.strip()
    log(f"tfrebuild: {TFREBUILD[0]} ({version}, uv {uv_version}; uv tool install --compile-bytecode of {REPO})")
    return TFREBUILD


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def rmtree(path: Path) -> None:
    """Remove ``path`` and, for a managed env, its tfrebuild state folder beside it."""
    state = path.parent / f".{path.name.lstrip('.')}.tfrebuild"
    for p in (path, state):
        if os.path.lexists(p):
            shutil.rmtree(p, ignore_errors=True)


def make_workdir(workdir: Path, prefix: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))


def make_base_venv(dest: Path) -> Path:
    """``python -m venv dest`` + ``pip install tensorflow-cpu==2.15.1 scipy==1.11.4 pandas`` from PyPI."""
    log(f"making the base venv with pip from PyPI: {dest}")
    run([sys.executable, "-m", "venv", dest])
    run([dest / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", *BASE_PACKAGES])
    return dest


def base_venv(args, tmp: Path) -> Path:
    if args.base:
        base = Path(args.base).resolve()
        version = run([base / "bin" / "python", "-c", "import tensorflow as tf; print(tf.__version__)"]).stdout.split()
        if not version or version[-1] != "2.15.1":
            raise SystemExit(f"--base {base} does not hold tensorflow 2.15.1 (got {version[-1:]})")
        return base
    return make_base_venv(tmp / "base")


def copy_env(base: Path, dest: Path) -> Path:
    run(["cp", "-a", base, dest])
    return dest


def freeze(env: Path) -> dict[str, str]:
    out = run([uv_bin(), "pip", "freeze", "--python", env / "bin" / "python"]).stdout
    return dict(line.split("==", 1) for line in out.split() if "==" in line)


def cache_archives() -> set[str]:
    """Entries of uv's unpacked-wheel store (``<cache>/archive-v0``)."""
    try:
        return {e.path for e in os.scandir(uv_cache_dir() / "archive-v0")}
    except FileNotFoundError:
        return set()


def tree_bytes(paths) -> int:
    """Allocated bytes under ``paths``, each inode once."""
    seen, total = set(), 0
    for root in paths:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def uv_cache_dir() -> Path:
    return Path(run([uv_bin(), "cache", "dir"]).stdout.strip())


def machine_line() -> str:
    uv_version = run([uv_bin(), "--version"]).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    start = f"at the start {', '.join(f'{x:.1f}' for x in LOAD_AT_START)}, " if LOAD_AT_START else ""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{uv_version}, {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {start}at the end {load}"
    )


# --------------------------------------------------------------------------- contenders


@dataclass
class Outcome:
    seconds: float
    ok: bool  # the command itself exited 0
    deps_ok: bool | None = None
    deps_tool: str = ""
    scipy_ok: bool | None = None
    tf_version: str = ""
    detail: dict = field(default_factory=dict)
    note: str = ""
    cache_added: tuple[int, int] = (0, 0)  # new entries in uv's archive-v0 during the run, and their bytes


def check_env(env: Path, outcome: Outcome) -> Outcome:
    """pip check (uv pip check when the env has no pip), import scipy.linalg, TensorFlow's version."""
    python = env / "bin" / "python"
    has_pip = run([python, "-c", "import pip"], check=False).returncode == 0
    if has_pip:
        proc = run([python, "-m", "pip", "check", "--disable-pip-version-check"], check=False)
        outcome.deps_tool = "pip check"
    else:
        proc = run([uv_bin(), "pip", "check", "--python", python], check=False)
        outcome.deps_tool = "uv pip check"
    outcome.deps_ok = proc.returncode == 0
    if not outcome.deps_ok:
        outcome.note = (proc.stdout + proc.stderr).strip().splitlines()[0][:160]
    outcome.scipy_ok = run([python, "-c", "import scipy.linalg"], check=False).returncode == 0
    tf = run([python, "-c", "import tensorflow as tf; print(tf.__version__)"], check=False)
    outcome.tf_version = tf.stdout.split()[-1] if tf.returncode == 0 and tf.stdout.split() else "import fails"
    return outcome


def run_tfrebuild(base: Path, where: Path) -> Outcome:
    env = copy_env(base, where / "tf")
    seconds, proc = timed(tfrebuild_cmd("upgrade", "--env", env, "--yes", "--json"), cwd=where, check=False)
    outcome = Outcome(seconds, proc.returncode == 0)
    if proc.returncode == 0:
        data = json.loads(proc.stdout)
        outcome.detail = {
            "target": data["plan"]["tf_new"],
            "resolve_s": data["plan"]["seconds"],
            "build_s": data["build_seconds"],
            "checks_s": sum(c["seconds"] for c in data["checks"]),
            "swap_ms": data["swap_ms"],
            "verify_s": sum(c["seconds"] for c in data["after_swap"]),
            "total_s": data["seconds"],
        }
    else:
        outcome.note = (proc.stdout + proc.stderr).strip()[-300:]
    return check_env(env, outcome)


def run_raw_uv(base: Path, where: Path, target: str, pandas: str, python: str, compile_bytecode: bool) -> Outcome:
    new = where / "new"
    install = [
        uv_bin(),
        "pip",
        "install",
        "--quiet",
        "--python",
        new / "bin" / "python",
        f"tensorflow-cpu=={target}",
        "scipy==1.11.4",
        f"pandas=={pandas}",
    ]
    if compile_bytecode:
        install.append("--compile-bytecode")
    start = time.perf_counter()
    run([uv_bin(), "venv", "--quiet", "--python", python, new])
    run(install)
    run([new / "bin" / "python", "-c", "import tensorflow"])
    return check_env(new, Outcome(time.perf_counter() - start, True))


def run_pip(base: Path, where: Path) -> Outcome:
    env = copy_env(base, where / "tf")
    seconds, proc = timed(
        [env / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "tensorflow-cpu"],
        check=False,
    )
    outcome = Outcome(seconds, proc.returncode == 0)
    if "dependency conflicts" in proc.stderr:
        conflict = [line for line in proc.stderr.splitlines() if "requires" in line]
        outcome.detail["pip_warned"] = conflict[0].strip()[:160] if conflict else "dependency conflicts"
    return check_env(env, outcome)


# --------------------------------------------------------------------------- main


def fmt_bool(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each contender (default 1)")
    parser.add_argument("--base", help="existing pip-made tensorflow-cpu 2.15.1 venv to copy (it is never changed)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"where the temporary folder goes; same filesystem as uv's cache (default {DEFAULT_WORKDIR})",
    )
    parser.add_argument("--no-warm-pip", action="store_true", help="skip the untimed pip run that warms pip's cache")
    add_tool_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    tmp = make_workdir(args.workdir, "bench-upgrade-")
    log(f"work folder {tmp}")
    try:
        choose_tfrebuild(args, tmp, clean_environ())
        base = base_venv(args, tmp)
        if not same_filesystem(tmp, uv_cache_dir()):
            log(f"warning: uv's cache {uv_cache_dir()} is on another filesystem than {tmp}: uv will copy, not link")
        base_pins = freeze(base)
        pandas = base_pins["pandas"]
        python = run([base / "bin" / "python", "-c", "import sys; print(sys._base_executable)"]).stdout.strip()

        log("warm-up (untimed): tfrebuild upgrade on a spare copy")
        warm = tmp / "warm-tfrebuild"
        warm.mkdir()
        first = run_tfrebuild(base, warm)
        if not first.ok:
            raise SystemExit(f"the warm-up tfrebuild upgrade failed: {first.note}")
        target = first.detail["target"]
        rmtree(warm / "tf")
        if not args.no_warm_pip:
            log("warm-up (untimed): pip upgrade on a spare copy")
            warm = tmp / "warm-pip"
            warm.mkdir()
            run_pip(base, warm)
            rmtree(warm / "tf")

        contenders = {
            "tfrebuild upgrade": lambda w: run_tfrebuild(base, w),
            "raw uv": lambda w: run_raw_uv(base, w, target, pandas, python, compile_bytecode=False),
            "raw uv +pyc": lambda w: run_raw_uv(base, w, target, pandas, python, compile_bytecode=True),
            "pip install --upgrade": lambda w: run_pip(base, w),
        }
        results: dict[str, list[Outcome]] = {name: [] for name in contenders}
        for i in range(args.runs):
            for name, contender in contenders.items():
                where = tmp / f"run{i + 1}-{name.split()[0]}{'-pyc' if 'pyc' in name else ''}"
                where.mkdir()
                log(f"run {i + 1}/{args.runs}: {name}")
                before = cache_archives()
                outcome = contender(where)
                added = cache_archives() - before
                outcome.cache_added = (len(added), tree_bytes(added))
                log(f"  {outcome.seconds:.1f} s, exit ok: {outcome.ok}, deps ok: {outcome.deps_ok}")
                results[name].append(outcome)
                for child in list(where.iterdir()):
                    rmtree(child)
                shutil.rmtree(where, ignore_errors=True)

        report(results, args, target, pandas, base_pins)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[str, list[Outcome]], args, target: str, pandas: str, base_pins: dict[str, str]) -> None:
    med = {name: statistics.median(o.seconds for o in outs) for name, outs in results.items()}
    print(f"# tfrebuild upgrade vs raw uv vs pip ({machine_line()})")
    print()
    print(f"Aims: tfrebuild within {AIM_UV_RATIO}x of raw uv; faster than pip while leaving a consistent env.")
    print(
        f"Start: tensorflow-cpu 2.15.1, scipy 1.11.4, pandas {pandas}, numpy {base_pins.get('numpy')} "
        f"({len(base_pins)} distributions, made with pip from PyPI); target tensorflow-cpu {target}; "
        f"warm uv cache{'' if args.no_warm_pip else ' and warm pip cache'}; {args.runs} timed run(s), median shown."
    )
    print()
    print(
        "| contender | wall s (median) | min s | max s | exit 0 | deps consistent | import scipy.linalg | TF after "
        "| uv cache growth per run |"
    )
    print("|---|---:|---:|---:|---|---|---|---|---:|")
    for name, outs in results.items():
        secs = [o.seconds for o in outs]
        last = outs[-1]
        deps = f"{fmt_bool(last.deps_ok)} ({last.deps_tool})"
        entries = statistics.median(o.cache_added[0] for o in outs)
        grown = statistics.median(o.cache_added[1] for o in outs) / 2**20
        print(
            f"| {name} | {med[name]:.1f} | {min(secs):.1f} | {max(secs):.1f} | {fmt_bool(all(o.ok for o in outs))} "
            f"| {deps} | {fmt_bool(last.scipy_ok)} | {last.tf_version} | {grown:,.0f} MiB ({entries:.0f} entries) |"
        )
    print()
    tf = [o.detail for o in results["tfrebuild upgrade"] if o.detail]
    if tf:

        def m(key: str) -> float:
            return statistics.median(d[key] for d in tf)

        print(
            f"tfrebuild stages (median): resolve {m('resolve_s'):.1f} s, build {m('build_s'):.1f} s "
            f"(uv venv + uv pip sync --compile-bytecode), checks in staging {m('checks_s'):.1f} s, "
            f"swap {m('swap_ms'):.1f} ms, check after swap {m('verify_s'):.1f} s; "
            f"tfrebuild's own total {m('total_s'):.1f} s."
        )
    for o in results["pip install --upgrade"]:
        if o.detail.get("pip_warned"):
            print(f"pip's own warning: {o.detail['pip_warned']}")
            break
    for name, outs in results.items():
        if outs[-1].note and not outs[-1].deps_ok:
            print(f"{name}: {outs[-1].deps_tool} says: {outs[-1].note}")
    print()
    t = med["tfrebuild upgrade"]
    print("| ratio | value | aim |")
    print("|---|---:|---|")
    print(
        f"| tfrebuild / raw uv | {t / med['raw uv']:.2f}x | <= {AIM_UV_RATIO}x: "
        f"{'met' if t / med['raw uv'] <= AIM_UV_RATIO else '**not met**'} |"
    )
    print(f"| tfrebuild / raw uv +pyc | {t / med['raw uv +pyc']:.2f}x | (same work incl. bytecode) |")
    pip_ok = all(o.deps_ok and o.scipy_ok for o in results["pip install --upgrade"])
    print(
        f"| tfrebuild / pip | {t / med['pip install --upgrade']:.2f}x | < 1x: "
        f"{'met' if t < med['pip install --upgrade'] else '**not met**'} "
        f"(pip's env consistent: {'yes' if pip_ok else 'no'}) |"
    )


if __name__ == "__main__":
    sys.exit(main())
