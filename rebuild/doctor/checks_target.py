"""Checks of the upgrade target: which release --to means, whether this interpreter and platform can install
it, and whether the packages the upgraded env keeps accept it."""

from __future__ import annotations

import json
from typing import Mapping

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from rebuild.util.versions import TargetSpec
from rebuild.util import uv as uvcmd
from rebuild.doctor import companions, numpyabi
from rebuild.doctor.context import (
    Context,
    Target,
    applies,
    contains,
    has_cap,
    numbers,
    python_ok,
    q,
    req_text,
    version_of,
)
from rebuild.doctor.findings import Finding, Move
from rebuild.doctor.findings import FindingId as F
from rebuild.env import graph, interpreters
from rebuild.errors import UserError
from rebuild.index import simple as indexinfo
from rebuild.index import tags as wheel_tags
from rebuild.knowledge.tf import CUDA_WHEELS, TF_DISTRIBUTIONS
from rebuild.util.versions import minor


def pick_target(ctx: Context, spec: TargetSpec) -> tuple[Target | None, list[Finding]]:
    """The release ``--to`` means on this index (the parser of util/versions, the index's listing), or findings why not."""
    files = ctx.files(ctx.tf, budget=False)
    if files is None:
        return None, [
            F.INDEX_UNREACHABLE.make(
                f"the package index could not be read: {ctx.tf} --to {spec.raw} was not checked",
                list(ctx.skipped[-1:]) or ["no index configured"],
                "check the network or the index settings, or pass --offline --find-links <folder of wheels>",
                fixed_by_rebuild=False,
                affects_new_env=False,
            )
        ]
    exact_pre = spec.kind == "exact" and bool(version_of(spec.raw)) and version_of(spec.raw).is_prerelease
    candidates = indexinfo.versions(files, prereleases=ctx.pre or exact_pre)
    if not candidates:
        return None, [
            F.TARGET_UNKNOWN.make(
                f"the index lists no release of {ctx.tf}: --to {spec.raw} was not checked",
                [
                    f"sources: {', '.join(ctx.sources.index_urls + ctx.sources.find_links) or 'none'}"
                    + (" (offline)" if ctx.sources.offline else "")
                ],
                "check --index-url / --find-links, or run without --offline",
                fixed_by_rebuild=False,
                affects_new_env=False,
            )
        ]
    if spec.specifier:
        wanted = SpecifierSet(spec.specifier)
        candidates = [v for v in candidates if wanted.contains(v, prereleases=True)]
    if not candidates:
        raise UserError(
            f"No {ctx.tf} release on the index matches --to {spec.raw}.",
            f"Use --to latest, or one of: {', '.join(map(str, indexinfo.versions(files)[:8]))}.",
        )
    return Target(ctx.tf, str(candidates[0]), files), []


def _real_interpreter(path: str, version: str) -> str:
    """The real file behind ``path`` (a pyenv shim is the version's interpreter): :func:`interpreters.real_path`."""
    return interpreters.real_path(path, version)


def _other_interpreters(ctx: Context, minors: list[str]) -> list[tuple[str, str]]:
    """(version, path) of local interpreters whose minor is in ``minors`` (ours + uv's discovery), each real
    interpreter once (its pyenv shims and links are the same interpreter)."""
    found: dict[str, tuple[str, str]] = {}
    try:
        for i in interpreters.discover():
            found.setdefault(_real_interpreter(str(i.path), i.version), (i.version, str(i.path)))
    except (OSError, UserError):
        pass
    try:
        res = uvcmd.run(
            ["python", "list", "--only-installed", "--output-format", "json"], check=False, env=ctx.environ, timeout=30
        )
        for item in json.loads(res.stdout or "[]") if res.returncode == 0 else []:
            path, version = item.get("path"), item.get("version")
            if path and version and item.get("implementation", "cpython") == "cpython":
                found.setdefault(_real_interpreter(str(path), str(version)), (str(version), str(path)))
    except (UserError, ValueError, OSError, AttributeError):
        pass
    out = [(v, p) for v, p in found.values() if minor(v) in minors]
    out.sort(key=lambda vp: numbers(vp[0]), reverse=True)
    return out


