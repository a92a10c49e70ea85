"""Issue 23, point 7: damaged input never crashes.

A seeded, time-bounded fuzz over every file tfrebuild reads (``store.toml``, ``meta.toml``, the journal, the lock
file, a generation's profile, a ``--profile`` and the lock it names) and over the options: random bytes,
non-UTF-8, deep nesting (arrays, inline tables, JSON), long dotted keys, huge values, truncations, byte flips and
wrong types. Every outcome must be a result or one clean error (:class:`UserError` in process; no traceback and
a non-zero exit from the CLI), and the env's tree never changes.

The seed is printed on failure; ``TFREBUILD_FUZZ_SEED`` replays one, ``TFREBUILD_FUZZ_SECONDS`` lengthens a run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.test_shared_machine import managed, snapshot

from rebuild.core import lockfile
from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.store.store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the store needs Linux")

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("TFREBUILD_FUZZ_SEED", "20231"))
SECONDS = float(os.environ.get("TFREBUILD_FUZZ_SECONDS", "4"))

LOCK = """lock-version = "1.0"
created-by = "test"
requires-python = ">=3.11"

[[packages]]
name = "tensorflow-cpu"
version = "2.15.1"

[[packages.wheels]]
name = "tensorflow_cpu-2.15.1-cp311-cp311-manylinux_2_17_x86_64.whl"
url = "https://example.invalid/tensorflow_cpu-2.15.1-cp311-cp311-manylinux_2_17_x86_64.whl"
hashes = { sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
"""


def mutations(rng: random.Random, valid: bytes) -> bytes:
    """One damaged version of ``valid``."""
    n = rng.choice([70, 500, 5000, 100_000])
    pick = rng.randrange(12)
    if pick == 0:
        return rng.randbytes(rng.randrange(0, 4096))
    if pick == 1:
        at = rng.randrange(len(valid) + 1)
        return valid[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + valid[at:]
    if pick == 2:
        return b"a = " + b"[" * n + b"]" * n + b"\n"
    if pick == 3:
        return b"a = " + b"{b = " * n + b"1" + b"}" * n + b"\n"
    if pick == 4:
        return b"a" + b".a" * n + b" = 1\n"
    if pick == 5:
        return b"[" + b"t." * n + b"u]\nx = 1\n"
    if pick == 6:
        return b"[" * n + b"]" * n  # JSON nesting
    if pick == 7:
        size = rng.choice([1 << 20, 9 << 20])
        return b'a = "' + b"x" * size + b'"\n'
    if pick == 8:
        return valid[: rng.randrange(len(valid) + 1)]
    if pick == 9:
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if pick == 10:
        text = valid.decode("utf-8", "replace")
        for key in ("current", "previous", "inode", "device", "number", "schema", "pid", "lock-version", "env"):
            wrong = rng.choice(['"x"', "1.5", "[1]", "{a=1}", "-3", "99999999999999999999"])
            text = text.replace(f"{key} = ", f"{key} = {wrong} #", 1)
        return text.encode()
    return b'{"op": "upgrade", "step": ' + rng.choice([b"[1]", b"null", b'"swapped"']) + b', "pid": "x"}'


def targets(store: Store) -> list[Path]:
    return [
        store.store_file,
        store.generation_dir(1) / "meta.toml",
        store.generation_dir(2) / "meta.toml",
        store.journal_path,
        store.lock_path,
        store.generation_dir(2) / "profile.toml",
        store.generation_dir(1) / "profile.toml",
    ]


def in_process(store: Store) -> None:
    """What the commands read, called directly: a result or a UserError, nothing else."""
    opened = Store.open(store.env)
    if opened is None:
        return
    opened.generations()
    opened.journal()
    opened.lock_holder()
    assert opened.current is not None
    for n in (1, 2):
        prof.load(opened.generation_dir(n) / "profile.toml")


def test_fuzz_state_files_in_process(tmp_path):
    rng = random.Random(SEED)
    store = managed(tmp_path / "tf", 2)
    originals = {p: p.read_bytes() if p.exists() else b"" for p in targets(store)}
    originals[store.journal_path] = b'{"op": "upgrade", "id": "upgrade-x", "step": "building", "pid": 1}'
    env_before = snapshot(store.env)
    deadline, cases = time.monotonic() + SECONDS, 0
    while time.monotonic() < deadline or cases < 40:
        path = rng.choice(list(originals))
        for p, body in originals.items():  # one damaged file at a time, the others whole
            if p != store.journal_path:
                p.write_bytes(body)
        if store.journal_path.exists():
            store.journal_path.unlink()
        path.write_bytes(mutations(rng, originals[path]))
        try:
            in_process(store)
        except UserError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"seed {SEED}, case {cases}, {path.name}: {type(exc).__name__}: {str(exc)[:300]}")
        cases += 1
    assert snapshot(store.env) == env_before


def test_fuzz_profile_and_lock_documents(tmp_path):
    rng = random.Random(SEED + 1)
    profile_file, lock_file = tmp_path / "p.toml", tmp_path / "pylock.toml"
    valid_profile = prof.dumps(prof.Profile()).encode()
    deadline, cases = time.monotonic() + SECONDS, 0
    while time.monotonic() < deadline or cases < 40:
        profile_file.write_bytes(mutations(rng, valid_profile))
        lock_file.write_bytes(mutations(rng, LOCK.encode()))
        for call in (lambda: prof.load(profile_file), lambda: lockfile.read_lock(lock_file)):
            try:
                call()
            except UserError:
                pass
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"seed {SEED + 1}, case {cases}: {type(exc).__name__}: {str(exc)[:300]}")
        cases += 1


COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["history"],
    ["gc", "--dry-run"],
    ["gc", "--keep", "1", "--yes"],
    ["rollback", "--yes"],
    ["diff", "1", "2"],
]
OPTION_VALUES = [
    "",
    "-1",
    "0",
    "99999999999999999999",
    "x" * 5000,
    "/" + "a" * 5000,
    "\u00e9\u2603",
    "../../..",
    "--yes",
    "1.5",
    "/dev/zero",
    "http://u:p@[::1",
    "file:///nonexistent",
]


@pytest.mark.slow
def test_fuzz_the_cli(tmp_path, kit_env):
    """The real CLI on damaged state files and random option values: no traceback, the env unchanged."""
    rng = random.Random(SEED + 2)
    store = managed(tmp_path / "tf", 3)
    pristine = tmp_path / "pristine"
    shutil.copytree(store.state, pristine, symlinks=True)
    env_before = snapshot(store.env)
    deadline, cases = time.monotonic() + 6 * SECONDS, 0
    while time.monotonic() < deadline or cases < 12:
        shutil.rmtree(store.state)
        shutil.copytree(pristine, store.state, symlinks=True)
        if rng.random() < 0.7:
            path = rng.choice(targets(store))
            valid = path.read_bytes() if path.exists() else b"{}"
            path.write_bytes(mutations(rng, valid)[: 9 << 20])
            args = rng.choice(COMMANDS) + ["--env", str(store.env)]
        else:
            value = rng.choice(OPTION_VALUES)
            args = rng.choice(
                [
                    ["status", "--env", value],
                    ["gc", "--keep", value, "--dry-run", "--env", str(store.env)],
                    ["rollback", "--to", value, "--yes", "--env", str(store.env)],
                    ["plan", "--env", str(store.env), "--to", value],
                    ["plan", "--env", str(store.env), "--python", value],
                    ["export", "--profile", value],
                    ["snapshot", "--env", str(store.env), "-o", value],
                    ["plan", "--env", str(store.env), "--index-url", value, "--offline"],
                    ["plan", "--env", str(store.env), "--constraint", value, "--offline"],
                    ["upgrade", "--env", str(store.env), "--to", value, "--offline", "--yes"],
                    ["upgrade", "--env", str(store.env), "--strategy", value, "--yes"],
                    ["upgrade", "--env", str(store.env), "--keras", value, "--yes"],
                    ["apply", value, "--env", str(store.env), "--yes", "--offline"],
                    ["export", "--env", str(store.env), "--format", value],
                    ["diff", value, "1", "--env", str(store.env)],
                    ["bundle", value, "-o", str(tmp_path / "bundle")],
                    ["doctor", "--env", str(store.env), "--to", value],
                    ["history", "--env", str(store.env), "--find-links", value],
                ]
            )
        run = run_cli(kit_env, *args, cwd=tmp_path, timeout=120)
        assert "Traceback" not in run.text, f"seed {SEED + 2}, case {cases}\n{run}"
        assert run.code in (0, 1, 2), f"seed {SEED + 2}, case {cases}\n{run}"
        assert snapshot(store.env) == env_before, f"seed {SEED + 2}, case {cases}\n{run}"
        cases += 1


@pytest.mark.slow
def test_fuzz_every_option_of_every_command(tmp_path, make_venv, kit_env):
    """Each param of each command of the click tree (tests/kit/optfuzz.py), fed random bytes, 5,000 characters, huge
    and negative numbers, a FIFO and a device node: never a traceback, never a change to the env's tree."""
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    store = Store.unmanaged(env)  # managed: rollback, gc, history, diff and status read a real store
    store.adopt({"command": "adopted", "tensorflow": "tensorflow-cpu 2.15.1", "python": "3.11.7"})
    (store.generation_dir(1) / "profile.toml").write_text(prof.dumps(prof.Profile()))
    work = tmp_path / "work"
    work.mkdir()
    (work / "empty.toml").write_text(prof.dumps(prof.Profile()))
    os.mkfifo(work / "fifo")
    if os.geteuid() == 0:  # a device node in a temporary folder (never /dev): reading it never ends
        os.mknod(work / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    import subprocess

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.kit.optfuzz", str(SEED + 3), str(env), str(work), str(10 * SECONDS)],
        cwd=ROOT,
        env={**kit_env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    crashed = [r for r in rows if r["traceback"] or r["code"] not in (0, 1, 2)]
    changed = [r for r in rows if r["changed"]]
    assert not crashed, f"seed {SEED + 3}: {len(crashed)} crash(es):\n" + "\n\n".join(
        f"{r['case']} {r['argv']} -> {r['code']}\n{r['output']}" for r in crashed[:8]
    )
    assert not changed, f"seed {SEED + 3}: the env changed:\n" + "\n".join(f"{r['case']} {r['argv']}" for r in changed)
    # two wrong paragraphs it found: a profile without Python ("made with Python , and no Python  was found"), and a
    # new env's too-long name read as an untrusted state folder
    worded = [r for r in rows if "Python  " in r["output"] or ".untrusted" in r["output"]]
    assert not worded, "\n\n".join(f"{r['case']}\n{r['output']}" for r in worded[:3])
    import typer

    from rebuild.cli.app import app

    root = typer.main.get_command(app)
    every = {(name, p.opts[0]) for name, c in root.commands.items() for p in c.params}
    assert {tuple(r["case"].split(" <")[0].split(" ", 1)) for r in rows} == every  # none left out
    assert time.monotonic() - started < 200, f"{len(rows)} cases took {time.monotonic() - started:.0f}s"
