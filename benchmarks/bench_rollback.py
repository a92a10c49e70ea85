"""Benchmark: how fast `tfrebuild rollback` swaps a real TensorFlow env, and what a generation costs on disk.

Aims (from the issue): rollback under 100 ms for a ~1.5 GB TensorFlow env; extra disk per
generation under 10% of the env's size with a warm uv cache.

Set-up (unless ``--env`` names an existing managed env with a previous generation): a copy
(``cp -a``) of a pip-made ``tensorflow-cpu==2.15.1 scipy==1.11.4 pandas`` venv (made from PyPI,
or ``--base``), upgraded once with ``tfrebuild upgrade --yes`` (generation 1 = the pip env,
generation 2 = the uv-built upgrade). Commands run isolated from the user's pip/uv
configuration (see ``bench_upgrade.clean_environ``).

Measured:

* ``tfrebuild rollback --env E --yes --json`` N times (alternating between the two generations,
  like ``cd -``): the ``swap_ms`` it reports, and the command's wall time (which includes
  starting Python and the quick TensorFlow import check at ``E`` after the swap);
* the swap alone, in this process: ``Store.open(E).rollback_to()`` N times (journal, exchange,
  renames, fsyncs, state files), timed with and without ``Store.open``;
* disk: each tree on its own (like ``du``), both generations counted once (hard links counted
  once), the extra the new generation costs over the original env, and the new generation's
  files split by ``st_nlink``: files hard-linked from uv's cache versus files written for this
  generation only (what deleting it would free); cross-checked with ``du -s``.

N is rounded up to an even number, so the env ends on the generation it started on.

Usage (from the repository root)::

    python benchmarks/bench_rollback.py                    # builds its own env (needs PyPI)
    python benchmarks/bench_rollback.py --base PATH        # copy this pip-made 2.15.1 venv instead
    python benchmarks/bench_rollback.py --env ~/venvs/tf   # an env tfrebuild already manages
    python benchmarks/bench_rollback.py --rollbacks 20

Prints Markdown tables; asserts nothing. The temporary folder (under ``--workdir``, default
``<repo>/../scratch``) is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upgrade import (  # noqa: E402
    DEFAULT_WORKDIR,
    add_tool_option,
    base_venv,
    cache_archives,
    choose_tfrebuild,
    clean_environ,
    copy_env,
    log,
    machine_line,
    make_workdir,
    run,
    same_filesystem,
    tfrebuild_cmd,
    timed,
    tree_bytes,
    uv_cache_dir,
)

from rebuild.store.store import Store  # noqa: E402

AIM_ROLLBACK_MS = 100.0
AIM_EXTRA_PCT = 10.0


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# --------------------------------------------------------------------------- disk


@dataclass
class Inode:
    size: int
    nlink: int
    kind: str  # file | dir | link | other
    trees: set[int] = field(default_factory=set)
    seen: int = 0  # directory entries found for it in the walked trees
    sample: str = ""  # one relative path


def walk(trees: list[Path]) -> dict[tuple[int, int], Inode]:
    inodes: dict[tuple[int, int], Inode] = {}
    for i, root in enumerate(trees):
        for dirpath, dirnames, filenames in os.walk(root):
            names = [(dirpath, None)] if dirpath == str(root) else []
            names += [(dirpath, n) for n in dirnames + filenames]
            for folder, name in names:
                path = folder if name is None else os.path.join(folder, name)
                st = os.lstat(path)
                key = (st.st_dev, st.st_ino)
                kind = (
                    "dir"
                    if stat.S_ISDIR(st.st_mode)
                    else "link"
                    if stat.S_ISLNK(st.st_mode)
                    else "file"
                    if stat.S_ISREG(st.st_mode)
                    else "other"
                )
                node = inodes.get(key)
                if node is None:
                    node = inodes[key] = Inode(
                        st.st_blocks * 512, st.st_nlink, kind, sample=os.path.relpath(path, root)
                    )
                node.trees.add(i)
                node.seen += 1
    return inodes


def category(rel: str, kind: str) -> str:
    if kind == "dir":
        return "directories"
    if rel.endswith(".pyc"):
        return ".pyc files (bytecode compiled in the new env)"
    parts = rel.split(os.sep)
    if any(p.endswith(".dist-info") for p in parts):
        return "*.dist-info metadata (RECORD, INSTALLER, REQUESTED ...)"
    if parts[0] == "bin":
        return "bin/ (scripts, activate)"
    return "other files: " + (parts[3] if len(parts) > 3 and parts[0] == "lib" else parts[0])


@dataclass
class Disk:
    original: int  # the original env alone
    new: int  # the new generation alone
    total_once: int  # both, each inode counted once
    shared_with_original: int
    new_linked_outside: int  # new-gen bytes in files with links outside both trees (uv's cache)
    new_written: int  # new-gen bytes found only in the new tree (dirs + files with no other link)
    n_linked: int
    n_written_files: int
    written_by_category: Counter
    du_original: int | None
    du_new_extra: int | None


def du_bytes(*paths: Path) -> list[int] | None:
    if shutil.which("du") is None:
        return None
    proc = run(["du", "-s", "-B1", *paths], check=False)
    if proc.returncode != 0:
        return None
    return [int(line.split()[0]) for line in proc.stdout.splitlines()]


def measure_disk(original: Path, new: Path) -> Disk:
    inodes = walk([original, new])
    orig = sum(n.size for n in inodes.values() if 0 in n.trees)
    new_alone = sum(n.size for n in inodes.values() if 1 in n.trees)
    total = sum(n.size for n in inodes.values())
    shared = sum(n.size for n in inodes.values() if n.trees == {0, 1})
    linked = written = n_linked = n_written = 0
    by_cat: Counter = Counter()
    for n in inodes.values():
        if n.trees != {1}:
            continue
        if n.kind != "dir" and n.nlink > n.seen:
            linked += n.size
            n_linked += 1
        else:
            written += n.size
            n_written += n.kind == "file"
            by_cat[category(n.sample, n.kind)] += n.size
    du = du_bytes(original, new)
    return Disk(
        orig,
        new_alone,
        total,
        shared,
        linked,
        written,
        n_linked,
        n_written,
        by_cat,
        du[0] if du else None,
        du[1] if du and len(du) > 1 else None,
    )


# --------------------------------------------------------------------------- set-up


def prepare(args, tmp: Path | None) -> tuple[Path, dict | None]:
    if args.env:
        env = Path(args.env).resolve()
        store = Store.open(env)
        if store is None or store.previous_number is None:
            raise SystemExit(f"{env} is not managed by tfrebuild or has no previous generation to roll back to")
        return env, None
    base = base_venv(args, tmp)
    env = copy_env(base, tmp / "tf")
    log(f"tfrebuild upgrade --env {env} --yes")
    before = cache_archives()
    seconds, proc = timed(tfrebuild_cmd("upgrade", "--env", env, "--yes", "--json"), cwd=tmp)
    added = cache_archives() - before
    data = json.loads(proc.stdout)
    data["wall_s"] = seconds
    data["cache_added"] = (len(added), tree_bytes(added))
    return env, data


def rollback_cli(env: Path, n: int) -> tuple[list[float], list[float], list[str]]:
    swap_ms, wall_s, route = [], [], []
    for i in range(n):
        seconds, proc = timed(tfrebuild_cmd("rollback", "--env", env, "--yes", "--json"), cwd=env.parent)
        data = json.loads(proc.stdout)
        swap_ms.append(data["swap_ms"])
        wall_s.append(seconds)
        route.append(f"{data['from_generation']}→{data['to_generation']}")
        log(f"  CLI rollback {i + 1}/{n} {route[-1]}: swap {data['swap_ms']:.1f} ms, command {seconds:.2f} s")
    return swap_ms, wall_s, route


def rollback_in_process(env: Path, n: int) -> tuple[list[float], list[float]]:
    bare, with_open = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        store = Store.open(env)
        t1 = time.perf_counter()
        store.rollback_to()
        t2 = time.perf_counter()
        bare.append((t2 - t1) * 1000)
        with_open.append((t2 - t0) * 1000)
    return bare, with_open


# --------------------------------------------------------------------------- main


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", help="an env tfrebuild already manages (with a previous generation); used as is")
    parser.add_argument("--base", help="existing pip-made tensorflow-cpu 2.15.1 venv to copy (never changed)")
    parser.add_argument(
        "--rollbacks", type=int, default=10, help="rollbacks per method (rounded up to even; default 10)"
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    add_tool_option(parser)
    args = parser.parse_args(argv)
    n = args.rollbacks + args.rollbacks % 2

    tmp = make_workdir(args.workdir, "bench-rollback-")  # the tool, and without --env the envs
    try:
        choose_tfrebuild(args, tmp, clean_environ())
        env, upgrade = prepare(args, tmp)
        store = Store.open(env)
        start_gen = store.current_number
        log(f"env {env}: generation {start_gen} current, {store.previous_number} previous")

        log(f"{n} rollbacks with the CLI")
        cli_swap, cli_wall, route = rollback_cli(env, n)
        log(f"{n} rollbacks in process (Store.open(E).rollback_to())")
        bare, with_open = rollback_in_process(env, n)

        store = Store.open(env)
        gens = sorted([store.current_number, store.previous_number])
        trees = {g: store.generation(g).path(store) for g in gens}
        log("measuring disk")
        disk = measure_disk(trees[gens[0]], trees[gens[1]])
        cache = uv_cache_dir()
        report(
            env,
            upgrade,
            n,
            cli_swap,
            cli_wall,
            route,
            bare,
            with_open,
            gens,
            disk,
            same_filesystem(env, cache),
            cache,
            store.current_number == start_gen,
        )
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(
    env, upgrade, n, cli_swap, cli_wall, route, bare, with_open, gens, disk: Disk, same_fs, cache, back_at_start
) -> None:
    old, new = gens
    print(f"# tfrebuild rollback and disk per generation ({machine_line()})")
    print()
    print(
        f"Aims: rollback under {AIM_ROLLBACK_MS:.0f} ms for a ~1.5 GB TensorFlow env; extra disk per generation "
        f"under {AIM_EXTRA_PCT:.0f}% of the env's size with a warm uv cache."
    )
    if upgrade:
        print(
            f"Env: copy of a pip-made tensorflow-cpu 2.15.1 venv (generation {old}), upgraded once with tfrebuild to "
            f"tensorflow-cpu {upgrade['plan']['tf_new']} (generation {new}; upgrade took {upgrade['wall_s']:.1f} s, "
            f"its swap {upgrade['swap_ms']:.1f} ms)."
        )
    else:
        print(f"Env: {env} (generations {old} and {new}), used as found.")
    print(
        f"uv cache {cache} on the same filesystem as the env: {'yes' if same_fs else 'NO (uv copies, no hard links)'}. "
        f"Rollbacks alternate ({', '.join(route[:3])}, ...); the env ends on its starting generation: "
        f"{'yes' if back_at_start else 'no'}."
    )
    print()
    print(f"| rollback, {n} times | median ms | min ms | max ms | aim < {AIM_ROLLBACK_MS:.0f} ms |")
    print("|---|---:|---:|---:|---|")

    def verdict(xs: list[float]) -> str:
        if max(xs) < AIM_ROLLBACK_MS:
            return "met (every time)"
        return "met (median)" if statistics.median(xs) < AIM_ROLLBACK_MS else "**not met**"

    print(f"| `tfrebuild rollback --json` swap_ms | {stats(cli_swap)} | {verdict(cli_swap)} |")
    print(f"| in process: `Store.rollback_to()` | {stats(bare)} | {verdict(bare)} |")
    print(f"| in process: `Store.open(E).rollback_to()` | {stats(with_open)} | {verdict(with_open)} |")
    print(
        f"| whole `tfrebuild rollback` command (incl. start-up and TF import check) | "
        f"{stats([s * 1000 for s in cli_wall])} | (not the aim) |"
    )
    print()
    orig = disk.original
    extra = disk.total_once - orig
    print("| disk | bytes | % of the original env |")
    print("|---|---:|---:|")
    what = "original env, pip-made" if upgrade else "the older one"
    print(f"| generation {old} ({what}) alone | {mib(orig)} | 100% |")
    print(f"| generation {new} (tfrebuild-built) alone | {mib(disk.new)} | {100 * disk.new / orig:.0f}% |")
    print(
        f"| both generations, each inode counted once | {mib(disk.total_once)} | {100 * disk.total_once / orig:.0f}% |"
    )
    print(f"| **extra for generation {new}** = both − original | **{mib(extra)}** | **{100 * extra / orig:.1f}%** |")
    print(
        f"| of which shared with generation {old} (hard links between the two) | {mib(disk.shared_with_original)} | "
        f"{100 * disk.shared_with_original / orig:.1f}% |"
    )
    print(
        f"| of which hard-linked from outside both trees (uv's cache), {disk.n_linked:,} files | "
        f"{mib(disk.new_linked_outside)} | {100 * disk.new_linked_outside / orig:.1f}% |"
    )
    print(
        f"| **of which written for generation {new} only** ({disk.n_written_files:,} files with st_nlink 1, "
        f"plus directories) = marginal cost over a warm uv cache | **{mib(disk.new_written)}** | "
        f"**{100 * disk.new_written / orig:.1f}%** |"
    )
    if disk.du_original is not None and disk.du_new_extra is not None:
        print(
            f"| cross-check `du -s -B1 gen{old} gen{new}`: second line | {mib(disk.du_new_extra)} | "
            f"{100 * disk.du_new_extra / orig:.1f}% |"
        )
    print()
    if upgrade and "cache_added" in upgrade:
        entries, grown = upgrade["cache_added"]
        print(
            f"uv's cache grew by {mib(grown)} ({entries} new entries in archive-v0) during the upgrade that made "
            f"generation {new}, although it was warm: the files generation {new} hard-links come from this fresh "
            f"copy, so on this machine the new generation really costs the 'extra' line above, not only the "
            f"'written for generation {new} only' line."
        )
        print()
    print(f"Written-only bytes of generation {new} by kind:")
    print()
    for name, size in disk.written_by_category.most_common(6):
        print(f"* {name}: {mib(size)} ({100 * size / max(disk.new_written, 1):.0f}%)")
    print()
    met_strict = 100 * extra / orig < AIM_EXTRA_PCT
    met_marginal = 100 * disk.new_written / orig < AIM_EXTRA_PCT
    print(
        f"Disk aim (< {AIM_EXTRA_PCT:.0f}%): counting the new generation's cache-linked files as its own cost: "
        f"{'met' if met_strict else '**not met**'} ({100 * extra / orig:.1f}%); counting only what it adds on top of a "
        f"warm uv cache: {'met' if met_marginal else '**not met**'} ({100 * disk.new_written / orig:.1f}%)."
    )


if __name__ == "__main__":
    sys.exit(main())