def check_interpreter(ctx: Context, target: Target) -> list[Finding]:
    if (
        target.distribution == ctx.tf
        and target.version == ctx.tf_version
        and ctx.new_python == ctx.interp.get("version")
    ):
        return []  # it is installed on this very interpreter
    tags = set(ctx.target_tags())
    want = version_of(target.version)
    pyver = ctx.new_python
    mine = [f for f in target.files if f.version == want and f.is_wheel and not f.yanked]
    ok = [f for f in mine if not f.tags.isdisjoint(tags) and python_ok(f.requires_python, pyver)]
    if ok:
        return []
    system, machine = ctx.plat.get("system", ""), ctx.plat.get("machine", "")
    supported = wheel_tags.python_versions_with_wheels(target.files, want, system, machine)
    newest = wheel_tags.newest_compatible(target.files, tags, pyver, prereleases=ctx.pre)
    what = f"{target.distribution} {target.version}"
    evidence = [
        f"this env runs Python {pyver} on {system} {machine}"
        + (f" ({ctx.plat.get('libc')} {ctx.plat.get('libc_version')})" if ctx.plat.get("libc") else "")
    ]
    newest_line = (
        f"newest {target.distribution} for Python {minor(pyver)} here: {newest}"
        if newest
        else f"no release of {target.distribution} installs on Python {minor(pyver)} here"
    )
    stay = f"`tfrebuild upgrade --env {q(ctx.loc.path)} --to {newest}`" if newest else ""
    if minor(pyver) in supported or not supported:
        # The Python is fine (or there is nothing for this platform at all): the platform is the problem.
        plats = sorted(
            {t.platform for f in mine for t in f.tags if t.interpreter == "cp" + "".join(map(str, numbers(pyver)[:2]))}
        )
        evidence += [
            f"{what} has wheels for: {', '.join(plats[:6]) or 'no ' + system + ' ' + machine + ' wheel'}",
            newest_line,
        ]
        return [
            F.PLATFORM_UNSUPPORTED.make(
                f"{what} has no wheel for this platform ({system} {machine})",
                evidence,
                (f"stay on {stay}" if stay else "use a machine or container the release has wheels for")
                + (" or a newer OS (the wheels need a newer glibc/macOS)" if plats else ""),
                fixed_by_rebuild=False,
                affects_new_env=True,
            )
        ]
    local = _other_interpreters(ctx, supported)
    evidence.insert(0, f"{what} has wheels for Python {', '.join(supported)} on {system} {machine}")
    evidence.append(f"interpreters here that qualify: {', '.join(f'{v} ({p})' for v, p in local[:5]) or 'none'}")
    evidence.append(newest_line)
    if local:
        fix = (
            f"rebuild the env on Python {minor(local[0][0])}: `tfrebuild upgrade --env {q(ctx.loc.path)} "
            f"--to {target.version} --python {minor(local[0][0])}`"
        )
    else:
        fix = (
            f"install a Python it supports (`uv python install {supported[-1]}` or `pyenv install {supported[-1]}`), "
            f"then `tfrebuild upgrade --env {q(ctx.loc.path)} --to {target.version} --python {supported[-1]}`"
        )
    if stay:
        fix += f"; or stay on Python {minor(pyver)} with {stay}"
    return [
        F.PYTHON_UNSUPPORTED.make(
            f"{what} has no wheel for Python {minor(pyver)} (pip says: No matching distribution found)",
            evidence,
            fix,
            fixed_by_rebuild=False,
            affects_new_env=True,
        )
    ]


def _kept(ctx: Context) -> dict[str, dict]:
    """Distributions the upgraded env keeps: requested ones and what they need (not expanded through TensorFlow)."""
    todo = [n for n in ctx.requested if n not in TF_DISTRIBUTIONS and n in ctx.env_dists]
    kept: dict[str, dict] = {}
    while todo:
        name = todo.pop()
        if name in kept or name not in ctx.env_dists:
            continue
        kept[name] = ctx.env_dists[name]
        if name in TF_DISTRIBUTIONS:
            continue  # its own dependencies are replaced by the target's
        extras = ctx.env_dists[name].get("provides_extra") or []
        for text in ctx.env_dists[name].get("requires") or []:
            req = graph.parse(text)
            if req is None:
                continue
            child = canonicalize_name(req.name)
            if child in ctx.env_dists and applies(req, ctx.markers, extras):
                todo.append(child)
    return kept


