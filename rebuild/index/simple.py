"""Read what a package index offers, without resolving or installing anything.

uv does the resolution. This module only *reads* indexes so tfrebuild can
explain itself:

* which Python versions a TensorFlow release supports (from its wheel file
  names) -- :func:`python_versions_with_wheels`;
* which releases exist, and which are newer than the installed one --
  :func:`versions`, :func:`newer_versions`, :func:`newest_compatible`;
* what a wheel depends on (``Requires-Dist``) without installing it --
  :func:`read_metadata`.

Sources are PEP 691 JSON / PEP 503 HTML "simple" indexes over http(s),
``file://`` simple indexes (local mirrors: ``<dir>/<project>/index.html``),
and ``--find-links`` locations (local folders, local HTML files, or flat HTML
pages over http(s)). Credentials embedded in URLs are used for HTTP basic
auth and are never shown in messages (``user:****@host``).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import html.parser
import json
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags, mac_platforms
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from rebuild.errors import UserError
from rebuild.index import http
from rebuild.index.http import redact_url

__all__ = [
    "FileInfo",
    "MetadataUnavailable",
    "Sources",
    "Target",
    "list_files",
    "newer_versions",
    "newest_compatible",
    "python_versions_with_wheels",
    "read_metadata",
    "redact_url",
    "supported_tags",
    "versions",
    "wheel_supports",
]

#: Newest CPython minor we know of; used to expand ``abi3`` / ``py3-none-any``
#: wheels ("3.X and newer") into a finite list.
LATEST_KNOWN_MINOR = 14
#: Oldest CPython minor reported when a wheel claims "any Python 3".
OLDEST_REPORTED_MINOR = 8

_JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json")
_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


class MetadataUnavailable(Exception):
    """A wheel's metadata cannot be read without downloading the whole wheel (or at all)."""


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """One distribution file offered by an index or a find-links location."""

    filename: str
    url: str  # without the ``#sha256=...`` fragment; may be file://
    version: Version
    requires_python: str | None
    yanked: bool
    is_wheel: bool
    tags: frozenset[Tag]  # empty for sdists
    hashes: dict[str, str] = field(default_factory=dict, hash=False)
    has_metadata: bool = False  # PEP 658/714 core metadata served beside the file
    metadata_hashes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    name: str = ""  # canonical project name parsed from the file name

    @property
    def is_local(self) -> bool:
        return _local_path(self.url) is not None


@dataclass
class Sources:
    """Where to look: simple indexes (first is the primary) and find-links locations."""

    index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    offline: bool = False


