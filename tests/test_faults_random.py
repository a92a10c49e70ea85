"""Crash safety at every instant (issue 14, points 4, 5, 7): a random-time fault harness and the observed cases.

The harness sends SIGKILL, SIGINT or SIGTERM -- to tfrebuild's whole process group or to tfrebuild
alone, as the OOM killer does -- at a random moment of ``upgrade``, ``rollback``, ``gc`` or ``apply``
(to a new path) on the kit, for about ``$TFREBUILD_FAULT_BUDGET`` seconds (default 60).  The seed is
``$TFREBUILD_FAULT_SEED`` or the time, printed.  After each trial:

* the env is whole: every file named by every ``RECORD`` in its site-packages is there;
* an interrupted command told the truth: "nothing was changed" only if the env path holds the tree
  it held before, and "is now on generation N" only if generation N is current;
* the next command recovers: ``status`` exits 0, and a second ``status`` finds nothing interrupted,
  nothing to recover, no leftover staging;
* every generation is complete: ``meta.toml``, ``profile.toml`` and its tree (same inode as recorded).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.kit.cli import run_cli
from tests.test_generations import TARGETS, _fast_managed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (signals, /proc)")

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("TFREBUILD_FAULT_SEED") or time.time())
BUDGET = float(os.environ.get("TFREBUILD_FAULT_BUDGET", "60"))
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


# --------------------------------------------------------------------------- helpers


def state_of(env: Path) -> Path:
    return env.parent / f".{env.name.lstrip('.')}.tfrebuild"


def key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def toml(path: Path) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def missing_record_files(env: Path) -> list[str]:
    """Files named by a RECORD in ``env``'s site-packages that are not there (``[]``: the env is whole)."""
    missing = []
    sites = list(env.glob("lib/python3*/site-packages"))
    assert sites, f"{env} has no site-packages"
    for site in sites:
        for record in site.glob("*.dist-info/RECORD"):
            for line in record.read_text(encoding="utf-8").splitlines():
                rel = line.rsplit(",", 2)[0] if line.strip() else ""
                if rel.endswith(".dist-info/REQUESTED"):
                    continue  # tfrebuild's build marks only the requested packages (it removes the others' markers)
                if rel and not os.path.lexists(os.path.normpath(site / rel)):
                    missing.append(f"{record.parent.name}: {rel}")
    return missing


def incomplete_generations(env: Path) -> list[str]:
    """Generations without meta + profile + tree (the tree's inode as recorded)."""
    state = state_of(env)
    current = toml(state / "store.toml")["current"]
    problems = []
    for folder in sorted((state / "generations").iterdir()):
        n = int(folder.name)
        if not (folder / "meta.toml").is_file():
            problems.append(f"generation {n}: no meta.toml")
            continue
        meta = toml(folder / "meta.toml")
        if not (folder / "profile.toml").is_file():
            problems.append(f"generation {n}: no profile.toml")
        tree = env if n == current else folder / "env"
        if key(tree) != (meta["device"], meta["inode"]):
            problems.append(f"generation {n}: tree {tree} is not the recorded one")
    return problems


def tfr(kit_env, *args, timeout: float = 180, **overrides):
    return run_cli(kit_env, *args, overrides=overrides or None, cwd=ROOT, timeout=timeout)


def clean(run) -> None:
    assert run.code == 0 and "Traceback" not in run.text, str(run)


def assert_recovers(kit_env, env: Path) -> None:
    """The next command recovers; then nothing is left and every generation is complete."""
    clean(tfr(kit_env, "status", "--env", env, "--json"))
    doc = tfr(kit_env, "status", "--env", env, "--json")
    clean(doc)
    doc = doc.json()
    assert doc["managed"] and doc["interrupted"] is None and doc["recovered"] is None, doc
    assert doc["leftover_staging"] == [], doc
    assert incomplete_generations(env) == []


def assert_undone(kit_env, target: Path) -> None:
    """An apply into the new path ``target`` killed before its rename: ``status`` on that path (which does not
    exist) reaches the state folder, undoes the apply and says so; nothing is left there."""
    run = tfr(kit_env, "status", "--env", target, "--json")
    clean(run)
    doc = run.json()
    assert not doc["managed"], doc
    assert not os.path.lexists(target) and not os.path.lexists(state_of(target)), sorted(os.listdir(state_of(target)))


def _as_at_a_terminal() -> None:
    # A shell running the suite in the background (`cmd &`, nohup) makes SIGINT ignored, and children inherit
    # that; a user's Ctrl-C reaches a tfrebuild whose SIGINT is not ignored, so the child starts that way.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(kit_env, *args, **overrides) -> subprocess.Popen:
    environ = dict(kit_env)
    environ.update(overrides)
    return subprocess.Popen(
        [sys.executable, "-m", "rebuild", *map(str, args)],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=_as_at_a_terminal,
    )