def _tf_requirements(ctx: Context, dist: dict, markers: Mapping[str, str]) -> list[Requirement]:
    return [r for r in ctx.requirements_of(dist, markers) if canonicalize_name(r.name) in TF_DISTRIBUTIONS]


def check_conflicts(ctx: Context, target: Target) -> list[Finding]:
    """Installed packages the upgraded env keeps whose requirements clash with the target's."""
    if target.requires is None:
        return []
    kept = _kept(ctx)
    return _direct_conflicts(ctx, target, kept) + _shared_conflicts(ctx, target, kept)


def _direct_conflicts(ctx: Context, target: Target, kept: dict[str, dict]) -> list[Finding]:
    """Kept packages whose own requirement on TensorFlow excludes the target."""
    out: list[Finding] = []
    own = _driven_own(ctx)
    for name, d in sorted(kept.items()):
        if name in TF_DISTRIBUTIONS or name == own:  # a driven project's TF requirement moves with the upgrade
            continue
        for req in _tf_requirements(ctx, d, ctx.new_markers):
            if req.specifier and not contains(req.specifier, target.version):
                out.append(_direct_conflict(ctx, target, name, d, req))
    return out


def _driven_own(ctx: Context) -> str:
    """The own package of a project tfrebuild drives (its TensorFlow requirement is upgraded with the env)."""
    if ctx.loc.bare:
        return ""
    from rebuild.project.detect import detect

    found = detect(ctx.loc.path)
    return found.name if found is not None and found.drivable else ""


def _direct_conflict(ctx: Context, target: Target, name: str, d: dict, req: Requirement) -> Finding:
    py, env = q(ctx.python), q(ctx.loc.path)
    what = f"{target.distribution} {target.version}"
    dep = canonicalize_name(req.name)
    match = companions.search(ctx, name, target)
    accepting = match.accepting
    evidence = [f"{name} {d['version']} requires {req_text(req)}", f"target: {what}"]
    if dep != target.distribution:
        evidence.append(
            f"it names `{dep}`, not `{target.distribution}`: upgrading {target.distribution} "
            f"alone leaves {dep} {ctx.env_dists.get(dep, {}).get('version', '(not installed)')} "
            "installed beside it"
        )
    moving = match.moving if not accepting else None
    if accepting:
        evidence.append(f"{name} {accepting[0]} accepts it ({accepting[1]})")
    elif moving:
        evidence.append(
            f"no release of {name} on the index accepts {target.version}; the newest {target.distribution} "
            f"a release of it accepts is {match.newest_tf}: {name} {moving[0]} ({moving[1]})"
        )
    else:
        searched = "" if match.complete else f" (of its {match.releases_read} newest releases)"
        evidence.append(
            f"no release of {name} on the index{searched} accepts {target.version} or any "
            f"{target.distribution} newer than the installed {ctx.tf_version}"
        )
    if accepting and name not in ctx.requested:
        return F.COMPANION_MOVES.make(
            f"{name} {d['version']} must move to {accepting[0]} with {what}",
            evidence,
            f"`tfrebuild upgrade --env {env} --to {target.version}` moves it"
            + (f" once {dep} moves too" if dep != target.distribution else "")
            + f"; an in-place `pip install -U {target.distribution}` leaves it broken",
            fixed_by_rebuild=dep == target.distribution,
            affects_new_env=dep != target.distribution,
        )
    fixed = bool(accepting) and dep == target.distribution
    drop = f"drop {name} from the env (`uv pip uninstall --python {py} {name}`)"
    if fixed:
        fix = (
            f"upgrade both together: `tfrebuild upgrade --env {env} --to {target.version}` takes {name} {accepting[0]}"
        )
    elif accepting:
        fix = (
            f"install `{dep}` instead of `{target.distribution}` so both move together: "
            f"`uv pip uninstall --python {py} {target.distribution} {dep}` then `uv pip install "
            f"--python {py} {q(dep + '==' + target.version)} {q(name + '==' + accepting[0])}`"
        )
    elif moving and dep == target.distribution:
        fix = (
            f"`tfrebuild upgrade --env {env} --to {match.newest_tf}` (the newest {target.distribution} a "
            f"release of {name} accepts; it takes {name} {moving[0]}), or {drop}"
        )
    else:
        fix = f"keep {target.distribution} {ctx.tf_version} (nothing to do), or {drop}"
    return F.TARGET_BLOCKED.make(
        f"{name} {d['version']} does not allow {what}",
        evidence,
        fix,
        fixed_by_rebuild=fixed,
        affects_new_env=not fixed,
        holders={name: d["version"]},
    )


