"""Can a profile made on one machine be applied on this one, and what to do when its lock does not fit.

* :func:`check_portability`: the profile's interpreter and platform against the probed target,
  and every locked package's wheel tags against what the target interpreter accepts;
* :func:`check_urls`: plain-http indexes and files are refused (unless the user trusts the network);
* :func:`re_resolve` (``apply --resolve``): the profile's requested packages resolved for this
  machine with its pins as preferences, the nearest TensorFlow with a wheel here first.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from rebuild.core import lockfile as locks
from rebuild.core import changes as planning
from rebuild.core import resolve
from rebuild.env import graph
from rebuild.env import profile as prof
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.index import simple as indexinfo
from rebuild.index import tags as wheeltags
from rebuild.index.tags import profile_target
from rebuild.knowledge.tf import SEED_PACKAGES, TF_DISTRIBUTIONS

if TYPE_CHECKING:
    from packaging.tags import Tag


@dataclass
class Portability:
    profile: str  # "CPython 3.11.7 on Linux x86_64 (glibc 2.36)"
    here: str
    differences: list[str] = field(default_factory=list)
    incompatible: list[str] = field(default_factory=list)  # "numpy 1.24.3: numpy-1.24.3-cp311-...whl"
    from_source: list[str] = field(default_factory=list)  # packages only an sdist fits: built here

    @property
    def same(self) -> bool:
        return not self.differences


def describe(t: wheeltags.Target) -> str:
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get((t.implementation or "cpython").lower(), t.implementation)
    libc = f" ({t.libc} {t.libc_version})" if t.libc else ""
    return f"{impl} {t.version} on {t.system or '?'} {t.machine or '?'}{libc}"


def _insecure(url: str) -> bool:
    return url.strip().lower().startswith("http://")


def index_urls(profile: prof.Profile) -> list[str]:
    """Every index and find-links location a profile names (credentials redacted), for the user to see."""
    i = profile.index
    unused = " (not used: the profile says no-index)" if i.no_index else ""
    urls = (
        ([f"index: {i.index_url}{unused}"] if i.index_url else [])
        + [f"extra index: {u}{unused}" for u in i.extra_index_urls]
        + [f"find-links: {u}" for u in i.find_links]
    )
    return [indexconf.redact(u) for u in urls]


def check_urls(profile: prof.Profile, lock: locks.Lock | None, allow_insecure: bool) -> None:
    """Refuse plain-http indexes and files: anyone on the way could swap the packages (hashes aside)."""
    if allow_insecure:
        return
    i = profile.index
    bad = [u for u in ([i.index_url] + i.extra_index_urls + i.find_links) if u and _insecure(u)]
    if lock is not None:
        bad += [f.url for p in lock.packages for f in p.files if _insecure(f.url)]
    if bad:
        shown = sorted({indexconf.redact(u) for u in bad})
        raise UserError(
            f"The profile uses {len(shown)} plain-http location(s): {', '.join(shown[:3])}"
            f"{' ...' if len(shown) > 3 else ''}. Nothing was built.",
            "Packages fetched over http can be replaced on the way. Use https (file:// and local "
            "folders are fine), or pass --allow-insecure-index if you trust the network.",
            details="\n".join(shown),
        )


def _markers(data: Probed) -> dict[str, str]:
    return graph.marker_environment(data.interpreter, data.platform)


def admits(requires_python: str, version: str) -> bool:
    """``Requires-Python`` admits ``version`` (like pip, an unreadable one excludes nothing)."""
    try:
        return SpecifierSet(requires_python).contains(version, prereleases=True)
    except InvalidSpecifier:
        return True


def check_portability(lock: locks.Lock, profile: prof.Profile, data: Probed) -> Portability:
    """Compare the profile's interpreter and platform with the probed target; check every locked wheel's tags."""
    here = wheeltags.Target.from_probe(data.interpreter, data.platform)
    there = profile_target(profile)
    result = Portability(describe(there), describe(here))
    if there.python_version != here.python_version:
        result.differences.append(
            f"Python {'.'.join(map(str, there.python_version))} → {'.'.join(map(str, here.python_version))}"
        )
    if (there.implementation or "cpython").lower() != (here.implementation or "cpython").lower():
        result.differences.append(f"implementation {there.implementation} → {here.implementation}")
    if there.system and there.system != here.system:
        result.differences.append(f"OS {there.system} → {here.system}")
    if there.machine and wheeltags.linux_arch(there.machine) != wheeltags.linux_arch(here.machine):
        result.differences.append(f"architecture {there.machine} → {here.machine}")
    if there.libc and (there.libc, there.libc_version) != (here.libc, here.libc_version):
        older = ""
        try:
            if there.libc == here.libc and Version(here.libc_version) < Version(there.libc_version):
                older = " (older here: wheels built for the newer one do not load)"
        except InvalidVersion:
            pass
        result.differences.append(f"libc {there.libc} {there.libc_version} → {here.libc} {here.libc_version}{older}")
    tags = set(wheeltags.supported_tags(here))
    env = _markers(data)
    requires_python = lock.data.get("requires-python")
    if isinstance(requires_python, str) and requires_python and not admits(requires_python, here.version):
        result.incompatible.append(f"the whole lock requires Python {requires_python}")
    for pkg in lock.packages:
        if pkg.marker:
            try:
                if not Marker(pkg.marker).evaluate(env):
                    continue  # not for this platform: uv skips it too
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                pass
        if pkg.requires_python and not admits(pkg.requires_python, here.version):
            result.incompatible.append(f"{pkg.name} {pkg.version}: requires Python {pkg.requires_python}")
            continue
        if pkg.source is not None:
            continue  # installed from its own source (a folder, a file, a repository): no wheel to fit
        fits = False
        for wheel in pkg.wheels:
            try:
                fits = fits or not tags.isdisjoint(parse_wheel_filename(wheel.filename)[3])
            except ValueError:
                continue
        if fits:
            continue
        if pkg.sdist is not None:
            result.from_source.append(f"{pkg.name} {pkg.version}")
        else:
            result.incompatible.append(f"{pkg.name} {pkg.version}: {', '.join(w.filename for w in pkg.wheels)}")
    return result


def portability_error(p: Portability, profile_minor: str) -> UserError:
    names = [line.split(":")[0] for line in p.incompatible]
    what = "; ".join(p.differences) or "the same interpreter and platform"
    return UserError(
        f"{len(p.incompatible)} locked distribution(s) have no wheel for this machine ({p.here}): "
        f"{', '.join(names)}. The profile was made on {p.profile} ({what}). Nothing was built.",
        f"Apply with --python {profile_minor} if that Python is installed here, or add --resolve to re-resolve the "
        "requested packages for this machine, keeping versions as close as possible (the differences are shown "
        "before anything is built).",
        details="No matching wheel:\n" + "\n".join(f"  {line}" for line in p.incompatible),
    )


def tf_distribution(pins: dict[str, str], profile: prof.Profile) -> str:
    if profile.tensorflow.distribution and profile.tensorflow.distribution in pins:
        return profile.tensorflow.distribution
    return next((n for n in TF_DISTRIBUTIONS if n in pins), "")


def check_portability_no_lock(profile: prof.Profile, data: Probed) -> Portability:
    """Differences only (there is no lock to check wheel tags against)."""
    empty = locks.Lock({"packages": []}, [], "", None)
    return check_portability(empty, profile, data)


# --------------------------------------------------------------------------- re-resolution (--resolve)


def _tf_candidates(
    tf: str, pinned: str, index: prof.Index, offline: bool, tags: set[Tag], here_version: str
) -> list[str]:
    """TensorFlow versions with a wheel for this machine, nearest to ``pinned`` first (newer before older)."""
    try:
        files = indexinfo.list_files(
            tf,
            indexinfo.Sources(
                index_urls=[] if index.no_index else [index.index_url or indexconf.PYPI] + index.extra_index_urls,
                find_links=index.find_links,
                offline=offline,
            ),
        )
    except (UserError, OSError):
        return [pinned]
    ok: set[Version] = set()
    for f in files:
        if f.yanked or not wheeltags.wheel_supports(f, tags):
            continue
        if not f.requires_python or admits(f.requires_python, here_version):
            ok.add(f.version)
    try:
        base = Version(pinned)
    except InvalidVersion:
        return sorted(map(str, ok), reverse=True)[:1] or [pinned]
    ok = {v for v in ok if not v.is_prerelease or base.is_prerelease}
    newer = sorted(v for v in ok if v >= base)
    older = sorted((v for v in ok if v < base), reverse=True)
    return [str(v) for v in newer + older]


def re_resolve(
    profile: prof.Profile,
    pins: dict[str, str],
    python: Path,
    data: Probed,
    index: prof.Index,
    *,
    offline: bool,
    log: Path | None,
) -> tuple[locks.Lock, list[planning.Change]]:
    """Resolve the profile's requested packages for ``python`` with its pins as preferences."""
    tf = tf_distribution(pins, profile)
    seeds = [n for n in SEED_PACKAGES if n in pins]
    requested = sorted({canonicalize_name(r) for r in profile.requested} - set(TF_DISTRIBUTIONS) | set(seeds))
    if not requested and not tf:
        requested = sorted(pins)
    inputs = resolve.Inputs(
        python=python,
        tf_distribution=tf,
        requested=requested,
        pins=dict(pins),
        constraints=dict(profile.constraints),
        index=index,
        offline=offline,
        log=log,
    )
    explanation = ""
    if tf:
        here = wheeltags.Target.from_probe(data.interpreter, data.platform)
        tags = set(wheeltags.supported_tags(here))
        resolved = None
        for version in _tf_candidates(tf, pins[tf], index, offline, tags, here.version)[:6]:
            try:
                resolved = resolve.resolve(inputs, version)
                break
            except resolve.ResolutionFailed as exc:
                explanation = exc.explanation
        if resolved is None:
            raise UserError(
                f"No {tf} near {pins[tf]} resolves for Python {here.version} together with the "
                "profile's requested packages.",
                "Relax the profile's [constraints], or build on the profile's Python with --python.",
                exit_code=1,
                details="uv says:\n" + explanation if explanation else "",
            )
        new_pins, text = resolved.pins, resolved.pylock
    else:
        with tempfile.TemporaryDirectory(prefix="tfrebuild-apply-") as tmp:
            try:
                new_pins, _ = resolve.compile_requirements(inputs, requested, [], Path(tmp))
                text = resolve.lock(inputs, new_pins, Path(tmp))
            except resolve.ResolutionFailed as exc:
                raise UserError(
                    "The profile's requested packages do not resolve for this machine.",
                    "Relax the profile's [constraints], or build on the profile's Python with --python.",
                    exit_code=1,
                    details="uv says:\n" + exc.explanation,
                ) from None
    lock = locks.parse_lock(text, "the re-resolved lock")
    changes = [
        planning.Change(n, a, b, k, n in set(profile.requested), "re-resolved for this machine")
        for n, a, b, k in planning.diff(pins, lock.pins())
    ]
    return lock, changes