# ---------------------------------------------------------------------------
# URLs, credentials, HTTP
# ---------------------------------------------------------------------------


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _local_path(url: str) -> Path | None:
    """The filesystem path behind a ``file://`` URL or a plain path; ``None`` for http(s)."""
    if _is_http(url):
        return None
    if url.lower().startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            return None
        path = unquote(parts.path)
        if sys.platform == "win32" and re.match(r"^/[A-Za-z]:", path):
            path = path[1:]
        return Path(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        return None  # some other scheme we do not read
    return Path(os.path.expanduser(url))



# ---------------------------------------------------------------------------
# parsing pages
# ---------------------------------------------------------------------------


@dataclass
class _Link:
    url: str  # absolute, without #fragment
    filename: str  # from the URL's last path segment (HTML) or the "filename" key (JSON)
    requires_python: str | None = None
    yanked: bool = False
    hashes: dict[str, str] = field(default_factory=dict)
    has_metadata: bool = False
    metadata_hashes: dict[str, str] = field(default_factory=dict)


class _AnchorParser(html.parser.HTMLParser):
    """Collect ``<a href>`` links (and ``<base href>``) from a PEP 503 / flat HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], list[str]]] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href
        elif tag == "a":
            text: list[str] = []
            self.anchors.append((dict(attrs), text))
            self._current = text

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)


def _hashes_from_fragment(fragment: str) -> dict[str, str]:
    out = {}
    for part in re.split(r"[&,]", fragment):
        algo, sep, digest = part.strip().partition("=")
        algo = algo.lower()
        if sep and digest and algo in hashlib.algorithms_guaranteed:
            out[algo] = digest.lower()
    return out


def _metadata_flag(value: Any) -> tuple[bool, dict[str, str]]:
    """Interpret data-core-metadata / core-metadata (PEP 658/714): (present, hashes)."""
    if value is None or value is False:
        return False, {}
    if value is True:
        return True, {}
    if isinstance(value, dict):
        return True, {str(k).lower(): str(v).lower() for k, v in value.items()
                      if str(k).lower() in hashlib.algorithms_guaranteed}
    text = str(value).strip()
    if text.lower() == "false":
        return False, {}
    return True, _hashes_from_fragment(text)  # "", "true" or "sha256=..."


def _parse_html(text: str, page_url: str) -> list[_Link]:
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links = []
    for attrs, text_parts in parser.anchors:
        href = (attrs.get("href") or "").strip()
        if not href:
            continue
        parts = urlsplit(urljoin(base, href))
        filename = unquote(parts.path.rsplit("/", 1)[-1]) or "".join(text_parts).strip()
        if "data-core-metadata" in attrs:
            has_metadata, meta_hashes = _metadata_flag(attrs["data-core-metadata"] or "")
        elif "data-dist-info-metadata" in attrs:
            has_metadata, meta_hashes = _metadata_flag(attrs["data-dist-info-metadata"] or "")
        else:
            has_metadata, meta_hashes = False, {}
        links.append(_Link(
            url=urlunsplit(parts._replace(fragment="")),
            filename=filename,
            requires_python=(attrs.get("data-requires-python") or "").strip() or None,
            yanked="data-yanked" in attrs,  # PEP 592: presence means yanked
            hashes=_hashes_from_fragment(parts.fragment),
            has_metadata=has_metadata,
            metadata_hashes=meta_hashes,
        ))
    return links


def _parse_json(text: str, page_url: str) -> list[_Link]:
    data = json.loads(text)
    links = []
    for entry in data.get("files", []) or []:
        if not isinstance(entry, dict) or not entry.get("url"):
            continue
        parts = urlsplit(urljoin(page_url, entry["url"]))
        filename = str(entry.get("filename") or unquote(parts.path.rsplit("/", 1)[-1]))
        hashes = entry.get("hashes") or {}
        hashes = {str(k).lower(): str(v).lower() for k, v in hashes.items()} if isinstance(hashes, dict) else {}
        if not hashes:
            hashes = _hashes_from_fragment(parts.fragment)
        yanked = entry.get("yanked", False)
        for key in ("core-metadata", "data-dist-info-metadata", "dist-info-metadata"):
            if key in entry:
                has_metadata, meta_hashes = _metadata_flag(entry[key])
                break
        else:
            has_metadata, meta_hashes = False, {}
        links.append(_Link(
            url=urlunsplit(parts._replace(fragment="")),
            filename=filename,
            requires_python=(entry.get("requires-python") or None),
            yanked=True if isinstance(yanked, str) else bool(yanked),  # a string is the reason
            hashes=hashes,
            has_metadata=has_metadata,
            metadata_hashes=meta_hashes,
        ))
    return links


def _file_from_link(link: _Link, project: str) -> FileInfo | None:
    info = _parse_filename(link.filename, project)
    if info is None:
        return None
    name, version, is_wheel, tags = info
    return FileInfo(
        filename=link.filename,
        url=link.url,
        version=version,
        requires_python=link.requires_python,
        yanked=link.yanked,
        is_wheel=is_wheel,
        tags=tags,
        hashes=link.hashes,
        has_metadata=link.has_metadata,
        metadata_hashes=link.metadata_hashes,
        name=name,
    )


def _parse_filename(filename: str, project: str | None) -> tuple[str, Version, bool, frozenset[Tag]] | None:
    """(canonical name, version, is_wheel, tags) or None if unparsable / another project."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, tags = parse_wheel_filename(filename)
            result = (str(name), version, True, frozenset(tags))
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            result = (str(name), version, False, frozenset())
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion, ValueError):
        return None
    if project is not None and result[0] != canonicalize_name(project):
        return None
    return result


