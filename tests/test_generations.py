"""End-to-end tests of the generation commands: ``rollback``, ``history``, ``diff``, ``gc``, ``status``.

Everything runs the real CLI in a subprocess (``python -m rebuild <cmd> --env V``) under
``kit_env`` (offline, the kit's fake wheels).  Managed environments start as a uv venv with
the classic TF 2.15 stack (generation 1); generation 2, 3, 4 hold TF 2.16.1, 2.18.0, 2.20.0.

* The module's shared env (read-only checks: layout, history, diff, status, refusals), the
  rollback walk-through, the pip-made env and every test of ``upgrade`` itself make them with
  ``tfrebuild upgrade --to 2.16 / 2.18`` (1-2 s each with the fake kit and the doctor pre-flight).
* Tests about rollback, gc, locks and damage, which need their own env, make them ~4x faster
  with the same store calls ``upgrade`` makes (see ``_fast_managed``).

Every test that changes an env makes its own.

Crash safety: every ``fault_point(...)`` in ``rebuild/`` (the process SIGKILLs itself
when ``$TFREBUILD_FAULT`` names it) is run, then the env path must hold one complete
generation and the next command must recover and leave the store consistent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Callable

import pytest
from tests.kit.cli import CliRun as Run, run_cli

from tests.kit import create_venv, run_python

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="generation store tests need Linux (renameat2, /proc, flock)"
)

ROOT = Path(__file__).resolve().parent.parent
CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]
#: ``--to`` of the upgrades that make generations 2, 3, 4.
TARGETS = ("2.16", "2.18", "2.20")
#: TensorFlow version of each generation of an env made with :data:`TARGETS`.
TF_OF = {1: "2.15.1", 2: "2.16.1", 3: "2.18.0", 4: "2.20.0"}
FAULT_ENV = "TFREBUILD_FAULT"
PY_VERSION = "{}.{}.{}".format(*sys.version_info[:3])

UPGRADE_FAULTS = [
    "upgrade.built",
    "upgrade.checked",
    "upgrade.journal-written",
    "upgrade.swapped",
    "upgrade.old-moved",
    "upgrade.recorded",
]
ROLLBACK_FAULTS = ["rollback.journal-written", "rollback.swapped", "rollback.old-moved", "rollback.recorded"]
GC_FAULTS = ["gc.journal-written", "gc.moved"]
ALL_FAULTS = UPGRADE_FAULTS + ROLLBACK_FAULTS + GC_FAULTS


# --------------------------------------------------------------------------- helpers


def ok(run: Run) -> Run:
    assert run.code == 0, str(run)
    assert "Traceback" not in run.err, str(run)
    return run


def user_error(run: Run, *needles: str) -> Run:
    """A clean failure: non-zero exit (not a signal), 'error:' and 'hint:' on stderr, no traceback."""
    assert run.code > 0, str(run)
    assert "Traceback" not in run.text, str(run)
    assert "error:" in run.err and "hint:" in run.err, str(run)
    for needle in needles:
        assert needle.lower() in run.err.lower(), f"{needle!r} not in stderr\n{run}"
    return run


def state_of(env: Path) -> Path:
    return env.parent / f".{env.name}.tfrebuild"


def gen_dir(env: Path, n: int) -> Path:
    return state_of(env) / "generations" / str(n)


def tf_at(env: Path, kit_env: dict[str, str]) -> str:
    """The TensorFlow version that imports with ``<env>/bin/python``."""
    proc = run_python(env, "import tensorflow as tf; print(tf.__version__)", env=kit_env)
    assert proc.returncode == 0, f"tensorflow does not import at {env}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


def tf_dist_version(tree: Path) -> str:
    """The tensorflow-cpu version installed in ``tree`` (from its dist-info; works for parked trees)."""
    found = sorted(tree.glob("lib/python3.*/site-packages/tensorflow_cpu-*.dist-info"))
    assert len(found) == 1, f"expected one tensorflow_cpu dist-info in {tree}, found {found}"
    return found[0].name[len("tensorflow_cpu-") : -len(".dist-info")]


def read_toml(path: Path) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def raw_size(tree: Path) -> int:
    """Allocated bytes of ``tree`` alone (like ``du``: each inode once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(tree, followlinks=False):
        for path in [top] + [os.path.join(top, n) for n in dirs + files]:
            st = os.lstat(path)
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512
    return total


def tree_key(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def leftovers(env: Path) -> list[str]:
    """Things a finished operation must not leave behind."""
    state = state_of(env)
    found = []
    if (state / "journal.json").exists():
        found.append("journal.json")
    for folder in ("staging", "trash"):
        if (state / folder).is_dir():
            found += [f"{folder}/{name}" for name in os.listdir(state / folder)]
    tmp = env.with_name(env.name + ".tfrebuild-swap-tmp")
    if os.path.lexists(tmp):
        found.append(str(tmp))
    return found


def history_rows(tfr, env: Path) -> dict[int, dict]:
    return {r["number"]: r for r in ok(tfr("history", "--env", env, "--json")).json()["rows"]}


def assert_consistent(tfr, env: Path, kit_env: dict[str, str]) -> dict:
    """The store agrees with the trees: the history's current generation imports at ``env``, every
    recorded tree is where the store says (same inode as its meta.toml) with the recorded TF, nothing
    is left to recover, no journal, staging, trash or swap leftovers (what ``status`` would list as
    interrupted / leftover).  Returns the history document."""
    doc = ok(tfr("history", "--env", env, "--json")).json()
    assert doc["recovered"] is None, f"history still had something to recover: {doc['recovered']}"
    rows = doc["rows"]
    current = [r for r in rows if r["current"]]
    assert len(current) == 1, rows
    cur = current[0]
    assert tf_at(env, kit_env) == cur["tensorflow"].split()[-1]
    assert leftovers(env) == []
    state = state_of(env)
    store = read_toml(state / "store.toml")
    assert store["current"] == cur["number"]
    previous = [r["number"] for r in rows if r["previous"]]
    assert previous == ([store["previous"]] if "previous" in store else [])
    for row in rows:
        n = row["number"]
        tree = env if row["current"] else gen_dir(env, n) / "env"
        assert row["present"], f"generation {n} has no tree: {rows}"
        assert tf_dist_version(tree) == row["tensorflow"].split()[-1], f"generation {n}"
        meta = read_toml(gen_dir(env, n) / "meta.toml")
        assert (int(meta["device"]), int(meta["inode"])) == tree_key(tree), f"generation {n}'s meta.toml"
    assert not (gen_dir(env, cur["number"]) / "env").exists(), "the current tree is parked as well"
    return doc


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def start_and_wait(argv: list, want: str, env: dict[str, str], timeout: float = 30) -> subprocess.Popen:
    """Start ``argv`` and wait until it prints a line containing ``want``."""
    proc = subprocess.Popen(
        [str(a) for a in argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    line = _read_line(proc, timeout)
    if want not in line:
        stop(proc)
        raise AssertionError(f"helper did not print {want!r} (got {line!r}); stderr:\n{proc.stderr.read()}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


HOLDER_COMMAND = "tfrebuild upgrade (test holder)"


def hold_lock(env: Path, kit_env: dict[str, str], *, building: bool = False) -> subprocess.Popen:
    """A helper process holding the store lock of ``env`` (kill it in a finally).

    With ``building``, it also journals an upgrade in progress with a staging folder, like an
    upgrade that is busy building."""
    journal = (
        (
            "op = 'upgrade-test-holder'; st = s.staging_dir(op); (st / 'env').mkdir(); "
            "s.begin({'op': 'upgrade', 'id': op, 'step': 'building', 'staging': str(st), "
            "'new': s.next_number()}); "
        )
        if building
        else ""
    )
    code = (
        "from rebuild.store.store import Store; from pathlib import Path; import time; "
        f"s = Store.open(Path({str(env)!r})); cm = s.lock({HOLDER_COMMAND!r}); cm.__enter__(); "
        f"{journal}print('locked', flush=True); time.sleep(60)"
    )
    return start_and_wait([sys.executable, "-c", code], "locked", kit_env)


def user_of(env: Path, kit_env: dict[str, str], *, open_file: bool) -> subprocess.Popen:
    """A process started from ``<env>/bin/python`` (optionally keeping a file of the env open)."""
    hold = f"f = open({str(env / 'pyvenv.cfg')!r}); " if open_file else ""
    code = f"import time; {hold}print('up', flush=True); time.sleep(60)"
    return start_and_wait([env / "bin" / "python", "-c", code], "up", kit_env)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tfr(kit_env: dict[str, str]) -> Callable[..., Run]:
    """``tfr("rollback", "--env", V, "--yes", fault=None)`` runs the CLI offline."""

    def _tfr(*args, fault: str | None = None, timeout: float = 180) -> Run:
        return run_cli(kit_env, *args, overrides={FAULT_ENV: fault}, cwd=ROOT, timeout=timeout)

    return _tfr


@pytest.fixture(scope="session")
def upgrade_cli(tfr, kit_index: Path) -> Callable[..., Run]:
    """``upgrade_cli(env, "2.18", *extra, fault=None)``: ``tfrebuild upgrade --offline --yes --json``."""

    def _upgrade(env: Path, to: str, *extra: str, fault: str | None = None) -> Run:
        return tfr(
            "upgrade",
            "--env",
            env,
            "--to",
            to,
            "--offline",
            "--find-links",
            kit_index,
            "--yes",
            "--json",
            *extra,
            fault=fault,
        )

    return _upgrade


def _managed(path: Path, generations: int, upgrade_cli, kit_index, kit_env, creator: str = "uv") -> Path:
    env = create_venv(path, CLASSIC, find_links=kit_index, creator=creator, env=dict(kit_env))
    for to in TARGETS[: generations - 1]:
        doc = ok(upgrade_cli(env, to)).json()
        assert doc["changed"] is True, doc
    return env


def _fast_managed(path: Path, generations: int, kit_index, kit_env) -> Path:
    """Like :func:`_managed`, ~4x faster: generation n > 1 is a uv venv with TF ``TF_OF[n]`` built in a
    staging folder and switched in with the same store calls ``upgrade`` makes (``Store.unmanaged(env).adopt``,
    ``switch_to``, a profile snapshot per generation), without planning, doctor and smoke checks."""
    from rebuild.env import snapshot
    from rebuild.store.journal import new_op_id
    from rebuild.store.records import Generation
    from rebuild.store.store import Store

    env = create_venv(path, CLASSIC, find_links=kit_index, env=dict(kit_env))
    if generations < 2:
        return env  # not managed yet, like _managed(path, 1)
    store = Store.unmanaged(env)
    store.adopt(
        Generation.new(
            1,
            command="adopted (the env as it was before tfrebuild)",
            tensorflow=f"tensorflow-cpu {TF_OF[1]}",
            python=PY_VERSION,
        )
    )

    def write_profile(n: int) -> None:
        snapshot.write(snapshot.take(env), store.generation_dir(n) / "profile.toml")

    write_profile(1)
    for n in range(2, generations + 1):
        with store.lock(f"tfrebuild upgrade --to {TARGETS[n - 2]} (made by the test)"):
            tree = store.staging_dir(new_op_id("upgrade")) / "env"
            create_venv(
                tree,
                [f"tensorflow-cpu=={TF_OF[n]}", "scipy==1.11.4", "pandas"],
                find_links=kit_index,
                env=dict(kit_env),
            )
            store.switch_to(
                tree,
                Generation.new(
                    n,
                    command=f"tfrebuild upgrade --to {TARGETS[n - 2]} (test)",
                    tensorflow=f"tensorflow-cpu {TF_OF[n]}",
                    python=PY_VERSION,
                ),
            )
        write_profile(n)
    return env


@pytest.fixture
def managed(tmp_path: Path, upgrade_cli, kit_index: Path, kit_env: dict[str, str]) -> Callable[..., Path]:
    """``managed(generations=3, name="tf", real=False)``: a fresh managed uv env of its own (generations
    1..n; 1 means not managed yet).  ``real=True`` makes generations 2.. with ``tfrebuild upgrade`` (the
    module's shared env and the upgrade tests do); otherwise :func:`_fast_managed`."""

    def _make(generations: int = 3, name: str = "tf", real: bool = False) -> Path:
        path = tmp_path / f"{name}-parent" / name
        if real:
            return _managed(path, generations, upgrade_cli, kit_index, kit_env)
        return _fast_managed(path, generations, kit_index, kit_env)

    return _make


@dataclasses.dataclass
class Shared:
    env: Path
    adopted_key: tuple[int, int]  # (device, inode) of the env's tree before the first upgrade


@pytest.fixture(scope="module")
def shared(tmp_path_factory, upgrade_cli, kit_index: Path, kit_env: dict[str, str]) -> Shared:
    """A managed env with generations 1 (2.15.1, adopted), 2 (2.16.1), 3 (2.18.0, current). Read-only!"""
    env = create_venv(tmp_path_factory.mktemp("gen-shared") / "tf", CLASSIC, find_links=kit_index, env=dict(kit_env))
    adopted = tree_key(env)
    for to in TARGETS[:2]:
        ok(upgrade_cli(env, to))
    return Shared(env, adopted)


@pytest.fixture(scope="module")
def unmanaged(tmp_path_factory, kit_index: Path, kit_env: dict[str, str]) -> Path:
    """A plain venv tfrebuild has never touched. Read-only!"""
    return create_venv(tmp_path_factory.mktemp("gen-plain") / "tf", CLASSIC, find_links=kit_index, env=dict(kit_env))


# --------------------------------------------------------------------------- 1. the store


@pytest.mark.slow
def test_store_layout_after_upgrades(shared: Shared, kit_env):
    env, state = shared.env, state_of(shared.env)
    store = read_toml(state / "store.toml")
    assert (store["current"], store["previous"]) == (3, 2)
    assert store["env"] == str(env)
    for n in (1, 2, 3):
        assert (gen_dir(env, n) / "meta.toml").is_file()
        assert (gen_dir(env, n) / "profile.toml").is_file()
    gen1 = read_toml(gen_dir(env, 1) / "meta.toml")
    assert "adopted" in gen1["command"]
    assert gen1["tensorflow"] == "tensorflow-cpu 2.15.1"
    assert gen1["python"] == PY_VERSION
    # Generation 1 *is* the env as it was: its tree was moved aside, not copied.
    assert (int(gen1["device"]), int(gen1["inode"])) == shared.adopted_key == tree_key(gen_dir(env, 1) / "env")
    assert not (gen_dir(env, 1) / "pylock.toml").exists()
    for n in (2, 3):
        lock = gen_dir(env, n) / "pylock.toml"
        assert lock.is_file() and "tensorflow-cpu" in lock.read_text()
        meta = read_toml(gen_dir(env, n) / "meta.toml")
        assert meta["tensorflow"] == f"tensorflow-cpu {TF_OF[n]}"
        assert "upgrade" in meta["command"] and TARGETS[n - 2] in meta["command"]
    assert read_toml(gen_dir(env, 1) / "profile.toml")["tensorflow"]["version"] == "2.15.1"
    assert read_toml(gen_dir(env, 3) / "profile.toml")["tensorflow"]["version"] == "2.18.0"
    # The current tree is at E; only the others are parked.
    assert (gen_dir(env, 2) / "env").is_dir() and not (gen_dir(env, 3) / "env").exists()
    meta3 = read_toml(gen_dir(env, 3) / "meta.toml")
    assert (int(meta3["device"]), int(meta3["inode"])) == tree_key(env)
    assert tf_at(env, kit_env) == "2.18.0"
    assert leftovers(env) == []


# --------------------------------------------------------------------------- 2. rollback


@pytest.mark.slow
def test_rollback_previous_twice_then_to_one(managed, tfr, venv_run, kit_env):
    env = managed(3, real=True)
    first = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()
    assert first["ok"] is True
    assert (first["from_generation"], first["to_generation"]) == (3, 2)
    assert first["tensorflow"] == "tensorflow-cpu 2.16.1"
    assert isinstance(first["swap_ms"], (int, float)) and 0 <= first["swap_ms"] < 10_000
    from rebuild.store import swap

    # the method that really ran: renameat2 wherever this kernel and filesystem exchange, else three renames
    assert first["swap_method"] == ("renameat2" if swap._load_renameat2() else "rename")
    assert first["recovered"] is None
    proc = venv_run(env, "import tensorflow as tf; print(tf.__version__)")
    assert proc.returncode == 0 and proc.stdout.strip() == "2.16.1", proc.stderr
    assert tf_dist_version(gen_dir(env, 3) / "env") == "2.18.0"  # the generation rolled away from is kept
    rows = history_rows(tfr, env)
    assert rows[2]["current"] and rows[3]["previous"]

    second = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()  # undoes the first, like `cd -`
    assert (second["from_generation"], second["to_generation"]) == (2, 3)
    assert venv_run(env, "import tensorflow as tf; print(tf.__version__)").stdout.strip() == "2.18.0"
    assert tf_dist_version(gen_dir(env, 2) / "env") == "2.16.1"

    third = ok(tfr("rollback", "--env", env, "--to", "1", "--yes", "--json")).json()
    assert (third["from_generation"], third["to_generation"]) == (3, 1)
    assert "swap_ms" in third
    assert venv_run(env, "import tensorflow as tf; print(tf.__version__)").stdout.strip() == "2.15.1"
    assert tf_dist_version(gen_dir(env, 3) / "env") == "2.18.0"
    rows = history_rows(tfr, env)
    assert rows[1]["current"] and rows[3]["previous"] and not rows[2]["current"] and not rows[2]["previous"]

    again = user_error(tfr("rollback", "--env", env, "--to", "1", "--yes"), "already current")
    assert again.code == 2
    human = ok(tfr("rollback", "--env", env, "--yes"))  # human output
    assert "from generation 1 to 3" in human.out and " ms" in human.out
    assert_consistent(tfr, env, kit_env)


@pytest.mark.slow
def test_rollback_pip_env_console_scripts(make_venv, upgrade_cli, tfr, kit_env):
    """A pip-made env (absolute shebangs): after upgrade + rollback its own console scripts run at E."""
    env = make_venv("pip-parent/tf", CLASSIC, creator="venv")
    assert str(env / "bin" / "python") in (env / "bin" / "saved_model_cli").read_text()[:300]  # absolute shebang
    ok(upgrade_cli(env, "2.16"))
    up = subprocess.run([env / "bin" / "saved_model_cli"], capture_output=True, text=True, env=kit_env, timeout=60)
    assert up.returncode == 0 and "2.16.1" in up.stdout, up.stderr

    # diff of a pip env: tensorflow-estimator (needed by TF 2.15 only, not requested) goes away.
    changes = {c["name"]: c for c in ok(tfr("diff", "1", "2", "--env", env, "--json")).json()["changes"]}
    assert (changes["tensorflow-cpu"]["old"], changes["tensorflow-cpu"]["new"]) == ("2.15.1", "2.16.1")
    assert changes["tensorflow-cpu"]["kind"] == "upgrade" and changes["tensorflow-cpu"]["requested"]
    assert changes["tensorflow-estimator"]["kind"] == "remove"
    assert (changes["tensorflow-estimator"]["old"], changes["tensorflow-estimator"]["new"]) == ("2.15.0", None)

    ok(tfr("rollback", "--env", env, "--yes"))
    for argv, expect in (
        ([env / "bin" / "saved_model_cli"], "fake tensorflow 2.15.1"),
        ([env / "bin" / "pip", "--version"], f"{env}/lib/python"),
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, env=kit_env, timeout=60)
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        assert expect in proc.stdout, proc.stdout
    assert assert_consistent(tfr, env, kit_env)["rows"][0]["current"]


# --------------------------------------------------------------------------- 3. history and diff


def test_history_json(shared: Shared, tfr):
    doc = ok(tfr("history", "--env", shared.env, "--json")).json()
    assert doc["ok"] is True and doc["env"] == str(shared.env) and doc["state_dir"] == str(state_of(shared.env))
    rows = doc["rows"]
    assert [r["number"] for r in rows] == [1, 2, 3]
    assert [r["number"] for r in rows if r["current"]] == [3]
    assert [r["number"] for r in rows if r["previous"]] == [2]
    for r in rows:
        assert r["tensorflow"] == f"tensorflow-cpu {TF_OF[r['number']]}"
        assert r["python"] == PY_VERSION
        assert r["present"] is True
        assert r["disk_alone"] > 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["created"])
    assert "adopted" in rows[0]["command"] and "--to 2.18" in rows[2]["command"]
    trees = [gen_dir(shared.env, 1) / "env", gen_dir(shared.env, 2) / "env", shared.env]
    raws = [raw_size(t) for t in trees]
    assert max(raws) <= doc["disk_total"] <= sum(raws)
    for r, raw in zip(rows, raws):
        assert r["disk_alone"] <= raw


def test_history_human(shared: Shared, tfr):
    run = ok(tfr("history", "--env", shared.env))
    lines = run.out.splitlines()
    current = [ln for ln in lines if re.match(r"^\W*\d+\*", ln)]
    previous = [ln for ln in lines if re.match(r"^\W*\d+<", ln)]
    assert len(current) == 1 and re.match(r"^\W*3\*", current[0]), run.out
    assert len(previous) == 1 and re.match(r"^\W*2<", previous[0]), run.out
    for header in ("TensorFlow", "Python", "disk alone"):
        assert header in run.out
    assert "2.15.1" in run.out and "2.16.1" in run.out and "2.18.0" in run.out and PY_VERSION in run.out
    assert "counted once" in run.out


def test_history_disk_counts_hard_links_once(managed, tfr):
    env = managed(2)
    parked = gen_dir(env, 1) / "env"
    big = parked / "big-shared.bin"
    big.write_bytes(os.urandom(1 << 20))
    os.link(big, env / "big-shared.bin")  # one file in both generations' trees
    big_size = os.lstat(big).st_blocks * 512
    raw1, raw2 = raw_size(parked), raw_size(env)
    doc = ok(tfr("history", "--env", env, "--json")).json()
    rows = {r["number"]: r for r in doc["rows"]}
    assert rows[1]["disk_alone"] > 0 and rows[2]["disk_alone"] > 0
    # Shared by both trees: in neither "alone" figure, once in the total.
    assert rows[1]["disk_alone"] <= raw1 - big_size
    assert rows[2]["disk_alone"] <= raw2 - big_size
    assert max(raw1, raw2) <= doc["disk_total"] <= raw1 + raw2 - big_size


@pytest.mark.slow
def test_diff_generations(shared: Shared, tfr):
    doc = ok(tfr("diff", "1", "2", "--env", shared.env, "--json")).json()
    assert (doc["a"], doc["b"]) == ("generation 1", "generation 2")
    changes = {c["name"]: c for c in doc["changes"]}
    tf = changes["tensorflow-cpu"]
    assert (tf["old"], tf["new"], tf["kind"]) == ("2.15.1", "2.16.1", "upgrade")
    assert changes["keras"]["kind"] == "upgrade" and changes["h5py"]["kind"] == "add"
    assert "numpy" not in changes  # unchanged from 2.15 to 2.16
    # The uv-made env records every package as REQUESTED (uv writes the marker for all), so
    # tensorflow-estimator stays; its removal is checked on a pip-made env (test_rollback_pip_env_...).
    back = ok(tfr("diff", "3", "1", "--env", shared.env, "--json")).json()
    assert {c["name"]: c["kind"] for c in back["changes"]}["tensorflow-cpu"] == "downgrade"
    human = ok(tfr("diff", "1", "2", "--env", shared.env))
    assert "tensorflow-cpu" in human.out and "2.15.1 → 2.16.1" in human.out
    same = ok(tfr("diff", "2", "2", "--env", shared.env, "--json")).json()
    assert same["changes"] == []


def test_diff_profile_files(shared: Shared, tfr, tmp_path):
    a, b = tmp_path / "old.toml", tmp_path / "new.toml"
    shutil.copy(gen_dir(shared.env, 1) / "profile.toml", a)
    shutil.copy(gen_dir(shared.env, 3) / "profile.toml", b)
    doc = ok(tfr("diff", a, b, "--json")).json()  # no --env needed for two files
    assert (doc["a"], doc["b"]) == (str(a), str(b))
    changes = {c["name"]: c for c in doc["changes"]}
    assert (changes["tensorflow-cpu"]["old"], changes["tensorflow-cpu"]["new"]) == ("2.15.1", "2.18.0")
    assert (changes["numpy"]["old"], changes["numpy"]["new"]) == ("1.24.3", "1.26.4")
    mixed = ok(tfr("diff", "1", b, "--env", shared.env, "--json")).json()  # a generation against a file
    assert mixed["changes"] == doc["changes"]
    user_error(tfr("diff", a, tmp_path / "missing.toml"), "does not exist")


# --------------------------------------------------------------------------- 4. gc


def test_gc_dry_run_deletes_nothing(shared: Shared, tfr):
    before = sorted(os.listdir(state_of(shared.env) / "generations"))
    doc = ok(tfr("gc", "--env", shared.env, "--keep", "1", "--dry-run", "--json")).json()
    assert doc["dry_run"] is True and doc["deleted"] == [1] and doc["kept"] == [2, 3]
    assert doc["freed"] > 0
    assert sorted(os.listdir(state_of(shared.env) / "generations")) == before
    assert (gen_dir(shared.env, 1) / "env").is_dir()
    human = ok(tfr("gc", "--env", shared.env, "--keep", "1", "--dry-run"))
    assert "Would delete generation(s) 1" in human.out
    nothing = ok(tfr("gc", "--env", shared.env, "--keep", "3", "--dry-run", "--json")).json()
    assert nothing["deleted"] == [] and nothing["kept"] == [1, 2, 3]


@pytest.mark.slow
def test_gc_keep_two_of_four_never_follows_symlinks(managed, tfr, tmp_path, kit_env):
    """4 generations, --keep 2: 1 and 2 go.  Links planted in the doomed trees point outside: the
    outside folder and files survive (links are removed, never followed)."""
    env = managed(4)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    (outside / "sub" / "deep.txt").write_text("me too")
    (gen_dir(env, 1) / "env" / "lib" / "link-to-outside").symlink_to(outside, target_is_directory=True)
    (gen_dir(env, 2) / "env" / "file-link").symlink_to(outside / "precious.txt")
    (gen_dir(env, 2) / "env" / "dangling-link").symlink_to(tmp_path / "does-not-exist")
    dry = ok(tfr("gc", "--env", env, "--keep", "2", "--dry-run", "--json")).json()
    assert (dry["deleted"], dry["kept"]) == ([1, 2], [3, 4]) and dry["freed"] > 0
    assert gen_dir(env, 1).is_dir() and gen_dir(env, 2).is_dir()
    doc = ok(tfr("gc", "--env", env, "--keep", "2", "--yes", "--json")).json()
    assert (doc["deleted"], doc["kept"], doc["dry_run"]) == ([1, 2], [3, 4], False)
    assert doc["freed"] > 0
    assert not gen_dir(env, 1).exists() and not gen_dir(env, 2).exists()
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (outside / "sub" / "deep.txt").read_text() == "me too"
    assert sorted(history_rows(tfr, env)) == [3, 4]
    assert tf_at(env, kit_env) == "2.20.0"
    assert_consistent(tfr, env, kit_env)
    human = ok(tfr("gc", "--env", env, "--keep", "2", "--yes"))
    assert "Nothing to delete" in human.out


@pytest.mark.slow
def test_gc_never_deletes_current_or_previous(managed, tfr, kit_env):
    env = managed(3)
    ok(tfr("rollback", "--env", env, "--to", "1", "--yes"))  # current 1, previous 3 (the newer one)
    doc = ok(tfr("gc", "--env", env, "--keep", "1", "--yes", "--json")).json()
    assert (doc["deleted"], doc["kept"]) == ([2], [1, 3])
    assert (gen_dir(env, 3) / "env").is_dir() and not gen_dir(env, 2).exists()
    assert tf_at(env, kit_env) == "2.15.1"
    assert_consistent(tfr, env, kit_env)
    back = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()
    assert back["to_generation"] == 3 and tf_at(env, kit_env) == "2.18.0"


@pytest.mark.slow
def test_gc_prunes_the_pyc_cache_entries_only_deleted_generations_used(tmp_path, kit_env, kit_index):
    """Generations built with the pyc cache hold their pycs as links to its entries: gc deleting generation 2
    (TF 2.16.1) leaves its TensorFlow pycs with the cache's link only, and gc removes them; the entries the kept
    generations link to stay, and the env still imports."""
    cache = tmp_path / "pyc-cache"
    mine = {"TFREBUILD_PYC_CACHE": str(cache)}

    def cli(*args) -> Run:
        return run_cli(kit_env, *args, overrides=mine, cwd=ROOT, timeout=300)

    env = create_venv(tmp_path / "p" / "tf", CLASSIC, find_links=kit_index, env=dict(kit_env))
    for to in TARGETS:
        ok(cli("upgrade", "--env", env, "--to", to, "--offline", "--find-links", kit_index, "--yes", "--json"))

    def tf_pyc(tree: Path) -> Path:
        (init,) = tree.glob("lib/python*/site-packages/tensorflow/__init__.py")
        return Path(importlib.util.cache_from_source(str(init)))

    def entry_of(pyc: Path) -> Path:
        (entry,) = [e for e in cache.rglob("*.pyc") if os.path.samefile(e, pyc)]
        return entry

    doomed, current = entry_of(tf_pyc(gen_dir(env, 2) / "env")), entry_of(tf_pyc(env))
    assert doomed != current and os.stat(doomed).st_nlink == 2  # the cache's link and generation 2's
    dry = ok(cli("gc", "--env", env, "--keep", "1", "--dry-run", "--json")).json()
    assert dry["deleted"] == [1, 2] and doomed.exists() and dry["pyc_cache"]["files"] >= 1
    doc = ok(cli("gc", "--env", env, "--keep", "1", "--yes", "--json")).json()
    assert doc["deleted"] == [1, 2] and doc["pyc_cache"]["cache"] == str(cache)
    assert doc["pyc_cache"] == dry["pyc_cache"] and doc["pyc_cache"]["bytes"] > 0  # as the dry run said
    assert not doomed.exists() and current.exists() and os.path.samefile(current, tf_pyc(env))
    assert all(e.stat().st_nlink > 1 for e in cache.rglob("*.pyc"))  # what is left, an env uses
    assert tf_at(env, kit_env) == "2.20.0"
    again = ok(cli("gc", "--env", env, "--keep", "1", "--yes"))
    assert "Nothing to delete" in again.out and "pyc cache" not in again.out
    back = ok(cli("rollback", "--env", env, "--yes", "--json", "--check", "import")).json()
    assert back["to_generation"] == 3 and tf_at(env, kit_env) == "2.18.0"


# --------------------------------------------------------------------------- 5. status


def test_status_managed_and_unmanaged(shared: Shared, unmanaged: Path, tfr):
    doc = ok(tfr("status", "--env", shared.env, "--json")).json()
    assert doc["managed"] is True
    assert (doc["current"], doc["previous"]) == (3, 2)
    assert doc["tensorflow"] == "tensorflow-cpu 2.18.0"
    assert doc["interrupted"] is None and doc["leftover_staging"] == [] and doc["lock_holder"] is None
    assert doc["recovered"] is None and doc["state_dir"] == str(state_of(shared.env))
    human = ok(tfr("status", "--env", shared.env))
    assert "generation 3 (tensorflow-cpu 2.18.0)" in human.out and "lock: free" in human.out
    plain = ok(tfr("status", "--env", unmanaged, "--json")).json()
    assert plain["managed"] is False and plain["current"] is None
    assert "not managed" in ok(tfr("status", "--env", unmanaged)).out
    assert not state_of(unmanaged).exists()


# --------------------------------------------------------------------------- 6. crash safety


def test_every_fault_point_is_tested():
    found: set[str] = set()
    for source in (ROOT / "rebuild").rglob("*.py"):
        found |= set(re.findall(r"""fault_point\(\s*["']([^"']+)["']""", source.read_text(encoding="utf-8")))
    apply_points = {f for f in found if f.startswith("apply.")}
    assert found - apply_points == set(ALL_FAULTS)
    # apply's own points are exercised by tests/test_apply.py (crash of an apply into a new path).
    apply_tests = (ROOT / "tests" / "test_apply.py").read_text(encoding="utf-8")
    assert apply_points and all(f'"{f}"' in apply_tests for f in apply_points)


def _crash(fault: str, managed, upgrade_cli, tfr, kit_env, *, prior_upgrades: int = 0) -> tuple[Path, str, int]:
    """Make an env, run the command with ``fault``; check the SIGKILL and the tree left at E.

    Upgrade faults: the env has ``1 + prior_upgrades`` generations and the killed upgrade would make
    the next one.  Rollback faults: generations 1, 2 (current), killed ``rollback`` to 1.  gc faults:
    generations 1..3 (current 3), killed ``gc --keep 1`` (deletes 1).
    Returns the env, the TF version now at E and the generation number the killed upgrade was making."""
    op = fault.split(".")[0]
    env = managed({"upgrade": 1 + prior_upgrades, "rollback": 2, "gc": 3}[op])
    new = 2 + prior_upgrades
    if op == "upgrade":
        run = upgrade_cli(env, TARGETS[new - 2], fault=fault)
        swapped = fault in ("upgrade.swapped", "upgrade.old-moved", "upgrade.recorded")
        expect = TF_OF[new] if swapped else TF_OF[new - 1]
    elif op == "rollback":
        run = tfr("rollback", "--env", env, "--yes", fault=fault)
        expect = "2.16.1" if fault == "rollback.journal-written" else "2.15.1"
    else:
        run = tfr("gc", "--env", env, "--keep", "1", "--yes", fault=fault)
        expect = "2.18.0"
    assert run.code == -signal.SIGKILL, str(run)
    assert (state_of(env) / "journal.json").exists(), "the killed operation left no journal"
    # One complete generation at E, never a mix and never nothing.
    version = tf_at(env, kit_env)
    assert version in TF_OF.values()
    assert version == expect
    assert tf_dist_version(env) == version
    return env, version, new


@pytest.mark.parametrize("fault", ALL_FAULTS)
@pytest.mark.slow
def test_crash_then_readonly_command_recovers(fault, managed, upgrade_cli, tfr, kit_env):
    """After the kill, ``status`` (``history`` for gc) finds the journal, recovers, and says so.

    The killed upgrade is the env's first one (it adopts generation 1 and makes generation 2)."""
    env, version, new = _crash(fault, managed, upgrade_cli, tfr, kit_env)
    op = fault.split(".")[0]
    if op == "gc":
        run = ok(tfr("history", "--env", env))
        assert "Recovered an interrupted operation" in run.err and "deletion of generation 1" in run.err
    else:
        doc = ok(tfr("status", "--env", env, "--json")).json()
        assert doc["recovered"] and op in doc["recovered"], doc
        assert doc["interrupted"] is None and doc["leftover_staging"] == []
        assert doc["tensorflow"].split()[-1] == version
    doc = assert_consistent(tfr, env, kit_env)  # also: nothing left to recover the second time
    numbers = [r["number"] for r in doc["rows"]]
    if op == "upgrade":
        finished = version == TF_OF[new]
        assert numbers == (list(range(1, new + 1)) if finished else list(range(1, new)))
        if not finished:
            assert not gen_dir(env, new).exists()
    elif op == "rollback":
        assert numbers == [1, 2]
    else:
        assert numbers == [2, 3]  # the interrupted deletion is finished, not undone
        assert not gen_dir(env, 1).exists()


@pytest.mark.parametrize("fault", ALL_FAULTS)
@pytest.mark.slow
def test_crash_then_same_command_recovers_and_works(fault, managed, upgrade_cli, tfr, kit_env):
    """After the kill, the next upgrade / rollback / gc recovers first (JSON ``recovered``), then works.

    Here the killed upgrade is the env's second one (generations 1, 2 exist; it makes generation 3)."""
    env, version, new = _crash(fault, managed, upgrade_cli, tfr, kit_env, prior_upgrades=1)
    op = fault.split(".")[0]
    if op == "upgrade":
        doc = ok(upgrade_cli(env, TARGETS[new - 2])).json()
        assert doc["recovered"], doc
        finished = version == TF_OF[new]
        assert doc["changed"] is (not finished)  # finished before: nothing to do; undone: upgrades now
        final = TF_OF[new]
        for n in range(1, new + 1):
            assert (gen_dir(env, n) / "profile.toml").is_file(), f"generation {n} has no profile.toml"
        ok(tfr("diff", str(new - 1), str(new), "--env", env))
    elif op == "rollback":
        doc = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()
        assert doc["recovered"], doc
        final = "2.15.1" if version == "2.16.1" else "2.16.1"  # the recovered state's previous generation
        assert doc["tensorflow"].split()[-1] == final
    else:
        doc = ok(tfr("gc", "--env", env, "--keep", "1", "--yes", "--json")).json()
        assert doc["recovered"], doc
        assert doc["deleted"] == [] and doc["kept"] == [2, 3]
        final = "2.18.0"
    assert tf_at(env, kit_env) == final
    assert_consistent(tfr, env, kit_env)


@pytest.mark.slow
def test_crash_after_swap_recovered_generation_has_profile(managed, upgrade_cli, tfr, kit_env):
    """Recovered by ``status`` (or history/rollback/gc): the finished generation must be complete too."""
    env, version, new = _crash("upgrade.recorded", managed, upgrade_cli, tfr, kit_env)
    assert "finished" in ok(tfr("status", "--env", env, "--json")).json()["recovered"]
    assert (gen_dir(env, new) / "profile.toml").is_file()
    ok(tfr("diff", "1", str(new), "--env", env))


# --------------------------------------------------------------------------- 7. concurrency


@pytest.mark.slow
def test_lock_held_refuses_changes_but_not_reads(shared: Shared, tfr, kit_env):
    env = shared.env
    before = tree_key(env)
    holder = hold_lock(env, kit_env)
    try:
        for args in (("rollback", "--yes"), ("gc", "--keep", "1", "--yes"), ("rollback", "--to", "1", "--yes")):
            run = tfr(args[0], "--env", env, *args[1:])
            user_error(run, f"pid {holder.pid}", HOLDER_COMMAND)
            assert run.seconds < 3, f"waited for the lock: {run}"
        for cmd in ("history", "status"):
            run = ok(tfr(cmd, "--env", env, "--json"))
            assert run.seconds < 3, str(run)
        status = ok(tfr("status", "--env", env, "--json")).json()
        assert status["lock_holder"]["pid"] == holder.pid
        assert status["lock_holder"]["command"] == HOLDER_COMMAND
        assert status["recovered"] is None
        human = ok(tfr("status", "--env", env))
        assert f"held by pid {holder.pid}" in human.out and human.seconds < 3
        assert holder.poll() is None
    finally:
        stop(holder)
    assert tree_key(env) == before and tf_at(env, kit_env) == "2.18.0"
    assert read_toml(state_of(env) / "store.toml")["current"] == 3


@pytest.mark.slow
def test_stale_lock_is_taken_over(managed, tfr, kit_env):
    """A holder busy "building" an upgrade: status shows its journal without touching it; once the holder
    is SIGKILLed the lock is stale, and rollback takes it over, undoes the dead upgrade and rolls back."""
    env = managed(2)
    holder = hold_lock(env, kit_env, building=True)
    try:
        status = ok(tfr("status", "--env", env, "--json")).json()
        assert status["lock_holder"]["pid"] == holder.pid
        assert status["interrupted"]["op"] == "upgrade" and status["interrupted"]["step"] == "building"
        assert status["recovered"] is None and status["leftover_staging"] == []  # its staging is live
        assert f"running operation: upgrade (building), pid {holder.pid}" in ok(tfr("status", "--env", env)).out
        user_error(tfr("rollback", "--env", env, "--yes"), f"pid {holder.pid}")
        assert (state_of(env) / "staging" / "upgrade-test-holder").is_dir()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert str(holder.pid) in (state_of(env) / "lock").read_text()  # the dead holder's record stays
        doc = ok(tfr("rollback", "--env", env, "--yes", "--json")).json()
        assert doc["to_generation"] == 1
        assert doc["recovered"] and "upgrade" in doc["recovered"]
    finally:
        stop(holder)
    assert tf_at(env, kit_env) == "2.15.1"
    assert_consistent(tfr, env, kit_env)
    assert ok(tfr("status", "--env", env, "--json")).json()["lock_holder"] is None


# --------------------------------------------------------------------------- 8. env in use


@pytest.mark.slow
def test_rollback_and_upgrade_refused_while_env_in_use(managed, tfr, upgrade_cli, kit_env):
    """A process from the env that keeps one of its files open (as a kernel keeps its libraries mapped)."""
    env = managed(2)
    before = tree_key(env)
    user = user_of(env, kit_env, open_file=True)
    try:
        run = user_error(tfr("rollback", "--env", env, "--yes"), f"pid {user.pid}", "--force")
        assert run.code == 1
        assert tree_key(env) == before and tf_at(env, kit_env) == "2.16.1"

        refused = upgrade_cli(env, "2.18")
        assert refused.code == 1, str(refused)
        assert "Traceback" not in refused.text and f"pid {user.pid}" in refused.json()["error"]
        assert tree_key(env) == before and tf_at(env, kit_env) == "2.16.1"  # refused before the swap
        assert not gen_dir(env, 3).exists() and leftovers(env) == []
        assert sorted(history_rows(tfr, env)) == [1, 2]

        forced = ok(tfr("rollback", "--env", env, "--yes", "--force", "--json")).json()
        assert forced["to_generation"] == 1
        assert user.pid in [u["pid"] for u in forced["forced_users"]]
        assert tf_at(env, kit_env) == "2.15.1"

        up = ok(upgrade_cli(env, "2.18", "--force")).json()
        assert up["changed"] is True and up["generation"] == 3
        assert tf_at(env, kit_env) == "2.18.0"
        assert user.poll() is None
    finally:
        stop(user)
    assert_consistent(tfr, env, kit_env)


def test_rollback_refused_while_plain_python_runs_from_env(managed, tfr, kit_env):
    env = managed(2)
    before = tree_key(env)
    user = user_of(env, kit_env, open_file=False)
    try:
        run = tfr("rollback", "--env", env, "--yes")
        assert tree_key(env) == before, "the env was swapped under a running interpreter"
        user_error(run, f"pid {user.pid}")
    finally:
        stop(user)


# --------------------------------------------------------------------------- 10. bad input


@pytest.mark.slow
def test_rollback_to_unknown_generation(shared: Shared, tfr, kit_env):
    run = user_error(tfr("rollback", "--env", shared.env, "--to", "99", "--yes"), "99", "1, 2, 3")
    assert run.code == 2
    doc = tfr("rollback", "--env", shared.env, "--to", "99", "--yes", "--json")
    assert doc.code == 2 and doc.json()["ok"] is False and "99" in doc.json()["error"] and doc.json()["hint"]
    user_error(tfr("diff", "1", "99", "--env", shared.env), "no generation 99")
    assert tf_at(shared.env, kit_env) == "2.18.0"
    assert read_toml(state_of(shared.env) / "store.toml")["current"] == 3


def test_rollback_without_confirmation_is_refused(shared: Shared, tfr):
    user_error(tfr("rollback", "--env", shared.env), "confirmation")
    user_error(tfr("gc", "--env", shared.env, "--keep", "1"), "confirmation")
    assert gen_dir(shared.env, 1).is_dir()


def test_gc_keep_zero(shared: Shared, tfr):
    user_error(tfr("gc", "--env", shared.env, "--keep", "0", "--yes"), "--keep 0")
    user_error(tfr("gc", "--env", shared.env, "--keep", "0", "--dry-run"), "--keep 0")
    assert sorted(os.listdir(state_of(shared.env) / "generations")) == ["1", "2", "3"]


@pytest.mark.slow
def test_only_generation_one(make_venv, tfr, kit_env):
    from rebuild.store.records import Generation
    from rebuild.store.store import Store

    env = make_venv("one-parent/tf", CLASSIC)
    Store.unmanaged(env).adopt(
        Generation.new(1, command="adopted (test)", tensorflow="tensorflow-cpu 2.15.1", python=PY_VERSION)
    )
    user_error(tfr("rollback", "--env", env, "--yes"), "no earlier generation")
    user_error(tfr("rollback", "--env", env, "--to", "1", "--yes"), "already current")
    rows = history_rows(tfr, env)
    assert list(rows) == [1] and rows[1]["current"] and not rows[1]["previous"]
    assert ok(tfr("gc", "--env", env, "--keep", "1", "--yes", "--json")).json()["deleted"] == []
    assert tf_at(env, kit_env) == "2.15.1"


@pytest.mark.parametrize(
    "cmd", [["rollback", "--yes"], ["history"], ["gc", "--keep", "1", "--yes"], ["gc", "--dry-run"], ["diff", "1", "2"]]
)
def test_unmanaged_env(unmanaged: Path, tfr, cmd):
    user_error(tfr(cmd[0], "--env", unmanaged, *cmd[1:]), "not managed")
    assert not state_of(unmanaged).exists()


@pytest.mark.slow
def test_missing_generation_tree(managed, tfr, kit_env):
    env = managed(2)
    before = tree_key(env)
    shutil.rmtree(gen_dir(env, 1) / "env")
    user_error(tfr("rollback", "--env", env, "--to", "1", "--yes"), "generation 1")
    user_error(tfr("rollback", "--env", env, "--yes"), "generation 1")
    assert tree_key(env) == before and tf_at(env, kit_env) == "2.16.1"
    assert read_toml(state_of(env) / "store.toml")["current"] == 2
    rows = history_rows(tfr, env)
    assert rows[1]["present"] is False and rows[2]["present"] is True
    assert "(missing)" in ok(tfr("history", "--env", env)).out
    assert leftovers(env) == []


@pytest.mark.slow
def test_corrupt_meta_toml(managed, tfr, kit_env):
    env = managed(2)
    before = tree_key(env)
    meta = gen_dir(env, 1) / "meta.toml"
    meta.write_text("number = 1\n[[[ this is not toml\n")
    run = ok(tfr("history", "--env", env))  # issue 23: the others are listed, this one named as unreadable
    assert "Generation 1 cannot be read" in run.out and "meta.toml" in run.out and "damaged" in run.out, str(run)
    user_error(tfr("rollback", "--env", env, "--yes"), "meta.toml", "damaged")
    user_error(tfr("rollback", "--env", env, "--to", "1", "--yes"), "meta.toml")
    status = tfr("status", "--env", env)
    assert "Traceback" not in status.text
    assert tree_key(env) == before and tf_at(env, kit_env) == "2.16.1"
    assert read_toml(state_of(env) / "store.toml")["current"] == 2
    assert not (state_of(env) / "journal.json").exists()


@pytest.mark.parametrize(
    "content",
    ['number = 1\ninode = "garbage"\n', "number = 1\ntensorflow = 5\n"],
    ids=["inode-string", "tensorflow-int"],
)
def test_meta_toml_with_wrong_types(managed, tfr, kit_env, content):
    env = managed(2)
    before = tree_key(env)
    (gen_dir(env, 1) / "meta.toml").write_text(content)
    for args in (("history",), ("rollback", "--to", "1", "--yes")):
        run = tfr(args[0], "--env", env, *args[1:])
        assert "Traceback" not in run.text, str(run)
        if run.code != 0:
            user_error(run)
            assert tree_key(env) == before, "failed, but after swapping the env"
