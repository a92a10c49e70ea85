"""Read what a package index offers, without resolving or installing anything.

uv does the resolution. This module only *reads* indexes so tfrebuild can
explain itself: which files of a project the sources offer
(:func:`list_files`) and which releases they make (:func:`versions`). What
those files suit is :mod:`rebuild.index.tags`; what a wheel depends on is
:mod:`rebuild.index.metadata`.

Sources are PEP 691 JSON / PEP 503 HTML "simple" indexes over http(s),
``file://`` simple indexes (local mirrors: ``<dir>/<project>/index.html``),
and ``--find-links`` locations (local folders, local HTML files, or flat HTML
pages over http(s)). Credentials embedded in URLs are used for HTTP basic
auth and are never shown in messages (``user:****@host``).
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import threading
import time
import urllib.error
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from rebuild.errors import UserError
from rebuild.index import http, metadata
from rebuild.index.http import redact_url

__all__ = ["FileInfo", "Sources", "list_files", "redact_url", "versions"]

_JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json")
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One distribution file offered by an index or a find-links location (a page holds thousands: no ``__dict__``,
    and equal versions, tag sets and names are one object each, :func:`_shared`)."""

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
    upload_time: str = field(default="", compare=False)  # PEP 700 ``upload-time`` (JSON pages only), else ""

    @property
    def is_local(self) -> bool:
        return http.local_path(self.url) is not None


@dataclass
class Sources:
    """Where to look: simple indexes (first is the primary) and find-links locations."""

    index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    offline: bool = False


# ---------------------------------------------------------------------------
# parsing pages
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Link:
    url: str  # absolute, without #fragment
    filename: str  # from the URL's last path segment (HTML) or the "filename" key (JSON)
    requires_python: str | None = None
    yanked: bool = False
    hashes: dict[str, str] = field(default_factory=dict)
    has_metadata: bool = False
    metadata_hashes: dict[str, str] = field(default_factory=dict)
    upload_time: str = ""


class _AnchorParser(html.parser.HTMLParser):
    """Collect ``<a href>`` links (and ``<base href>``) from a PEP 503 / flat HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str], list[str]]] = []  # a valueless attribute reads as ""
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href
        elif tag == "a":
            text: list[str] = []
            self.anchors.append(({k: v or "" for k, v in attrs}, text))
            self._current = text

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)


def _lower(text: Any) -> str:
    """``str(text).lower()``, the same string when it is lower case already (a page's hashes are: no copies kept)."""
    text = str(text)
    return text if text.islower() else text.lower()


#: One object for equal values parsed from different files (a version, a wheel's tag set, a project name): numpy's
#: page alone has 4,381 files over a few hundred versions and a few dozen tag sets. A memo of parsed values, like
#: ``functools.cache``; bounded, cleared when full.
_SHARED: dict[tuple[str, str], Any] = {}
_SHARED_MAX = 100_000


def _shared(kind: str, text: str, value: Any) -> Any:
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    return _SHARED.setdefault((kind, text), value)


def _parsed(kind: str, text: str, parse: Callable[[str], Any]) -> Any:
    """``parse(text)``, parsed once per distinct ``text`` (its exception raised each time, nothing kept)."""
    found = _SHARED.get((kind, text), _SHARED)
    return _shared(kind, text, parse(text)) if found is _SHARED else found


def _wheel_parts(filename: str) -> tuple[str, Version, frozenset[Tag]]:
    """``parse_wheel_filename`` of ``filename`` (packaging validates each part), its name and version parsed once
    per distinct pair and its tag set once per distinct tag text: a page repeats them across thousands of files."""
    stem = filename[:-4]
    if stem.count("-") != 4:  # a build tag (or no valid wheel name): as packaging reads it
        name, version, _build, tags = parse_wheel_filename(filename)
        return str(name), version, frozenset(tags)
    name_part, version_part, tag_text = stem.split("-", 2)
    head = f"{name_part}-{version_part}"
    name, version = _parsed("wheel-head", head, lambda h: parse_wheel_filename(f"{h}-py3-none-any.whl")[:2])
    tags = _parsed("tags", tag_text, lambda t: parse_wheel_filename(f"{head}-{t}.whl")[3])
    return str(name), version, tags


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
        return True, {_lower(k): _lower(v) for k, v in value.items() if _lower(k) in hashlib.algorithms_guaranteed}
    text = str(value).strip()
    if text.lower() == "false":
        return False, {}
    return True, _hashes_from_fragment(text)  # "", "true" or "sha256=..."


def _metadata_of(attrs: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, dict[str, str]]:
    """:func:`_metadata_flag` of the first of ``keys`` that ``attrs`` (an anchor's or a JSON file entry's) has."""
    for key in keys:
        if key in attrs:
            return _metadata_flag(attrs[key])
    return False, {}


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
        has_metadata, meta_hashes = _metadata_of(attrs, ("data-core-metadata", "data-dist-info-metadata"))
        links.append(
            _Link(
                url=urlunsplit(parts._replace(fragment="")),
                filename=filename,
                requires_python=(attrs.get("data-requires-python") or "").strip() or None,
                yanked="data-yanked" in attrs,  # PEP 592: presence means yanked
                hashes=_hashes_from_fragment(parts.fragment),
                has_metadata=has_metadata,
                metadata_hashes=meta_hashes,
            )
        )
    return links


def _local_page_links(page: Path, what: str, hint: str) -> list[_Link]:
    """The links of a simple-API or find-links HTML page on this machine."""
    try:
        text = page.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"Could not read {what} {page}: {exc.strerror or exc}.", hint) from exc
    return _parse_html(text, page.resolve().as_uri())


