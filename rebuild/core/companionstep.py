"""Companions in step with TensorFlow, and what a Python move must move (issue 20, points 1, 3 and 7).

:func:`apply` changes a resolution's inputs before uv runs: every installed companion (``knowledge/companions``)
loses its pin as a preference, so uv moves it with TensorFlow in every strategy; a companion the table pairs with
TensorFlow's minor gets that pairing as a constraint; a companion that needs tf-keras from the target on gets it
requested; on a Python move, a package whose installed version cannot run on the new Python loses its pin too.
It returns why, per package, for the plan's change rows and notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.env.probed import Probed
from rebuild.knowledge import companions as table

if TYPE_CHECKING:
    from rebuild.core.resolve import Inputs


@dataclass
class Step:
    reasons: dict[str, str] = field(default_factory=dict)  # name -> why it moves with TensorFlow
    notes: list[str] = field(default_factory=list)
    keras2: list[str] = field(default_factory=list)  # installed packages the table says need Keras 2
    ceiling: str = ""  # the lowest "works with TensorFlow below X.Y" of the installed companions
    ceiling_by: list[str] = field(default_factory=list)  # those companions, with the fact's source


def companion_ceiling(pins: dict[str, str], requested: set[str] | None = None) -> tuple[str, list[str]]:
    """The TensorFlow minor the installed companions end before ("" when none), and who says so. Only requested
    companions hold TensorFlow back (``requested``; ``None``: all): a dependency goes when nothing needs it any more
    (tensorflow-addons under tf-models-official 2.12, which its newer releases no longer require)."""
    ends = [
        (c.tf_below, f"{n} {pins[n]} works with TensorFlow below {c.tf_below} only ({c.source})")
        for n, c in table.installed(pins).items()
        if c.tf_below and n not in ("tensorflow-estimator",) and (requested is None or n in requested)
    ]
    if not ends:
        return "", []
    low = min(ends, key=lambda e: Version(e[0]))[0]
    return low, [why for below, why in ends if below == low]


def apply(
    inputs: Inputs,
    pins: dict[str, str],
    data: Probed,
    tf_new: str,
    python_old: str,
    python_new: str,
    holds: Sequence[str] = (),
) -> Step:
    """Unpin companions (and packages the new Python cannot run), add pairings and holds; see the module doc."""
    step = Step()
    mine = table.installed(pins)
    moved: set[str] = set()
    for name, comp in mine.items():
        if name in inputs.direct:
            continue
        moved.add(name)
        why = f"companion of TensorFlow ({comp.binding}): moves in step"
        pair = comp.pair_for(tf_new)
        if pair:
            inputs.constraints[name] = _join(inputs.constraints.get(name, ""), pair)
            why = f"companion of TensorFlow: {pair} pairs with TensorFlow {_minor(tf_new)} (its release notes)"
        step.reasons[name] = why
        if (
            comp.needs_tf_keras(tf_new)
            and "tf-keras" not in pins
            and not any(canonicalize_name(_name(r)) == "tf-keras" for r in inputs.requested)
        ):
            inputs.requested = sorted(set(inputs.requested) | {"tf-keras"})
            step.reasons["tf-keras"] = f"{name} imports tf_keras from TensorFlow {comp.tf_keras_from} on"
        if comp.imports_pkg_resources(pins[name]):
            holds = list(holds) + ["setuptools<81"]
            step.reasons.setdefault("setuptools", f"{name} {pins[name]} imports pkg_resources (setuptools < 81)")
    step.keras2 = table.keras2_needed_by(pins)
    if _minor(python_old) != _minor(python_new):
        for name, why in python_moves(pins, data, python_new).items():
            if name not in inputs.direct:
                moved.add(name)
                step.reasons[name] = why
    for line in dict.fromkeys(holds):
        name = canonicalize_name(_name(line))
        spec = line[len(_name(line)) :].strip()
        inputs.requested = sorted({r for r in inputs.requested if canonicalize_name(_name(r)) != name} | {line})
        if spec:
            inputs.constraints[name] = _join(inputs.constraints.get(name, ""), spec)
        step.reasons.setdefault(name, f"held: {line}")
    inputs.pins = {n: v for n, v in inputs.pins.items() if n not in moved}
    if moved:
        step.notes.append(
            "companions move with TensorFlow (their pins are not kept): "
            + ", ".join(f"{n} {pins[n]}" for n in sorted(moved) if n in mine)
        )
    step.notes = [n for n in step.notes if not n.endswith(": ")]
    return step


def python_moves(pins: dict[str, str], data: Probed, python_new: str) -> dict[str, str]:
    """Installed packages whose installed version cannot run on ``python_new``: Requires-Python excludes it, the
    installed wheel is tagged for another CPython only, or the table knows the pair is bad."""
    out: dict[str, str] = {}
    py = Version(".".join(python_new.split(".")[:3]))
    for dist in data.distributions:
        name = dist.get("canonical", "")
        if dist.get("location") != "env" or name not in pins:
            continue
        rp = dist.get("requires_python") or ""
        try:
            if rp and not SpecifierSet(rp).contains(py, prereleases=True):
                out[name] = f"{name} {pins[name]} requires Python {rp}: moves for Python {_minor(python_new)}"
                continue
        except (InvalidSpecifier, InvalidVersion):
            pass
        tags = _wheel_tags(dist.get("dist_info") or "")
        cp = {t.split("-")[1] for t in tags if t.split("-")[1].startswith("cp") and "abi3" not in t}
        want = "cp" + "".join(python_new.split(".")[:2])
        if cp and want not in cp and not any("abi3" in t or t.startswith("py") for t in tags):
            out[name] = (
                f"{name} {pins[name]} is installed from a wheel built for {', '.join(sorted(cp))} only: "
                f"moves for Python {_minor(python_new)}"
            )
    for name, bad in table.python_bad(pins, python_new).items():
        out.setdefault(name, f"{name} {pins[name]} does not run on Python {bad.python}+ ({bad.source})")
    return out


def _wheel_tags(dist_info: str) -> list[str]:
    try:
        text = (Path(dist_info) / "WHEEL").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def _name(requirement: str) -> str:
    for i, ch in enumerate(requirement):
        if not (ch.isalnum() or ch in "-_."):
            return requirement[:i]
    return requirement


def _join(a: str, b: str) -> str:
    return ",".join(s for s in (a, b) if s)


def _minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])
