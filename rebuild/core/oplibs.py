"""Op-library checks (issue 20, point 5): an import does not load a companion's compiled TensorFlow ops.

Packages such as tensorflow-text, -io, -addons and decision-forests ship custom op libraries (``.so`` files linked
against ``libtensorflow_framework``) that TensorFlow loads on first use; one built for another TensorFlow minor
imports fine and fails at its first op (``NotImplementedError: unable to open file: …so``). This check finds those
libraries in an env (not Python extension modules, which the import check loads; not TensorFlow's own) and loads
each with ``tf.load_op_library`` in the env's interpreter.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from rebuild.knowledge import companions
from rebuild.knowledge.tf import TF_DISTRIBUTIONS
from rebuild.util import distinfo, proc

if TYPE_CHECKING:
    from rebuild.core.smoke import Check

_MARK = b"libtensorflow_framework"
_HEAD = 8 << 20  # DT_NEEDED names live in .dynstr, near the start of the file

_LOAD = proc.each_argument_script("import tensorflow as tf", "tf.load_op_library(arg)", "str(exc).strip()[-800:]")


def find(env: Path) -> dict[str, list[Path]]:
    """Distribution name -> its op libraries in ``env``'s site-packages."""
    out: dict[str, list[Path]] = {}
    skip = set(TF_DISTRIBUTIONS) | companions.not_op_libraries()
    for site in sorted(env.glob("lib/python3*/site-packages")):
        for record in site.glob("*.dist-info/RECORD"):
            name = (distinfo.parse(record.parent.name) or ("", ""))[0]
            if name in skip:
                continue
            try:
                rows = record.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for row in rows:
                rel = row.split(",")[0]
                base = os.path.basename(rel)
                if not base.endswith(".so") or ".cpython-" in base or ".abi3." in base or rel.startswith(".."):
                    continue
                path = site / rel
                if _links_tensorflow(path):
                    out.setdefault(name, []).append(path)
    return out


def _links_tensorflow(path: Path) -> bool:
    """Whether the shared object names ``libtensorflow_framework`` among its DT_NEEDED entries (ELF); a file that
    is not a 64-bit ELF (the test kit's) is searched for the name in its first 8 MiB."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] == b"\x7fELF" and head[4] == 2:
                return any(_MARK in name for name in _needed(fh, head))
            fh.seek(0)
            return _MARK in fh.read(_HEAD)
    except (OSError, ValueError, IndexError, struct.error):
        return False


def _needed(fh: BinaryIO, head: bytes) -> list[bytes]:
    """DT_NEEDED names of a 64-bit ELF file (its dynamic section and the string table it links)."""
    order = "<" if head[5] == 1 else ">"
    (shoff,) = struct.unpack_from(order + "Q", head, 0x28)
    shentsize, shnum = struct.unpack_from(order + "HH", head, 0x3A)
    fh.seek(shoff)
    table = fh.read(shentsize * shnum)
    sections = [struct.unpack_from(order + "IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
    out: list[bytes] = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 6 or link >= len(sections):  # SHT_DYNAMIC
            continue
        fh.seek(offset)
        dynamic = fh.read(size)
        strings_at, strings_size = sections[link][4], sections[link][5]
        fh.seek(strings_at)
        strings = fh.read(strings_size)
        for i in range(0, len(dynamic) - 15, entsize or 16):
            tag, value = struct.unpack_from(order + "qQ", dynamic, i)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                out.append(strings[value : strings.index(b"\0", value)])
    return out


def key(name: str, path: str | Path) -> str:
    """How a failed op library is named across envs (core/baseline.py): ``oplib:<dist>/<file name>``."""
    return f"oplib:{name}/{Path(path).name}"


LOAD_SCRIPT = _LOAD


def check(
    env: Path,
    run: Callable[[str, list[str], Path, float], tuple[Check, str]],
    timeout: float,
    already_failing: Callable[[], dict[str, str]] | None = None,
) -> Check | None:
    """The op-library check of ``env`` (``None`` when it has none): ``run`` is smoke's runner
    (``run(name, cmd, env, timeout) -> (Check, stdout)``); ``already_failing()``: what failed in the current env
    (keys of :func:`key`), not held against this one."""
    found = find(env)
    if not found:
        return None
    paths = [str(p) for libs in found.values() for p in libs]
    names = ", ".join(sorted(found))
    start = time.monotonic()
    check, stdout = run(
        f"op libraries load: {names}", [str(env / "bin" / "python"), "-I", "-c", _LOAD, *paths], env, timeout
    )
    if check.ok:
        try:
            failed = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            failed = {"?": stdout}
        owner = {str(p): n for n, libs in found.items() for p in libs}
        before = (already_failing() if already_failing is not None else {}) if failed else {}
        old = {p: why for p, why in failed.items() if key(owner.get(p, "?"), p) in before}
        failed = {p: why for p, why in failed.items() if p not in old}
        if old:
            check.output = "\n".join(
                f"{owner.get(p, '?')}: {Path(p).name} already failed to load before the upgrade "
                f"(not held against the new env): {why}"
                for p, why in old.items()
            )
            check.name += f" ({len(old)} already failing before the upgrade)"
        if failed:
            check.ok = False
            bad = sorted({owner.get(p, "?") for p in failed})
            check.name = f"op libraries load: {', '.join(bad)} failed (tf.load_op_library)"
            check.output = "\n".join(
                f"{owner.get(p, '?')}: tf.load_op_library({Path(p).name}) failed:\n  {why}" for p, why in failed.items()
            ) + (f"\n{check.output}" if old else "")
    check.seconds = time.monotonic() - start
    return check
