"""Which release of a package that requires TensorFlow goes with which TensorFlow, read from the index.

"No release of X accepts TensorFlow T; the newest TensorFlow it allows is ..." must be true of *every*
release of X on the index, not of the installed one's line: tensorflow-decision-forests 1.11.0 pins
``tensorflow==2.18.0``, but 1.12.0 (``tensorflow==2.19.0``) is what lets the env move. So the search reads the
releases of X newest first (their ``Requires-Dist`` on TensorFlow, from the index's metadata) until one
accepts the target, or one accepts a TensorFlow newer than the installed one: that TensorFlow, and the
release of X that moves with it, are the answer. The installed TensorFlow itself is never an answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import Version

from rebuild.doctor.context import Context, Target, applies, contains, python_ok, req_text, version_of
from rebuild.env import graph
from rebuild.index import simple as indexinfo
from rebuild.knowledge.tf import TF_DISTRIBUTIONS

#: Releases of one package read at most (newest first): each costs one small metadata request.
MAX_RELEASES = 12


@dataclass(frozen=True)
class Match:
    """What the index says about a package and a TensorFlow target."""

    accepting: tuple[str, str] | None = None  # (release of X, its TF requirement) that accepts the target
    newest_tf: str = ""  # the newest TensorFlow above the installed one (and below the target) a release allows
    moving: tuple[str, str] | None = None  # (release of X, its TF requirement) that goes with ``newest_tf``
    releases_read: int = 0
    complete: bool = True  # every release of X was read (else the search stopped at MAX_RELEASES or the budget)


def _installable(ctx: Context, files: list) -> list:
    tags = set(ctx.target_tags())
    return [
        f
        for f in files
        if f.is_wheel and not f.yanked and not f.tags.isdisjoint(tags) and python_ok(f.requires_python, ctx.new_python)
    ]


def tf_versions(ctx: Context, target: Target) -> list[Version]:
    """TensorFlow releases of the target's distribution this env could install, newest first."""
    return indexinfo.versions(_installable(ctx, target.files) or target.files, prereleases=ctx.pre)


def search(ctx: Context, project: str, target: Target) -> Match:
    """The release of ``project`` that accepts ``target`` or, when none does, the newest TensorFlow above the
    installed one that a release of it accepts (see the module's doc)."""
    files = ctx.files(project)
    if not files:
        return Match(complete=False)
    releases = indexinfo.versions(_installable(ctx, files) or files, prereleases=ctx.pre)
    installed = version_of(ctx.tf_version)
    wanted = version_of(target.version)
    candidates = [
        v for v in tf_versions(ctx, target) if (installed is None or v > installed) and (wanted is None or v < wanted)
    ]
    read = 0
    for release in releases[:MAX_RELEASES]:
        meta, _ = ctx.metadata(project, str(release), files, budget=False)
        read += 1
        if meta is None:
            continue
        reqs = [
            r
            for r in (graph.parse(t) for t in meta.get("requires_dist") or [])
            if r is not None and canonicalize_name(r.name) in TF_DISTRIBUTIONS and applies(r, ctx.new_markers)
        ]
        text = "; ".join(req_text(r) for r in reqs) or "no requirement on TensorFlow"
        if all(contains(r.specifier, target.version) for r in reqs):
            return Match(accepting=(str(release), text), releases_read=read)
        allowed = [v for v in candidates if all(contains(r.specifier, v) for r in reqs)]
        if allowed:  # older releases of X go with older TensorFlow: this is the newest move there is
            return Match(newest_tf=str(allowed[0]), moving=(str(release), text), releases_read=read)
    return Match(releases_read=read, complete=len(releases) <= MAX_RELEASES)
