"""The pre-flight's statements said again against the plan they belong to.

Doctor predicts what an upgrade does (``numpy must move 1.24.3 → 1.26.4``); the plan knows it. When the plan
has resolved, every statement the plan prints must agree with the plan's own pins: a dependency the resolution
kept is not "must move", and one it moved elsewhere moves to the resolved version.
"""

from __future__ import annotations

import re
from dataclasses import replace

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.doctor import numpyabi
from rebuild.doctor.findings import Finding
from rebuild.doctor.findings import FindingId as F
from rebuild.knowledge import numpy2

_EAGER = re.compile(r"upgrade [^:`]+ too: `[^`]*--strategy eager`, or ")


def agree(findings: list[Finding], pins: dict[str, str], strategy: str = "minimal") -> list[Finding]:
    """``findings`` with each ``dependency-moves`` statement made true of ``pins`` (the resolved set); under
    ``--strategy eager`` no fix proposes the strategy already given."""
    out = []
    for f in findings:
        if strategy == "eager" and "--strategy eager" in f.fix:
            f.fix = _EAGER.sub("", f.fix)
        if f.id == "dependency-moves" and f.move is not None:
            dep, old, new = f.move.dep, f.move.old, f.move.new
            got = pins.get(dep)
            if got == old:
                continue  # the plan keeps it: nothing moves
            if got and got != new:
                stated = f"{dep} must move {old} → {new} "
                f.title = f"{dep} must move {old} → {got} " + f.title.removeprefix(stated)
                f.move = replace(f.move, new=got)
                f.evidence = [e for e in f.evidence if not e.startswith(f"newest {dep} every requirement")]
                f.evidence.append(f"the resolution takes {dep} {got}")
        out.append(f)
    return out


def numpy_abi(pins: dict[str, str], distributions: list[dict]) -> list[Finding]:
    """Packages the plan keeps (or takes) at a release built for NumPy 1 while it takes numpy 2: they fail at
    import whatever their Requires-Dist says (:mod:`rebuild.doctor.numpyabi`)."""
    try:
        numpy = Version(pins.get("numpy", ""))
    except InvalidVersion:
        return []
    if numpy.major < 2:
        return []
    out, seen = [], set()
    for d in distributions:
        name = canonicalize_name(d.get("name") or d.get("canonical") or "")
        version = pins.get(name)
        if not version or name in seen or d.get("location", "env") != "env" or "wheel_tags" not in d:
            continue
        seen.add(name)
        major, why = numpyabi.built_for(None, name, {**d, "version": version})
        if major != 1:
            continue
        row = numpy2.first_build(name)
        move = f", or let {name} move to {row.first} or newer (the first built for NumPy 2)" if row else ""
        out.append(
            F.NUMPY_ABI_MISMATCH.make(
                f"{name} {version} was built for NumPy 1, and this plan takes numpy {numpy}",
                [why, f"the plan takes numpy {numpy} and {name} {version}"],
                "keep numpy below 2: add `--constraint numpy1.txt` to the command, numpy1.txt holding the line "
                f"`numpy<2`{move}",
                fixed_by_rebuild=False,
                affects_new_env=True,
            )
        )
    return out
