"""Wheel tags: which wheels an interpreter and platform accept, and which Pythons a release serves.

A :class:`Target` is the interpreter and platform wheels must suit -- usually a
probed venv (:meth:`Target.from_probe`) or the machine a profile was taken on
(:func:`profile_target`), not the running tfrebuild. :func:`supported_tags` lists
the tags it accepts, most preferred first; :func:`wheel_supports`,
:func:`newest_compatible` and :func:`python_versions_with_wheels` judge the files
:func:`rebuild.index.simple.list_files` found.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags, mac_platforms
from packaging.version import Version

from rebuild.errors import UserError

if TYPE_CHECKING:
    from rebuild.env.profile import Profile
    from rebuild.index.simple import FileInfo

__all__ = [
    "LATEST_KNOWN_MINOR",
    "OLDEST_REPORTED_MINOR",
    "Target",
    "installable",
    "linux_arch",
    "newest_compatible",
    "profile_target",
    "python_versions_with_wheels",
    "supported_tags",
    "wheel_supports",
]

#: Newest CPython minor we know of; used to expand ``abi3`` / ``py3-none-any``
#: wheels ("3.X and newer") into a finite list.
LATEST_KNOWN_MINOR = 14
#: Oldest CPython minor reported when a wheel claims "any Python 3".
OLDEST_REPORTED_MINOR = 8


@dataclass(frozen=True)
class Target:
    """The interpreter and platform wheels must suit (usually a probed venv, not us)."""

    version: str  # "3.11.7"
    implementation: str = "cpython"
    abiflags: str = ""
    soabi: str = ""
    system: str = "Linux"
    machine: str = "x86_64"
    libc: str = "glibc"
    libc_version: str = ""
    sysconfig_platform: str = ""
    mac_ver: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "Target":
        """Build from a dict with (a superset of) the field names; ``None`` becomes ``""``."""
        kwargs = {}
        for name in cls.__dataclass_fields__:
            if name in data:
                value = data[name]
                kwargs[name] = "" if value is None else str(value)
        if not kwargs.get("version"):
            raise ValueError("a Target needs the Python version")
        return cls(**kwargs)

    @classmethod
    def from_probe(cls, interp: Mapping[str, Any], platform: Mapping[str, Any]) -> "Target":
        """Build from the probe's report (its ``interpreter`` and ``platform``: :class:`rebuild.env.probed.Probed`)."""
        merged: dict[str, Any] = {}
        merged.update(platform)
        merged.update(interp)
        if interp.get("gil_disabled") and "t" not in str(merged.get("abiflags") or ""):
            merged["abiflags"] = str(merged.get("abiflags") or "") + "t"
        return cls.from_mapping(merged)

    @classmethod
    def current(cls) -> "Target":
        """The running interpreter (mostly for tests and diagnostics)."""
        import platform
        import sysconfig

        libc, libc_version = "", ""
        if sys.platform.startswith("linux"):
            try:
                found = os.confstr("CS_GNU_LIBC_VERSION") or ""
            except (AttributeError, ValueError, OSError):
                found = ""
            if found:
                libc, _, libc_version = found.partition(" ")
            else:
                libc, libc_version = platform.libc_ver()
        return cls(
            version="%d.%d.%d" % sys.version_info[:3],
            implementation=sys.implementation.name,
            abiflags=getattr(sys, "abiflags", "") or "",
            soabi=sysconfig.get_config_var("SOABI") or "",
            system=platform.system(),
            machine=platform.machine(),
            libc=libc,
            libc_version=libc_version,
            sysconfig_platform=sysconfig.get_platform(),
            mac_ver=platform.mac_ver()[0] if sys.platform == "darwin" else "",
        )

    @property
    def python_version(self) -> tuple[int, int]:
        parts = re.findall(r"\d+", self.version)
        if len(parts) < 2:
            raise ValueError(f"not a Python version: {self.version!r}")
        return int(parts[0]), int(parts[1])


_LINUX_ARCH = {
    "amd64": "x86_64",
    "x64": "x86_64",
    "x86_64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "i686": "i686",
    "x86": "i686",
}
_MANYLINUX_LEGACY = {
    (2, 17): ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
    (2, 12): ("manylinux2010", {"x86_64", "i686"}),
    (2, 5): ("manylinux1", {"x86_64", "i686"}),
}


def linux_arch(machine: str) -> str:
    return _LINUX_ARCH.get(machine.lower(), machine.lower())


def _mac_arch(machine: str) -> str:
    m = machine.lower()
    return {"aarch64": "arm64", "amd64": "x86_64", "i686": "i386", "x86": "i386"}.get(m, m)