def _plain_absolute(url: Any) -> bool:
    """An http(s) URL with a host, no fragment, query, space, control character or IPv6 literal: one that
    ``urljoin``/``urlsplit``/``urlunsplit`` would give back unchanged (anything else goes through them)."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return False
    host = url.split("://", 1)[1].split("/", 1)[0]
    return bool(host) and url.isprintable() and not any(c in url for c in "#? [")


def _parse_json(text: str, page_url: str) -> list[_Link]:
    data = json.loads(text)
    links = []
    for entry in data.get("files", []) or []:
        if not isinstance(entry, dict) or not entry.get("url"):
            continue
        url = entry["url"]
        if _plain_absolute(url):
            fragment = ""  # absolute, as PyPI's are: urljoin/urlsplit/urlunsplit would give it back unchanged
        else:
            parts = urlsplit(urljoin(page_url, url))
            url, fragment = urlunsplit(parts._replace(fragment="")), parts.fragment
        filename = str(entry.get("filename") or unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
        hashes = entry.get("hashes") or {}
        hashes = {_lower(k): _lower(v) for k, v in hashes.items()} if isinstance(hashes, dict) else {}
        if not hashes:
            hashes = _hashes_from_fragment(fragment)
        yanked = entry.get("yanked", False)
        has_metadata, meta_hashes = _metadata_of(
            entry, ("core-metadata", "data-dist-info-metadata", "dist-info-metadata")
        )
        links.append(
            _Link(
                url=url,
                filename=filename,
                requires_python=(entry.get("requires-python") or None),
                yanked=True if isinstance(yanked, str) else bool(yanked),  # a string is the reason
                hashes=hashes,
                has_metadata=has_metadata,
                metadata_hashes=meta_hashes,
                upload_time=str(entry.get("upload-time") or ""),
            )
        )
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
        upload_time=link.upload_time,
    )


def _parse_filename(filename: str, project: str | None) -> tuple[str, Version, bool, frozenset[Tag]] | None:
    """(canonical name, version, is_wheel, tags) or None if unparsable / another project."""
    try:
        if filename.endswith(".whl"):
            name, version, tags = _wheel_parts(filename)
            result = (name, version, True, tags)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            result = (str(name), version, False, frozenset())
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion, ValueError):
        return None
    if project is not None and result[0] != canonicalize_name(project):
        return None
    return (_shared("name", result[0], result[0]), _shared("version", str(result[1]), result[1]), *result[2:])


# ---------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------


def _index_files(index_url: str, project: str, *, timeout: float, offline: bool) -> list[FileInfo]:
    canonical = canonicalize_name(project)
    base = index_url.rstrip("/")
    local = http.local_path(index_url)
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
        links = _local_page_links(page, "the package index page", "Check the permissions of the local index.")
    elif http.is_http(index_url):
        if offline:
            return []
        return _remote_files(f"{base}/{canonical}/", index_url, canonical, timeout)
    else:
        raise UserError(
            f"Unsupported package index URL {redact_url(index_url)}.",
            "Use an https://, http:// or file:// URL, or a folder path.",
        )
    return [f for f in (_file_from_link(link, canonical) for link in links) if f is not None]


#: A remote project page read within the last minute, by its URL, for this process (one command): the plan's
#: pre-flight and its "newer release for another Python" lookup ask for the same page from two threads; the second
#: waits for the first's answer. A memo of what the index said, like ``functools.cache`` (as ``targets._RESOLVES``),
#: not state that changes what a command does.
_PAGES: dict[str, tuple[float, list[FileInfo]]] = {}
_PAGE_LOCKS: dict[str, threading.Lock] = {}
_PAGES_GUARD = threading.Lock()
_PAGE_SECONDS = 60.0


def _remote_files(url: str, index_url: str, canonical: str, timeout: float) -> list[FileInfo]:
    with _PAGES_GUARD:
        lock = _PAGE_LOCKS.setdefault(url, threading.Lock())
    with lock:
        kept = _PAGES.get(url)
        if kept is not None and time.monotonic() - kept[0] < _PAGE_SECONDS:
            return list(kept[1])
        files = _read_remote(url, index_url, canonical, timeout)
        _PAGES[url] = (time.monotonic(), files)
        return list(files)


def _read_remote(url: str, index_url: str, canonical: str, timeout: float) -> list[FileInfo]:
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
    return [f for f in (_file_from_link(link, canonical) for link in links) if f is not None]


def _find_links_files(location: str, project: str, *, timeout: float, offline: bool) -> list[FileInfo]:
    canonical = canonicalize_name(project)
    local = http.local_path(location)
    if local is not None:
        if local.is_dir():
            out = []
            try:
                entries = sorted(local.iterdir())
            except OSError as exc:
                raise UserError(
                    f"Could not list the --find-links folder {local}: {exc.strerror or exc}.",
                    "Check that the folder exists and is readable.",
                ) from exc
            for entry in entries:
                info = _parse_filename(entry.name, canonical)
                if info is None or not entry.is_file():
                    continue
                name, version, is_wheel, tags = info
                out.append(
                    FileInfo(
                        filename=entry.name,
                        url=entry.resolve().as_uri(),
                        version=version,
                        requires_python=metadata.local_requires_python(entry) if is_wheel else None,
                        yanked=False,
                        is_wheel=is_wheel,
                        tags=tags,
                        hashes={},
                        has_metadata=False,
                        name=name,
                    )
                )
            return out
        if local.is_file():
            links = _local_page_links(local, "the --find-links page", "Check that the file is readable.")
        else:
            raise UserError(
                f"The --find-links location {local} does not exist.",
                "Pass a folder of wheels, an HTML page listing them, or drop the option.",
            )
    elif http.is_http(location):
        if offline:
            return []
        try:
            resp = http.get(location, accept="text/html, */*;q=0.1", timeout=timeout)
        except http.ERRORS as exc:
            raise http.network_error("the --find-links page", location, exc) from exc
        links = _parse_html(http.decode(resp.body, resp.content_type), resp.url)
    else:
        raise UserError(
            f"Unsupported --find-links location {redact_url(location)}.",
            "Use a folder, a file:// URL or an http(s):// URL of an HTML page.",
        )
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
        f.version for f in files if (include_yanked or not f.yanked) and (prereleases or not f.version.is_prerelease)
    }
    return sorted(found, reverse=True)
