"""The pre-flight's statements said again against the plan they belong to.

Doctor predicts what an upgrade does (``numpy must move 1.24.3 → 1.26.4``); the plan knows it. When the plan
has resolved, every statement the plan prints must agree with the plan's own pins: a dependency the resolution
kept is not "must move", and one it moved elsewhere moves to the resolved version.
"""

from __future__ import annotations

import re

from rebuild.doctor.findings import Finding

_MOVES = re.compile(r"^(?P<dep>\S+) must move (?P<old>\S+) → (?P<new>\S+) for (?P<rest>.*)$")


def agree(findings: list[Finding], pins: dict[str, str]) -> list[Finding]:
    """``findings`` with each ``dependency-moves`` statement made true of ``pins`` (the resolved set)."""
    out = []
    for f in findings:
        if f.id == "dependency-moves":
            found = _MOVES.match(f.title)
            if found is not None:
                dep, old, new = found["dep"], found["old"], found["new"]
                got = pins.get(dep)
                if got == old:
                    continue  # the plan keeps it: nothing moves
                if got and got != new:
                    f.title = f"{dep} must move {old} → {got} for {found['rest']}"
                    f.evidence = [e for e in f.evidence if not e.startswith(f"newest {dep} every requirement")]
                    f.evidence.append(f"the resolution takes {dep} {got}")
        out.append(f)
    return out