# ---------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------


def _index_files(index_url: str, project: str, *, timeout: float, offline: bool) -> list[FileInfo]:
    canonical = canonicalize_name(project)
    base = index_url.rstrip("/")
    local = _local_path(index_url)
    if local is not None:
        if not local.is_dir():
            raise UserError(
                f"The package index {redact_url(index_url)} is not a folder on this machine.",
                "Check the --index-url value (a local simple index is a folder with one sub-folder per project).",
            )
        page = None
        for name in dict.fromkeys([canonical, project]):
            candidate = local / name / "index.html"
            if candidate.is_file():
                page = candidate
                break
        if page is None:
            return []  # no such project on that index
        try:
            text = page.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UserError(f"Could not read the package index page {page}: {exc.strerror or exc}.",
                            "Check the permissions of the local index.") from exc
        links = _parse_html(text, page.resolve().as_uri())
    elif _is_http(index_url):
        if offline:
            return []
        url = f"{base}/{canonical}/"
        try:
            resp = http.get(url, accept=_ACCEPT, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return []
            raise http.network_error("the package index", index_url, exc) from exc
        except http.ERRORS as exc:
            raise http.network_error("the package index", index_url, exc) from exc
        ctype = resp.content_type.split(";", 1)[0].strip().lower()
        text = http.decode(resp.body, resp.content_type)
        page_url = resp.url if resp.url.endswith("/") else resp.url + "/"
        if ctype in _JSON_TYPES or ctype == "application/json":
            try:
                links = _parse_json(text, page_url)
            except (ValueError, AttributeError, TypeError) as exc:
                raise UserError(
                    f"The package index {redact_url(index_url)} returned an invalid JSON page for {canonical}.",
                    "Check that the index URL points at a PEP 503/691 'simple' index.",
                    details=str(exc)[:300],
                ) from exc
        else:
            links = _parse_html(text, page_url)
    else:
        raise UserError(f"Unsupported package index URL {redact_url(index_url)}.",
                        "Use an https://, http:// or file:// URL, or a folder path.")
    return [f for f in (_file_from_link(link, canonical) for link in links) if f is not None]


def _local_requires_python(path: Path) -> str | None:
    """Requires-Python of a local wheel (a folder has no index page to say it); None if unknown.

    Only the zip's central directory and its small METADATA member are read.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.count("/") == 1 and member.endswith(".dist-info/METADATA"):
                    text = zf.read(member).decode("utf-8", errors="replace")
                    return _parse_metadata(text)["requires_python"] or None
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return None
    return None


def _find_links_files(location: str, project: str, *, timeout: float, offline: bool) -> list[FileInfo]:
    canonical = canonicalize_name(project)
    local = _local_path(location)
    if local is not None:
        if local.is_dir():
            out = []
            try:
                entries = sorted(local.iterdir())
            except OSError as exc:
                raise UserError(f"Could not list the --find-links folder {local}: {exc.strerror or exc}.",
                                "Check that the folder exists and is readable.") from exc
            for entry in entries:
                info = _parse_filename(entry.name, canonical)
                if info is None or not entry.is_file():
                    continue
                name, version, is_wheel, tags = info
                out.append(FileInfo(
                    filename=entry.name, url=entry.resolve().as_uri(), version=version,
                    requires_python=_local_requires_python(entry) if is_wheel else None,
                    yanked=False, is_wheel=is_wheel, tags=tags,
                    hashes={}, has_metadata=False, name=name,
                ))
            return out
        if local.is_file():
            try:
                text = local.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise UserError(f"Could not read the --find-links page {local}: {exc.strerror or exc}.",
                                "Check that the file is readable.") from exc
            links = _parse_html(text, local.resolve().as_uri())
        else:
            raise UserError(f"The --find-links location {local} does not exist.",
                            "Pass a folder of wheels, an HTML page listing them, or drop the option.")
    elif _is_http(location):
        if offline:
            return []
        try:
            resp = http.get(location, accept="text/html, */*;q=0.1", timeout=timeout)
        except http.ERRORS as exc:
            raise http.network_error("the --find-links page", location, exc) from exc
        links = _parse_html(http.decode(resp.body, resp.content_type), resp.url)
    else:
        raise UserError(f"Unsupported --find-links location {redact_url(location)}.",
                        "Use a folder, a file:// URL or an http(s):// URL of an HTML page.")
    return [f for f in (_file_from_link(link, canonical) for link in links) if f is not None]


def list_files(project: str, sources: Sources, *, timeout: float = 20.0) -> list[FileInfo]:
    """Every distribution file of ``project`` offered by ``sources``, merged.

    Index order is kept (primary index first, then the other indexes, then the
    find-links locations); a file reachable under the same URL twice is listed
    once. Wheels in find-links folders get their Requires-Python from their own
    METADATA (no page says it). With ``sources.offline`` http(s) sources are skipped. A 404 from an
    index means the project is not there; other failures raise
    :class:`~rebuild.errors.UserError` naming the (redacted) source.
    """
    out: list[FileInfo] = []
    seen: set[str] = set()

    def add(files: list[FileInfo]) -> None:
        for f in files:
            if f.url not in seen:
                seen.add(f.url)
                out.append(f)

    for index_url in sources.index_urls:
        add(_index_files(index_url, project, timeout=timeout, offline=sources.offline))
    for location in sources.find_links:
        add(_find_links_files(location, project, timeout=timeout, offline=sources.offline))
    return out


def versions(files: Iterable[FileInfo], *, prereleases: bool = False, include_yanked: bool = False) -> list[Version]:
    """Distinct release versions, newest first.

    A version counts as yanked only through its yanked files: a release with
    one non-yanked file is listed.
    """
    found = {
        f.version for f in files
        if (include_yanked or not f.yanked) and (prereleases or not f.version.is_prerelease)
    }
    return sorted(found, reverse=True)


def newer_versions(files: Iterable[FileInfo], installed: Version | str, *, prereleases: bool = False) -> list[Version]:
    """Non-yanked releases newer than ``installed``, newest first."""
    current = Version(str(installed))
    return [v for v in versions(files, prereleases=prereleases) if v > current]


# ---------------------------------------------------------------------------
# tags
# ---------------------------------------------------------------------------


@dataclass
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
    def from_probe(cls, report: Mapping[str, Any]) -> "Target":
        """Build from the probe's report (``report["interpreter"]`` and ``report["platform"]``)."""
        merged: dict[str, Any] = {}
        merged.update(report.get("platform") or {})
        merged.update(report.get("interpreter") or {})
        interp = report.get("interpreter") or {}
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
    "amd64": "x86_64", "x64": "x86_64", "x86_64": "x86_64",
    "arm64": "aarch64", "aarch64": "aarch64",
    "i386": "i686", "i486": "i686", "i586": "i686", "i686": "i686", "x86": "i686",
}
_MANYLINUX_LEGACY = {
    (2, 17): ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
    (2, 12): ("manylinux2010", {"x86_64", "i686"}),
    (2, 5): ("manylinux1", {"x86_64", "i686"}),
}


