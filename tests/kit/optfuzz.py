"""Every option of every command, fed hostile values, in one process (issue 23, point 7).

``python -m tests.kit.optfuzz SEED ENV WORK [SECONDS]`` walks the click command tree of :data:`rebuild.cli.app.app`
(each command's params, options and arguments alike) and runs the CLI's own ``main()`` once per (param, value), the
other params benign (see :func:`benign`; a valid empty profile ``WORK/empty.toml`` for a required profile argument).
Values: random bytes that are valid argv, a FIFO and a character device made with mknod under ``WORK`` (root only), a
5,000-character string, a huge number, negative numbers; a flag gets the first two as ``--flag=VALUE``. The cases run
round by round (every param's first value, then every param's second ...); after ``SECONDS`` only the first round is
sure to have run. Each case has stdin at EOF, a 10 s alarm, and the env's tree hashed after it. One JSON line per
case on stdout: argv, exit code, whether a traceback (or an exception other than ``SystemExit``) came out, whether
the tree changed, the output's end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import stat
import sys
import time
import traceback
from pathlib import Path


class Hung(BaseException):
    """A case ran past its alarm."""


def tree_hash(root: Path) -> str:
    """Every entry under ``root`` (never followed): path, kind, mode, owner, size, and a regular file's bytes."""
    digest = hashlib.sha256()
    for top, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            digest.update(
                f"{os.path.relpath(path, root)}\0{st.st_mode}\0{st.st_uid}\0{st.st_size}\0".encode(
                    "utf-8", "surrogateescape"
                )
            )
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    digest.update(fh.read())
    st = os.lstat(root)
    digest.update(f"{st.st_ino}{st.st_mode}{st.st_uid}".encode())
    return digest.hexdigest()


def hostile(rng: random.Random, work: Path) -> list[tuple[str, str]]:
    """(label, value) pairs; the random bytes are new for each param."""
    raw = bytes(b for b in rng.randbytes(rng.randrange(1, 200)) if b)  # argv: anything but NUL
    values = [("random bytes", os.fsdecode(raw or b"\xff")), ("fifo", str(work / "fifo"))]
    if (work / "device").exists():
        values.append(("device", str(work / "device")))
    return values + [
        ("5000 chars", "x" * 5000),
        ("huge number", "9" * 40),
        ("negative", "-1"),
        ("huge negative", "-" + "9" * 40),
    ]


def benign(name: str, command, param, env: str, work: Path, n: int) -> list[str]:
    """The other params of ``command`` at values that reach past parsing and change nothing at ``env``: ``--env ENV``
    (``apply``: a new path under ``WORK``), ``--offline``, and the answers that let a command go on without a terminal
    where nothing can change (``upgrade --yes --to`` the installed release; ``rollback --yes`` with one generation;
    ``gc --dry-run``; ``apply --yes`` to the new path); a required ``-o``: a new path under ``WORK``."""
    wanted: dict[str, list[str]] = {
        "env": ["--env", str(work / f"new-{n}") if name == "apply" else env],
        "offline": ["--offline"],
    }
    wanted.update(
        {
            "upgrade": {"yes": ["--yes"], "to": ["--to", "2.15.1"]},
            "rollback": {"yes": ["--yes"]},
            "gc": {"dry_run": ["--dry-run"]},
            "apply": {"yes": ["--yes"]},
        }.get(name, {})
    )
    args: list[str] = []
    for p in command.params:
        if p is param or p.param_type_name == "argument":
            continue
        if p.name in wanted:
            args += wanted[p.name]
        elif p.required:
            args += [p.opts[0], str(work / f"out-{n}")]
    return args


def positional(command, param, value: str | None, profile: str) -> list[str]:
    out = []
    for p in command.params:
        if p.param_type_name != "argument":
            continue
        if p is param:
            out.append(value if value is not None else "")
        else:
            out.append(profile if p.name == "profile" else "1")
    return out


def cases(seed: int, env: str, profile: str, work: Path) -> list[tuple[str, list[str]]]:
    """Round by round: each param's first hostile value, then each param's second, ...; a flag gets two."""
    import typer

    from rebuild.cli.app import app

    rng = random.Random(seed)
    root = typer.main.get_command(app)
    rounds: list[list[tuple[str, list[str]]]] = []
    n = 0
    for name in sorted(root.commands):
        command = root.commands[name]
        for param in command.params:
            values = hostile(rng, work)
            if getattr(param, "is_flag", False):
                values = values[:2]
            for i, (label, value) in enumerate(values):
                n += 1
                args = benign(name, command, param, env, work, n)
                if param.param_type_name == "argument":
                    argv = [name, *args, "--", *positional(command, param, value, profile)]
                else:
                    option = next((o for o in param.opts if o.startswith("--")), param.opts[0])
                    argv = [name, *args, *positional(command, None, None, profile), f"{option}={value}"]
                while len(rounds) <= i:
                    rounds.append([])
                rounds[i].append((f"{name} {param.opts[0]} <{label}>", argv))
    return [case for r in rounds for case in r]


def run_case(argv: list[str]) -> tuple[int, str, str]:
    """The CLI's main() on ``argv``: (exit code, output, the escaped exception's traceback or "")."""
    from rebuild.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    environ, cwd = dict(os.environ), os.getcwd()
    sys.argv = ["tfrebuild", *argv]
    sys.stdin = io.StringIO("")
    escaped = ""
    code = 0
    signal.alarm(10)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the fuzz looks for
        escaped = traceback.format_exc()
        code = -1
    finally:
        signal.alarm(0)
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
    return code, out.getvalue() + err.getvalue(), escaped


def main() -> None:
    seed, env, work = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    budget = float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")  # seconds; the first round always runs
    profile = str(work / "empty.toml")

    def alarm(*_):
        raise Hung("the case ran past 10 s")

    signal.signal(signal.SIGALRM, alarm)
    os.chdir(work)
    before = tree_hash(env)
    report = sys.__stdout__
    every = cases(seed, str(env), profile, work)
    first = len({what.split(" <")[0] for what, _ in every})
    deadline = time.monotonic() + budget
    for i, (what, argv) in enumerate(every):
        if i >= first and time.monotonic() > deadline:
            break
        start = time.monotonic()
        code, output, escaped = run_case(argv)
        after = tree_hash(env)
        report.write(
            json.dumps(
                {
                    "case": what,
                    "argv": [a if len(a) < 120 else a[:60] + f"...({len(a)} chars)" for a in argv],
                    "code": code,
                    "traceback": bool(escaped) or "Traceback (most recent call last)" in output,
                    "changed": after != before,
                    "seconds": round(time.monotonic() - start, 2),
                    "output": (escaped or output)[-1500:],
                }
            )
            + "\n"
        )
        report.flush()
        before = after


if __name__ == "__main__":
    main()