def _windows_platform(machine: str, sysconfig_platform: str) -> str:
    sp = sysconfig_platform.lower()
    if sp.startswith("win"):
        return sp.replace("-", "_").replace(".", "_")
    m = machine.lower()
    if m in ("amd64", "x86_64", "x64"):
        return "win_amd64"
    if m in ("arm64", "aarch64"):
        return "win_arm64"
    return "win32"


def _version_pair(text: str) -> tuple[int, int] | None:
    nums = re.findall(r"\d+", text or "")
    if len(nums) >= 2:
        return int(nums[0]), int(nums[1])
    if len(nums) == 1:
        return int(nums[0]), 0
    return None


def _platforms(target: Target) -> list[str]:
    system = (target.system or "").lower()
    if system == "linux" or (not system and target.sysconfig_platform.startswith("linux")):
        arch = linux_arch(target.machine or target.sysconfig_platform.rpartition("-")[2])
        # Like packaging >= 24: a locally built linux_* wheel is the most specific match.
        out = [f"linux_{arch}"]
        libc = (target.libc or "").lower()
        pair = _version_pair(target.libc_version)
        if libc == "musl" and pair and pair[0] == 1:
            out += [f"musllinux_1_{n}_{arch}" for n in range(pair[1], -1, -1)]
        elif libc in ("glibc", "") and pair and pair[0] == 2:
            oldest = 5 if arch in ("x86_64", "i686") else 17
            for minor in range(pair[1], oldest - 1, -1):
                out.append(f"manylinux_2_{minor}_{arch}")
                legacy = _MANYLINUX_LEGACY.get((2, minor))
                if legacy and arch in legacy[1]:
                    out.append(f"{legacy[0]}_{arch}")
        return out
    if system == "darwin" or target.sysconfig_platform.startswith("macosx"):
        arch = _mac_arch(target.machine or target.sysconfig_platform.rpartition("-")[2])
        pair = _version_pair(target.mac_ver)
        if pair is None:
            sp = target.sysconfig_platform.split("-")
            pair = _version_pair(sp[1]) if len(sp) >= 3 else None
        if pair is None:
            pair = (11, 0) if arch == "arm64" else (10, 9)
        return list(mac_platforms(pair, arch))
    if system == "windows" or target.sysconfig_platform.startswith("win"):
        return [_windows_platform(target.machine, target.sysconfig_platform)]
    fallback = target.sysconfig_platform or f"{system}-{target.machine}"
    return [re.sub(r"[-.]", "_", fallback.lower())]


def supported_tags(target: Target) -> list[Tag]:
    """Wheel tags ``target`` accepts, most preferred first (like ``packaging.tags.sys_tags``).

    Computed once per distinct target (a plan asks several times); each call gets its own list.
    """
    return list(_supported_tags(target))


@functools.lru_cache(maxsize=64)
def _supported_tags(target: Target) -> tuple[Tag, ...]:
    major, minor = target.python_version
    pyver = (major, minor)
    platforms = _platforms(target)
    impl = (target.implementation or "cpython").lower()
    if impl == "cpython":
        threaded = "t" in (target.abiflags or "") and pyver >= (3, 13)
        debug = "d" in (target.abiflags or "")
        nodot = f"{major}{minor}"
        abis = [f"cp{nodot}{'t' if threaded else ''}{'d' if debug else ''}"]
        if debug:
            abis.append(f"cp{nodot}{'t' if threaded else ''}")
        abis += ["abi3", "none"] if not threaded else ["none"]
        tags = list(cpython_tags(pyver, abis, platforms))
        interpreter = f"cp{nodot}"
    else:
        short = {"pypy": "pp", "ironpython": "ip", "jython": "jy"}.get(impl, impl)
        interpreter = f"{short}{major}{minor}"
        abis = []
        if target.soabi:  # "pypy310-pp73-x86_64-linux-gnu" -> "pypy310_pp73"
            abis.append(re.sub(r"[-.]", "_", "-".join(target.soabi.split("-")[:2])))
        abis.append("none")
        tags = list(generic_tags(interpreter, abis, platforms))
    seen = set(tags)
    tags += [t for t in compatible_tags(pyver, interpreter, platforms) if t not in seen]
    return tuple(tags)


def _tagset(tags: Iterable[Tag]) -> frozenset[Tag]:
    return tags if isinstance(tags, frozenset) else frozenset(tags)


