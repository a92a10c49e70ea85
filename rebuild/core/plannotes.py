"""The plan's words: why each package moves (the change rows' reasons) and the notes about sources, the GPU route,
removed packages and what was taken as requested. Split from :mod:`rebuild.core.plan` (same code)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from rebuild.core import resolve, sources
from rebuild.core.options import Route
from rebuild.env import graph
from rebuild.knowledge.tf import DROPPED, TF_DISTRIBUTIONS

if TYPE_CHECKING:
    from rebuild.core.planinputs import _Survey


def _reason(
    name: str,
    old: str | None,
    new: str | None,
    tf: str,
    via: dict[str, list[str]],
    data_requires: dict[str, list[str]],
    tf_new: str,
    requested: set[str],
    tf_old: str = "",
    tf_versions: dict[str, str] | None = None,
) -> str:
    if name == tf:
        return "the upgrade target"
    if name in TF_DISTRIBUTIONS and new is None:
        return f"replaced by {tf} (one TensorFlow variant per env)"
    tf_versions = tf_versions or {}
    if name in sources.SELF and new is None:
        return "tfrebuild itself: left out of the new env (it is a tool installed apart, not part of the env)"
    if new is None:
        dependents = [
            p
            for p, reqs in data_requires.items()
            if any(requirement_name(r) == name and graph.without_extra(r) for r in reqs)
        ]
        old_tf = [p for p in dependents if p in TF_DISTRIBUTIONS]
        if old_tf and len(old_tf) == len(dependents) and name not in requested:
            return f"no longer required (only {' and '.join(f'{p} {tf_versions.get(p, tf_old)}' for p in old_tf)} needed it)"
        return "no longer required" + (f" (was required by {', '.join(sorted(dependents))})" if dependents else "")
    # A requested package whose installed version pins TensorFlow below the target is a companion that must move.
    if old is not None and name in data_requires:
        for text in data_requires[name]:
            req = _parse(text)
            if (
                req
                and canonicalize_name(req.name) in TF_DISTRIBUTIONS
                and req.specifier
                and not req.specifier.contains(tf_new, prereleases=True)
            ):
                return f"{name} {old} requires {text.split(';')[0].strip()}, which excludes {tf_new}"
    parents = [p for p in via.get(name, []) if p != "(requested)"]
    if parents:
        verb = "new dependency of" if old is None else "required by"
        return f"{verb} {', '.join(parents)}"
    if name in requested:
        return "requested"
    return ""


@functools.lru_cache(maxsize=8192)  # every removed package scans every installed requirement: parse each once
def _parse(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except Exception:  # noqa: BLE001 - malformed metadata is reported elsewhere
        return None


def requirement_name(text: str) -> str:
    req = _parse(text)
    return canonicalize_name(req.name) if req else ""


def _switch_reason(survey: _Survey, resolved: resolve.Resolved, tf: str, route: Route, variant_note: str) -> str:
    """Why the new env has another TensorFlow distribution than the installed one ("" when it has the same)."""
    if tf == survey.tf or survey.tf not in survey.pins:
        return ""
    if variant_note:
        wanting = sorted(p for p in resolved.via.get(tf, []) if p not in ("(requested)", tf, survey.tf))
        return (
            f"{', '.join(wanting) or 'a requested package'} require(s) `{tf}`, not {survey.tf}: the same "
            f"TensorFlow, published under the other name; one variant per env"
        )
    return f"GPU route {route}: {tf} instead of {survey.tf} (one variant per env)"


def _source_notes(survey: _Survey, direct: dict[str, sources.DirectSource]) -> list[str]:
    """Packages reinstalled from their own sources, and tfrebuild left out."""
    notes = [f"{s.name} {s.version} is reinstalled {s.shown} (not looked up on an index)" for s in direct.values()]
    mine = [p for p in survey.current.packages if p.name in sources.SELF and p.location == "env"]
    if mine:
        runs_here = sources.running_from(survey.loc.path)
        notes.append(
            f"tfrebuild {mine[0].version} is installed in this env and is left out of the new one"
            + ("; this tfrebuild runs from the env, so `upgrade` refuses: " if runs_here else "; ")
            + sources.INSTALL_APART
        )
    return notes


def _route_notes(survey: _Survey, tf: str, extras: list[str], route: Route, variant_note: str) -> list[str]:
    notes = [variant_note] if variant_note else []
    if tf != survey.tf and not variant_note:
        notes.append(
            f"GPU route {route}: {survey.tf} is replaced by {tf}{'[' + ','.join(extras) + ']' if extras else ''} "
            "(never both in one env)"
        )
    elif route == Route.CUDA:
        notes.append(
            f"GPU route cuda: tensorflow[and-cuda] brings CUDA/cuDNN as nvidia-* wheels; the checks require "
            f"TensorFlow to see a GPU ({', '.join(survey.current.gpu.gpus) or 'none listed by nvidia-smi'})"
        )
    return notes


def _dropped_notes(pins: dict[str, str], resolved: resolve.Resolved, tf_old: str, tf_new: str) -> list[str]:
    return [
        f"{name} {pins[name]} is removed: {what}"
        for name, (since, what) in DROPPED.items()
        if name in pins
        and name not in resolved.pins
        and tf_old
        and tf_new
        and Version(tf_old) < Version(since + ".0") <= Version(tf_new)
    ]


def _requested_notes(survey: _Survey) -> list[str]:
    """Say so when the env's REQUESTED markers were overruled by the dependency graph (requirement files)."""
    from rebuild.env.snapshot import REQUESTED_FROM_GRAPH

    if survey.override is not None or not any(w.kind == REQUESTED_FROM_GRAPH for w in survey.current.warnings):
        return []
    named = ", ".join(survey.current.requested) or "none"
    return [
        f"requested: REQUESTED marks (nearly) every installed dependency (a pinned requirements file?), so "
        f"what nothing installed requires is taken as requested ({named}); the others are dependencies, "
        "kept while something needs them and dropped when only the old TensorFlow did (name one under "
        "`requested` in a --profile to keep it)"
    ]
