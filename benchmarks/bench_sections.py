"""The rows bench_all.py adds for issue 26: plan then upgrade, plan under a CPU hog, the new checks on and off, a
three-try target search, the big (~300-distribution) env and tfrebuild's own peak RSS.

Every function takes fresh ``cp -a`` copies of a base venv that it never changes, runs the contenders in
alternating order (A-B in odd rounds, B-A in even ones: A-B-B-A... against drift) and returns raw times; bench_all.py
turns them into table rows. Same isolation as bench_upgrade.py: ``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*``/``UV_*``
variables, PyPI only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import bench_upgrade as bu

# keys of an upgrade's --json result that say it reused the plan's resolution (h26b's work); "reused" alone is the
# generation an upgrade switched back to, not this
REUSE_HINTS = ("reused_resolution", "resolution_reused", "plan_reused", "reused_plan", "from_plan")


def alternate(names: list[str], runs: int) -> list[tuple[int, str]]:
    """(round, name): names in order in even rounds, reversed in odd ones (A-B, B-A, A-B ...)."""
    out = []
    for i in range(runs):
        out += [(i, n) for n in (names if i % 2 == 0 else names[::-1])]
    return out


def run_cmd(cmd, env=None, cwd=None, check=True, timeout=3600) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=env or bu.clean_environ(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(
            f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return seconds, proc


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_peak(cmd, env=None, cwd=None, check=True) -> tuple[float, subprocess.CompletedProcess, int]:
    """Run ``cmd`` and poll ``/proc/<pid>/status`` VmHWM of that process (tfrebuild itself: its children, uv and
    the checks, are other processes and not counted) every 20 ms until it exits. Returns (seconds, result, KiB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=err,
            text=True,
            env=env or bu.clean_environ(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kib(proc.pid) or 0)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise SystemExit(
            f"failed ({result.returncode}): {' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return seconds, result, peak


@contextmanager
def cpu_hog(n: int = 2):
    """``n`` processes of ``python -c "while True: pass"``, killed (by their ids) on the way out."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(1.0)  # let them take the CPUs
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def fresh(base: Path, where: Path, name: str = "tf") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    return bu.copy_env(base, where / name)


def drop(where: Path) -> None:
    if where.exists():
        for child in list(where.iterdir()):
            bu.rmtree(child) if child.is_dir() else child.unlink()
        where.rmdir()


def upgrade(env: Path, cwd: Path, *extra, environ=None, check=True) -> tuple[float, dict, int]:
    seconds, proc, peak = run_peak(
        bu.tfrebuild_cmd("upgrade", "--env", env, "--yes", "--json", *extra), environ, cwd=cwd, check=check
    )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {"error": (proc.stderr or proc.stdout)[-2000:], "exit": proc.returncode}
    if proc.returncode != 0:
        doc.setdefault("exit", proc.returncode)
        doc.setdefault("error", proc.stderr[-2000:])
    return seconds, doc, peak


def reuse_flag(doc) -> str:
    """Whether an upgrade's JSON says it reused the plan's resolution: "yes" where a key named like it (main's:
    ``plan.resolution_reused``, a list of what was reused) holds a non-empty value, "no" otherwise."""
    found: list[bool] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                low = key.lower()
                if low in REUSE_HINTS or ("reus" in low and ("resol" in low or "plan" in low)):
                    found.append(bool(value))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return "yes" if any(found) else "no" if found else "no (not reported)"


# --------------------------------------------------------------------------- plan then upgrade


def plan_pair(base: Path, tmp: Path, runs: int) -> dict:
    """A: ``plan --env E --json`` then ``upgrade --env E --yes --json`` (same inputs, same copy), timed together;
    B: ``upgrade`` alone on another copy."""
    pair, alone, plans, reuse = [], [], [], []
    for i, name in alternate(["pair", "alone"], runs):
        where = tmp / f"pair{i}-{name}"
        bu.log(f"plan then upgrade, round {i + 1}: {name}")
        env = fresh(base, where)
        if name == "pair":
            p, _ = run_cmd(bu.tfrebuild_cmd("plan", "--env", env, "--json"), cwd=where)
            u, doc, _ = upgrade(env, where)
            pair.append(p + u)
            plans.append(p)
            reuse.append(reuse_flag(doc))
        else:
            alone.append(upgrade(env, where)[0])
        drop(where)
    return {"pair": pair, "alone": alone, "plan_in_pair": plans, "reuse": reuse}


# --------------------------------------------------------------------------- the new checks on and off


def make_model(base: Path, folder: Path) -> Path:
    """A tiny Keras model saved by the base env's own TensorFlow (2.15, Keras 2) in the work folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tiny.keras"
    script = (
        "import tensorflow as tf; m = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3), "
        "tf.keras.layers.Dense(2)]); m.compile(); m.save(%r)" % str(model)
    )
    run_cmd([base / "bin" / "python", "-c", script], cwd=folder)
    return model


def checks_on_off(base: Path, tmp: Path, runs: int) -> dict:
    """A: warm upgrade with one model check (``--model``: the old env runs the model beside the new env's checks, the
    new env must answer the same) and the old env's reference import checks on (the default: the profile's imports,
    run in the current env when one fails in the new env); B: the same upgrade without both
    (``--no-reference-checks``, no model)."""
    model = make_model(base, tmp / "model")
    on, off, model_rows = [], [], []
    for i, name in alternate(["on", "off"], runs):
        where = tmp / f"checks{i}-{name}"
        bu.log(f"checks on/off, round {i + 1}: {name}")
        env = fresh(base, where)
        seconds, doc, _ = upgrade(
            env, where, *(["--model", model] if name == "on" else ["--no-reference-checks"]), check=False
        )
        if doc.get("exit"):
            raise SystemExit(f"upgrade with the checks {name} failed: {doc.get('error')}")
        (on if name == "on" else off).append(seconds)
        if name == "on":
            model_rows.append(doc.get("models") or doc.get("model_checks") or [])
        drop(where)
    return {"on": on, "off": off, "models": model_rows[:1]}


# --------------------------------------------------------------------------- three-try target search


def failing_profile(base: Path, tmp: Path, newest: str) -> tuple[Path, str]:
    """A profile of the base env whose smoke command fails on the two newest minors at or below ``newest``."""
    import tomli_w

    major, minor = (int(x) for x in newest.split(".")[:2])
    bad = (f"{major}.{minor}.", f"{major}.{minor - 1}.")
    where = tmp / "search-profile"
    env = fresh(base, where)
    profile = tmp / "search.toml"
    run_cmd(bu.tfrebuild_cmd("snapshot", "--env", env, "-o", profile, "--force"))
    drop(where)
    data = tomllib.loads(profile.read_text())
    command = (
        f"python -c \"import sys, importlib.metadata as m; sys.exit(m.version('tensorflow-cpu').startswith({bad!r}))\""
    )
    data.setdefault("smoke", {})["commands"] = [command]
    profile.write_text(tomli_w.dumps(data))
    return profile, f"{major}.{minor - 2}"


def search(base: Path, tmp: Path, runs: int, newest: str) -> dict:
    """A: ``upgrade`` with that profile (the search tries the newest, the next, lands on the third); B: one warm
    upgrade straight to where it lands (``--to`` the landing release, same profile: one build)."""
    profile, third = failing_profile(base, tmp, newest)
    common = ["--profile", profile, "--allow-commands"]
    searches, singles, tries, landed = [], [], [], []
    for i, name in alternate(["search", "single"], runs):
        where = tmp / f"search{i}-{name}"
        bu.log(f"target search, round {i + 1}: {name}")
        env = fresh(base, where)
        extra = common if name == "search" else [*common, "--to", landed[0] if landed else third]
        seconds, doc, _ = upgrade(env, where, *extra, check=False)
        if doc.get("exit"):
            raise SystemExit(f"upgrade ({name}) failed: {doc.get('error')}")
        if name == "search":
            searches.append(seconds)
            tries.append(sum(1 for t in doc.get("tries", []) if t.get("built", True)))
            landed.append(doc["plan"]["tf_new"])
        else:
            singles.append(seconds)
        drop(where)
    return {"search": searches, "single": singles, "builds": tries, "landed": landed}


# --------------------------------------------------------------------------- the big env


def big_env(big: Path, tmp: Path, runs: int, python: str, raw_uv) -> dict:
    """The ~300-distribution env: an untimed warm-up upgrade (uv's and the pyc cache), then tfrebuild upgrade
    (peak RSS polled) against raw uv +pyc of the set tfrebuild's new env holds; snapshot, rollback and disk on the
    env the first timed upgrade made, right after it."""
    n_dists = len(bu.freeze(big))
    bu.log(f"big env ({n_dists} distributions): warm-up upgrade (untimed)")
    where = tmp / "big-warm"
    env = fresh(big, where)
    _, doc, _ = upgrade(env, where)
    pins = [f"{n}=={v}" for n, v in sorted(bu.freeze(env).items())]
    target = doc["plan"]["tf_new"]
    drop(where)
    times: dict[str, list[float]] = {"tfrebuild": [], "uv+pyc": []}
    peaks, stages, extra = [], [], {}
    for i, name in alternate(list(times), runs):
        where = tmp / f"big{i}-{name.replace('+', '')}"
        bu.log(f"big env, round {i + 1}: {name}")
        if name == "tfrebuild":
            env = fresh(big, where)
            seconds, doc, peak = upgrade(env, where)
            peaks.append(peak)
            stages.append(
                {
                    "resolve": doc["plan"]["seconds"],
                    "build": doc["build_seconds"],
                    "checks": sum(c["seconds"] for c in doc["checks"]),
                }
            )
            times[name].append(seconds)
            if not extra:
                extra = after_upgrade(env, tmp)  # then the copy goes: one big copy at a time beside the base
        else:
            where.mkdir()
            times[name].append(raw_uv(where, pins, python, True, bu.clean_environ()))
        drop(where)
        bu.log(f"  {times[name][-1]:.1f} s")
    return {
        "n": n_dists,
        "n_new": len(pins),
        "target": target,
        "times": times,
        "peak_kib": peaks,
        "stages": stages,
        **extra,
    }


def after_upgrade(env: Path, tmp: Path) -> dict:
    """On the env an upgrade just made: snapshot (5×, after one warm-up), rollback (10×: back on the new
    generation at the end) and disk per new generation."""
    from bench_rollback import measure_disk
    from rebuild.store.store import Store

    bu.log("big env: snapshot, rollback, disk")
    out = tmp / "big-snap.toml"
    cmd = bu.tfrebuild_cmd("snapshot", "--env", env, "-o", out, "--force")
    run_cmd(cmd)  # warm-up
    snaps = [run_cmd(cmd)[0] for _ in range(5)]
    rolls = [run_cmd(bu.tfrebuild_cmd("rollback", "--env", env, "--yes", "--json"))[0] for _ in range(10)]
    disk = measure_disk(Store.open(env).generation_dir(1) / "env", env)
    return {"snapshot": snaps, "rollback": rolls, "disk": disk}