def wheel_supports(file: FileInfo, tags: Iterable[Tag]) -> bool:
    """True if ``file`` is a wheel installable with one of ``tags``."""
    return file.is_wheel and not file.tags.isdisjoint(_tagset(tags))


def _platform_matches(platform_tag: str, system: str, machine: str) -> bool:
    if platform_tag == "any":
        return True
    s = system.lower()
    if s == "linux":
        arch = linux_arch(machine)
        return platform_tag.startswith(("manylinux", "musllinux", "linux_")) and platform_tag.endswith("_" + arch)
    if s == "darwin":
        if not platform_tag.startswith("macosx_"):
            return False
        arch = _mac_arch(machine)
        groups = {
            "arm64": ("arm64", "universal2"),
            "x86_64": ("x86_64", "intel", "fat64", "fat3", "universal2", "universal"),
            "i386": ("i386", "intel", "fat", "fat3", "fat32", "universal"),
        }.get(arch, (arch,))
        return any(platform_tag.endswith("_" + g) for g in groups)
    if s == "windows":
        return platform_tag == _windows_platform(machine, "")
    return platform_tag.endswith("_" + machine.lower())


def _minor_allowed(minor: int, requires_python: str | None) -> bool:
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True
    return any(spec.contains(f"3.{minor}.{patch}", prereleases=True) for patch in (0, 99))


def python_versions_with_wheels(
    files: Iterable[FileInfo], version: Version | str, system: str, machine: str
) -> list[str]:
    """CPython minors ("3.9", ...) with a wheel of release ``version`` for ``system``/``machine``.

    ``cp39-cp39`` counts for 3.9 only; ``cp39-abi3`` and ``py39`` count for 3.9
    and newer, and ``py3`` for every minor (both up to :data:`LATEST_KNOWN_MINOR`,
    further limited by the file's Requires-Python): best effort. Yanked files
    are ignored.
    """
    want = Version(str(version))
    files = [f for f in files if f.is_wheel and not f.yanked and f.version == want]
    explicit = set()
    for f in files:
        for tag in f.tags:
            m = re.fullmatch(r"cp3(\d+)", tag.interpreter)
            if m:
                explicit.add(int(m.group(1)))
    ceiling = max([LATEST_KNOWN_MINOR, sys.version_info[1], *explicit])
    minors: set[int] = set()
    for f in files:
        for tag in f.tags:
            if not _platform_matches(tag.platform, system, machine):
                continue
            m = re.fullmatch(r"(cp|py)3(\d*)", tag.interpreter)
            if not m:
                continue  # pypy, python 2, ...
            kind, digits = m.group(1), m.group(2)
            if kind == "cp" and digits and tag.abi not in ("abi3", "abi3t"):
                minors.add(int(digits))
                continue
            low = int(digits) if digits else OLDEST_REPORTED_MINOR
            minors.update(n for n in range(low, ceiling + 1) if _minor_allowed(n, f.requires_python))
    return [f"3.{n}" for n in sorted(minors)]


def installable(file: FileInfo, tags: Iterable[Tag], python_version: str) -> bool:
    """True if ``file`` is a non-yanked wheel for ``tags`` whose Requires-Python admits ``python_version``."""
    if file.yanked or not wheel_supports(file, tags):
        return False
    if file.requires_python:
        try:
            return SpecifierSet(file.requires_python).contains(python_version, prereleases=True)
        except InvalidSpecifier:
            pass  # like pip: an unreadable Requires-Python does not exclude the file
    return True


def newest_compatible(
    files: Iterable[FileInfo],
    tags: Iterable[Tag],
    requires_python_for: str,
    *,
    prereleases: bool = False,
) -> Version | None:
    """Newest non-yanked release with a wheel for ``tags`` whose Requires-Python admits
    ``requires_python_for`` (e.g. "3.11.7"); ``None`` if there is none. Sdists are ignored."""
    tagset = _tagset(tags)
    best: Version | None = None
    for f in files:
        if f.version.is_prerelease and not prereleases:
            continue
        if not installable(f, tagset, requires_python_for):
            continue
        if best is None or f.version > best:
            best = f.version
    return best


def profile_target(profile: "Profile") -> Target:
    """The wheel-tag target of the machine and interpreter a profile was taken on."""
    data = dict(vars(profile.platform))
    data.update(
        {k: v for k, v in vars(profile.interpreter).items() if k in ("version", "implementation", "abiflags", "soabi")}
    )
    try:
        return Target.from_mapping(data)
    except ValueError as exc:
        raise UserError("The profile does not record its Python version.", "Take a new snapshot.") from exc