def _shared_conflicts(ctx: Context, target: Target, kept: dict[str, dict]) -> list[Finding]:
    """Through a shared dependency: the target's requirement vs what kept packages require of the same project."""
    extras = []
    installed_tf = ctx.env_dists.get(target.distribution)
    if installed_tf and any(n in ctx.env_dists for pair in CUDA_WHEELS.values() for n in pair):
        extras = [e for e in installed_tf.get("provides_extra") or [] if "cuda" in e]
    out: list[Finding] = []
    for text in target.requires or []:
        treq = graph.parse(text)
        if treq is None or not applies(treq, ctx.new_markers, extras):
            continue
        dep = canonicalize_name(treq.name)
        if dep in TF_DISTRIBUTIONS or dep not in ctx.env_dists:
            continue
        holders = [
            (name, d, req)
            for name, d in sorted(kept.items())
            if name not in TF_DISTRIBUTIONS and name != dep
            for req in ctx.requirements_of(d, ctx.new_markers)
            if canonicalize_name(req.name) == dep and req.specifier
        ]
        if holders:
            out += _shared_conflict(ctx, target, treq, dep, holders)
    return out


def _dependency_candidates(ctx: Context, dep: str) -> list | None:
    """Versions of ``dep`` the new env could install (None: the index could not say)."""
    files = ctx.files(dep)
    if files is None:
        return None
    tags = set(ctx.target_tags())
    usable = [
        f
        for f in files
        if not f.yanked and f.is_wheel and not f.tags.isdisjoint(tags) and python_ok(f.requires_python, ctx.new_python)
    ]
    return indexinfo.versions(usable or files, prereleases=ctx.pre)