def _linux_arch(machine: str) -> str:
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
        arch = _linux_arch(target.machine or target.sysconfig_platform.rpartition("-")[2])
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
    """Wheel tags ``target`` accepts, most preferred first (like ``packaging.tags.sys_tags``)."""
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
    tags += [t for t in compatible_tags(pyver, interpreter, platforms) if t not in set(tags)]
    return tags


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
        arch = _linux_arch(machine)
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


def python_versions_with_wheels(files: Iterable[FileInfo], version: Version | str, system: str, machine: str) -> list[str]:
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
        if f.yanked or not wheel_supports(f, tagset):
            continue
        if f.version.is_prerelease and not prereleases:
            continue
        if f.requires_python:
            try:
                if not SpecifierSet(f.requires_python).contains(requires_python_for, prereleases=True):
                    continue
            except InvalidSpecifier:
                pass  # like pip: an unreadable Requires-Python does not exclude the file
        if best is None or f.version > best:
            best = f.version
    return best


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------


def _parse_metadata(text: str) -> dict[str, Any]:
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)

    def clean(value: Any) -> str:
        return re.sub(r"\s*\n\s*", " ", str(value)).strip()

    requires_python = msg.get("Requires-Python")
    return {
        "name": clean(msg.get("Name", "")),
        "version": clean(msg.get("Version", "")),
        "requires_dist": [clean(v) for v in (msg.get_all("Requires-Dist") or [])],
        "requires_python": clean(requires_python) if requires_python is not None else None,
    }