def send(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


@pytest.fixture
def env2(tmp_path, kit_index, kit_env) -> Path:
    """A managed kit env: generation 1 (TF 2.15.1, adopted), 2 (2.16.1, current)."""
    return _fast_managed(tmp_path / "p" / "tf", 2, kit_index, kit_env)


# --------------------------------------------------------------------------- the harness


@pytest.mark.slow
def test_random_time_faults(tmp_path, kit_index, kit_env, env2):
    rng = random.Random(SEED)
    print(f"\nfault harness seed {SEED} (TFREBUILD_FAULT_SEED={SEED} repeats it), budget {BUDGET:.0f}s")
    env = env2
    profile = tmp_path / "foreign.toml"  # apply a copy: a profile outside the state folder
    profile.write_text((state_of(env) / "generations" / "1" / "profile.toml").read_text())
    guess = {"upgrade": 3.0, "rollback": 1.0, "gc": 1.0, "apply": 3.0}  # follows what is seen
    stats = {"kills": 0, "env_whole": 0, "generations_complete": 0, "too_late": 0, "truthful": 0, "apply_undone": 0}
    problems: list[str] = []
    deadline = time.monotonic() + BUDGET
    trial = 0
    while time.monotonic() < deadline:
        trial += 1
        state = toml(state_of(env) / "store.toml")
        gens = sorted(int(p.name) for p in (state_of(env) / "generations").iterdir())
        tf_now = toml(state_of(env) / "generations" / str(state["current"]) / "meta.toml")["tensorflow"]
        ops = ["upgrade", "apply"] + (["rollback"] if "previous" in state else []) + (["gc"] if len(gens) > 2 else [])
        op = rng.choice(ops)
        target = env
        if op == "upgrade":
            to = rng.choice([t for t in TARGETS if not tf_now.split()[-1].startswith(t)])
            args = ["upgrade", "--env", env, "--to", to, "--offline", "--find-links", kit_index, "--yes", "--json"]
        elif op == "rollback":
            args = ["rollback", "--env", env, "--yes", "--json"]
        elif op == "gc":
            args = ["gc", "--env", env, "--keep", "1", "--yes", "--json"]
        else:
            target = tmp_path / f"apply-{trial}" / "venv"
            args = ["apply", profile, "--env", target, "--offline", "--find-links", kit_index, "--yes", "--json"]
        sig, group = rng.choice(SIGNALS), rng.random() < 0.5
        delay = rng.uniform(0.05, guess[op])
        before = key(env), state["current"]
        what = f"trial {trial}: {op} {signal.Signals(sig).name} to {'group' if group else 'tfrebuild alone'} at {delay:.2f}s"
        t0 = time.monotonic()
        proc = start(kit_env, *args)
        try:
            proc.wait(timeout=delay)
            late = True
        except subprocess.TimeoutExpired:
            late = False
            send(proc, sig, group)
        out, err = proc.communicate(timeout=180)
        elapsed = time.monotonic() - t0
        if late:
            stats["too_late"] += 1
            guess[op] = elapsed * 1.1  # aim inside the command's run time as it is on this machine now
        else:
            stats["kills"] += 1
        if group is False:
            time.sleep(0.05)  # children of a tfrebuild killed alone: the next command must cope with them
        # 1. the env is whole, whatever happened
        for path in (env, target):
            if os.path.lexists(path):
                missing = missing_record_files(path)
                if missing:
                    problems.append(f"{what}: {path} is not whole: {missing[:3]}")
        if not late:
            stats["env_whole"] += 1 if not problems or not problems[-1].startswith(what) else 0
        # 2. the message tells the truth (before anything recovers)
        if proc.returncode in (130, 143) and "Traceback" not in err:
            if "nothing was changed" in err or not err.strip():  # silent: interrupted before any command ran
                now = key(env), toml(state_of(env) / "store.toml")["current"]
                if now != before or (op == "apply" and os.path.lexists(target)):
                    problems.append(f"{what}: said 'nothing was changed' but the env changed\n{err}")
                else:
                    stats["truthful"] += 1
            elif "is now on generation" in err:
                said = int(err.split("is now on generation ", 1)[1].split()[0].rstrip(";"))
                if toml(state_of(env) / "store.toml")["current"] != said:
                    problems.append(f"{what}: named generation {said}, which is not current\n{err}")
                else:
                    stats["truthful"] += 1
            elif "was created as generation 1" in err and os.path.lexists(target):
                stats["truthful"] += 1
            elif "gc deleted" in err:
                stats["truthful"] += 1
            else:
                problems.append(f"{what}: exit {proc.returncode} without saying what changed\n{err}")
        elif proc.returncode not in (0, -9, -2, -15, 130, 143):
            problems.append(f"{what}: exit {proc.returncode}\n{err[-2000:]}")
        # 3. the next command recovers; 4. every generation complete
        try:
            assert_recovers(kit_env, env)
            if os.path.lexists(target) and target != env:
                assert_recovers(kit_env, target)
            elif target != env and os.path.lexists(state_of(target)):
                assert_undone(kit_env, target)  # an apply into a new path killed before its rename (issue 23)
                stats["apply_undone"] += 1
            stats["generations_complete"] += 0 if late else 1
        except AssertionError as exc:
            problems.append(f"{what}: {exc}")
            break
    print(
        f"fault harness: {trial} trials, kills tried {stats['kills']} (plus {stats['too_late']} that came after "
        f"the command ended), env whole {stats['env_whole']}/{stats['kills']}, generations complete "
        f"{stats['generations_complete']}/{stats['kills']}, interrupt messages truthful {stats['truthful']}, "
        f"applies into a new path undone by status {stats['apply_undone']}; "
        f"seed {SEED}"
    )
    assert not problems, f"seed {SEED}:\n" + "\n\n".join(problems)
    assert stats["kills"] >= 5, stats


# --------------------------------------------------------------------------- damaged journals

DAMAGED = {
    "rollback-without-fields": '{"op": "rollback"}',
    "gc-generation-path": '{"op": "gc", "generation": "../../x"}',
    "list": "[1, 2]",
    "null": "null",
    "not-json": "{this is not json",
    "empty": "",
    "unknown-op": '{"op": "frobnicate"}',
    "upgrade-bad-inodes": '{"op": "upgrade", "new_inode": "x", "staging": null}',
    "gc-bool": '{"op": "gc", "generation": true}',
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
@pytest.mark.slow
def test_damaged_journal_is_set_aside_when_safe(env2, kit_env, content):
    """E is the recorded generation: every command sets the journal aside (kept as journal.json.damaged)."""
    journal = state_of(env2) / "journal.json"
    journal.write_text(content)
    run = tfr(kit_env, "status", "--env", env2, "--json")
    clean(run)
    assert "damaged journal aside" in run.json()["recovered"], str(run)
    assert not journal.exists() and journal.with_name("journal.json.damaged").read_text() == content
    journal.write_text(content)
    run = tfr(kit_env, "rollback", "--env", env2, "--yes", "--json")
    clean(run)
    assert "damaged journal aside" in run.json()["recovered"] and run.json()["to_generation"] == 1
    assert_recovers(kit_env, env2)


@pytest.mark.parametrize("content", ['{"op": "rollback"}', "[1, 2]", "null", "{not json"])
def test_damaged_journal_refused_alike_when_unsafe(env2, kit_env, content):
    """E is not the recorded tree: status, history and rollback all refuse, with the same clean message."""
    journal = state_of(env2) / "journal.json"
    journal.write_text(content)
    meta = state_of(env2) / "generations" / "2" / "meta.toml"
    meta.write_text(meta.read_text().replace("inode = ", "inode = 1"))  # the record no longer names E's tree
    before = key(env2)
    errors = set()
    for args in (("status",), ("history",), ("rollback", "--yes"), ("gc", "--keep", "1", "--yes")):
        run = tfr(kit_env, *args, "--env", env2)
        assert run.code == 1 and "Traceback" not in run.text, str(run)
        assert "is damaged" in run.err and "hint:" in run.err and str(journal) in run.err, str(run)
        errors.add(run.err.split("hint:")[0])
    assert len(errors) == 1, errors
    assert key(env2) == before and journal.read_text() == content


def test_damaged_journal_with_outside_path_is_refused(env2, kit_env, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    journal = state_of(env2) / "journal.json"
    journal.write_text(json.dumps({"op": "gc", "generation": 1, "trash": str(victim)}))
    run = tfr(kit_env, "status", "--env", env2)
    assert run.code == 1 and "outside" in run.err and "Traceback" not in run.text, str(run)
    assert (victim / "keep").read_text() == "x"


# --------------------------------------------------------------------------- apply to a new path, killed


@pytest.mark.parametrize("next_command", ["status", "upgrade", "history"])
@pytest.mark.slow
def test_apply_to_new_path_killed_after_move_is_finished_by_any_command(
    env2, kit_env, kit_index, tmp_path, next_command
):
    profile = tmp_path / "foreign.toml"
    profile.write_text((state_of(env2) / "generations" / "1" / "profile.toml").read_text())
    target = tmp_path / "new" / "venv"
    run = tfr(
        kit_env,
        "apply",
        profile,
        "--env",
        target,
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        TFREBUILD_FAULT="apply.renamed",
    )
    assert run.code == -signal.SIGKILL, str(run)
    assert target.is_dir() and (state_of(target) / "journal.json").exists()
    if next_command == "upgrade":
        run = tfr(
            kit_env,
            "upgrade",
            "--env",
            target,
            "--to",
            "2.16",
            "--offline",
            "--find-links",
            kit_index,
            "--yes",
            "--json",
        )
        clean(run)
        assert "finished an interrupted apply" in run.json()["recovered"]
    else:
        run = tfr(kit_env, next_command, "--env", target, "--json")
        clean(run)
        assert "finished an interrupted apply" in run.json()["recovered"], str(run)
    assert missing_record_files(target) == []
    assert_recovers(kit_env, target)


# --------------------------------------------------------------------------- tfrebuild killed alone, uv running


@pytest.mark.slow
def test_tfrebuild_killed_alone_while_uv_runs(env2, kit_env, kit_index):
    """As the OOM killer does: only tfrebuild dies; its uv must not go on writing into staging."""
    proc = start(
        kit_env,
        "upgrade",
        "--env",
        env2,
        "--to",
        "2.18",
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        "--no-compile",
    )
    uv_pid = None
    deadline = time.monotonic() + 60
    while uv_pid is None and time.monotonic() < deadline and proc.poll() is None:
        for child in children_of(proc.pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"uv") and (b"sync" in cmdline or b"install" in cmdline):
                uv_pid = child
        time.sleep(0.01)
    assert uv_pid is not None, "no uv install/sync seen"
    os.kill(proc.pid, signal.SIGKILL)  # tfrebuild alone
    proc.communicate(timeout=30)
    time.sleep(0.2)
    assert not alive(uv_pid), "uv outlived tfrebuild"
    run = tfr(kit_env, "status", "--env", env2, "--json")
    clean(run)
    assert "rolled back interrupted upgrade" in run.json()["recovered"]
    assert missing_record_files(env2) == []
    assert_recovers(kit_env, env2)


@pytest.mark.parametrize("threaded", [False, True], ids=["main thread", "from a thread"])
def test_proc_run_children_die_with_their_parent(tmp_path, threaded):
    """``proc.run``'s child gets SIGKILL when the process that ran it dies (PR_SET_PDEATHSIG through
    ``setpriv``, no ``preexec_fn``), also when a thread started it (the plan starts interpreters from threads)."""
    pidfile = tmp_path / "pid"
    child_code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    call = f"proc.run, args=([sys.executable, '-c', {child_code!r}],), kwargs={{'timeout': 120}}"
    code = (
        (
            f"from rebuild.util import proc; import sys, threading; t = threading.Thread(target={call}); "
            "t.start(); t.join()"
        )
        if threaded
        else (
            f"from rebuild.util import proc; import sys; proc.run([sys.executable, '-c', {child_code!r}], timeout=120)"
        )
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pidfile.read_text())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the child outlived its parent"


# --------------------------------------------------------------------------- SIGINT / SIGTERM after the swap


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_signal_after_swap_names_the_generation(env2, kit_env, kit_index, sig):
    before = key(env2)
    # the upgrade waits 3 s right after the exchange, inside the deferred section, so the signal lands there
    proc = start(
        kit_env,
        "upgrade",
        "--env",
        env2,
        "--to",
        "2.18",
        "--offline",
        "--find-links",
        kit_index,
        "--yes",
        TFREBUILD_PAUSE="upgrade.swapped:3",
    )
    deadline = time.monotonic() + 120
    while key(env2) == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the upgrade ended before the swap was seen"
    os.killpg(proc.pid, sig)  # the whole group, as a Ctrl-C at the terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "nothing was changed" not in err and "Traceback" not in err, err
    assert "is now on generation 3" in err and "tfrebuild rollback" in err and "--to 2" in err, err
    state = toml(state_of(env2) / "store.toml")
    assert state["current"] == 3 and state["previous"] == 2
    assert not (state_of(env2) / "journal.json").exists()
    assert incomplete_generations(env2) == []  # the bookkeeping (profile included) was finished first
    assert_recovers(kit_env, env2)


@pytest.mark.slow
def test_signal_before_swap_says_nothing_changed(env2, kit_env, kit_index):
    before = key(env2)
    proc = start(kit_env, "upgrade", "--env", env2, "--to", "2.18", "--offline", "--find-links", kit_index, "--yes")
    staging = state_of(env2) / "staging"
    deadline = time.monotonic() + 60
    while not (staging.is_dir() and any(staging.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated: nothing was changed" in err, err
    assert key(env2) == before and toml(state_of(env2) / "store.toml")["current"] == 2
    assert_recovers(kit_env, env2)