def _shared_conflict(
    ctx: Context, target: Target, treq: Requirement, dep: str, holders: list[tuple[str, dict, Requirement]]
) -> list[Finding]:
    env = q(ctx.loc.path)
    what = f"{target.distribution} {target.version}"
    installed = ctx.env_dists[dep]["version"]
    specs = [treq.specifier] + [r.specifier for _, _, r in holders]
    both = all(contains(s, installed) for s in specs)
    capped = [h for h in holders if has_cap(h[2].specifier)]
    # NumPy: a compiled package built for NumPy 1 does not accept NumPy 2, whatever its Requires-Dist says
    numpy1 = (
        _numpy1_builds(ctx, holders)
        if dep == "numpy" and (not both or capped or any(numpyabi.compiled(d) for _, d, _ in holders))
        else {}
    )
    capped += [h for h in holders if h[0] in numpy1 and h not in capped]
    if both and not capped:
        return []
    candidates = _dependency_candidates(ctx, dep)
    shared = [v for v in candidates or [] if all(contains(s, v) for s in specs) and not (numpy1 and v.major >= 2)]
    # the minimal strategy keeps a moved dependency below its next major when that resolves: say what it takes
    same_major = [v for v in shared if version_of(installed) is not None and v.major == version_of(installed).major]
    shared = same_major + [v for v in shared if v not in same_major]
    evidence = _unique(
        [f"{what} requires {req_text(treq)}"]
        + [f"{n} {d['version']} requires {req_text(r)}" for n, d, r in holders]
        + [f"installed: {dep} {installed}"]
        + list(numpy1.values())
    )
    accepting = _unique([n for n, _, _ in holders if n not in numpy1])
    accept = f"{', '.join(accepting)} accept{'s' if len(accepting) == 1 else ''} it" if accepting else ""
    if numpy1:
        keeps = "keeps" if len(numpy1) == 1 else "keep"
        accept += ("; " if accept else "") + f"{', '.join(numpy1)} (built for NumPy 1) {keeps} it below 2"
    if both:
        matters = (
            bool(
                candidates
                and any(
                    contains(treq.specifier, v)
                    and not all(contains(r.specifier, v) and not (n in numpy1 and v.major >= 2) for n, _, r in capped)
                    for v in candidates
                )
            )
            if candidates is not None
            else not has_cap(treq.specifier)
        )
        if not matters:
            return []
        names = ", ".join(_unique([f"{n} {d['version']}" for n, d, _ in capped]))
        return [
            F.CAPPED_DEPENDENCY.make(
                f"{what} is compatible with {names} via {dep} {installed}: keep {dep} below the cap",
                evidence,
                f"`tfrebuild upgrade --env {env} --to {target.version}` keeps {dep} {installed}; an in-place "
                f"`pip install -U {target.distribution}` may take a newer {dep} that {names} does not accept",
                fixed_by_rebuild=True,
                affects_new_env=False,
            )
        ]
    if shared:
        return [
            F.DEPENDENCY_MOVES.make(
                f"{dep} must move {installed} → {shared[0]} for {what}" + (f"; {accept}" if accept else ""),
                evidence
                + [
                    f"newest {dep} every requirement accepts"
                    + (
                        f" within {dep} {version_of(installed).major}.x (what the upgrade keeps)"
                        if same_major and shared[0] in same_major
                        else ""
                    )
                    + f": {shared[0]}"
                ],
                f"`tfrebuild upgrade --env {env} --to {target.version}` moves it",
                fixed_by_rebuild=True,
                affects_new_env=False,
                move=Move(dep, installed, str(shared[0])),
            )
        ]
    if candidates is not None:
        blockers = [
            (n, d, r)
            for n, d, r in holders
            if not any(contains(treq.specifier, v) and contains(r.specifier, v) for v in candidates)
        ]
        blockers = blockers or holders
        if numpy1:
            blockers = [h for h in holders if h[0] in numpy1] or blockers
        names = ", ".join(_unique([f"{n} {d['version']}" for n, d, _ in blockers]))
        return [
            F.DEPENDENCY_CONFLICT.make(
                f"{names} and {what} need incompatible versions of {dep}",
                evidence + [f"no {dep} release on the index satisfies all of them"],
                f"upgrade {', '.join(_unique([n for n, _, _ in blockers]))} too: `tfrebuild upgrade --env {env} "
                f"--to {target.version} --strategy eager`, or choose an older --to",
                fixed_by_rebuild=False,
                affects_new_env=True,
                holders={n: d["version"] for n, d, _ in blockers},
            )
        ]
    return [
        F.DEPENDENCY_UNVERIFIED.make(
            f"{dep} must move for {what}; whether {', '.join(_unique([n for n, _, _ in holders]))} accept it "
            "was not checked",
            evidence + [f"could not list {dep} on the index"],
            f"run `tfrebuild plan --env {env} --to {target.version}` to let the resolver decide",
            fixed_by_rebuild=False,
            affects_new_env=True,
        )
    ]


def _unique(items: list[str]) -> list[str]:
    """``items`` without repeats, in order (a package with several requirements on one dependency is named once)."""
    return list(dict.fromkeys(items))


def _numpy1_builds(ctx: Context, holders: list[tuple[str, dict, Requirement]]) -> dict[str, str]:
    """Holders whose installed release was built for NumPy 1: name -> why (:mod:`rebuild.doctor.numpyabi`)."""
    out: dict[str, str] = {}
    for name, d, _ in holders:
        if name not in out:
            major, why = numpyabi.built_for(ctx, name, d)
            if major == 1:
                out[name] = why
    return out