def _metadata_from_zip(path: Path, file: FileInfo) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            candidates = [n for n in zf.namelist()
                          if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not candidates:
                raise MetadataUnavailable(f"{file.filename} has no .dist-info/METADATA")
            chosen = candidates[0]
            if len(candidates) > 1:
                want = (canonicalize_name(file.name or file.filename.split("-", 1)[0]), file.version)
                for n in candidates:
                    dname, _, dver = n.split("/", 1)[0][: -len(".dist-info")].rpartition("-")
                    try:
                        if (canonicalize_name(dname), Version(dver)) == want:
                            chosen = n
                            break
                    except InvalidVersion:
                        continue
            return zf.read(chosen).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise MetadataUnavailable(f"cannot read {path}: {exc}") from exc


def read_metadata(file: FileInfo, *, timeout: float = 20.0, offline: bool = False) -> dict[str, Any]:
    """``{"name", "version", "requires_dist": [...], "requires_python"}`` of a wheel.

    Local wheels (path or ``file://``) are opened as zip files. Remote wheels
    are read through PEP 658 (``<url>.metadata``) only when the index says the
    metadata is served; the wheel itself is never downloaded. Otherwise --
    and on any failure to fetch or verify the metadata -- raises
    :class:`MetadataUnavailable`.
    """
    if not file.is_wheel:
        raise MetadataUnavailable(f"{file.filename} is not a wheel; its dependencies are only known after a build")
    local = _local_path(file.url)
    if local is not None:
        if local.is_file():
            return _parse_metadata(_metadata_from_zip(local, file))
        sidecar = local.with_name(local.name + ".metadata")
        if file.has_metadata and sidecar.is_file():
            return _parse_metadata(sidecar.read_text(encoding="utf-8", errors="replace"))
        raise MetadataUnavailable(f"{local} does not exist")
    if not _is_http(file.url):
        raise MetadataUnavailable(f"unsupported URL for {file.filename}")
    if not file.has_metadata:
        raise MetadataUnavailable(
            f"the index does not serve the metadata of {file.filename} separately (PEP 658); "
            "reading it would mean downloading the wheel"
        )
    if offline:
        raise MetadataUnavailable(f"the metadata of {file.filename} is on the network and we are offline")
    url = file.url + ".metadata"
    try:
        resp = http.get(url, accept="*/*", timeout=timeout)
    except http.ERRORS as exc:
        reason = http.redact_text(str(exc), [url])
        raise MetadataUnavailable(f"could not fetch {redact_url(url)}: {reason}") from exc
    for algo, digest in file.metadata_hashes.items():
        if algo in hashlib.algorithms_guaranteed:
            actual = hashlib.new(algo, resp.body).hexdigest()
            if actual != digest.lower():
                raise MetadataUnavailable(f"the metadata of {file.filename} does not match its {algo} hash")
            break
    return _parse_metadata(http.decode(resp.body, resp.content_type))
