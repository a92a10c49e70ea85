"""What a wheel depends on, read without installing it: its core metadata (``METADATA``).

Local wheels are opened as zip files (only the central directory and the small
``METADATA`` member are read); remote wheels are read through PEP 658
(``<url>.metadata``) when the index serves it, never by downloading the wheel.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.index import http
from rebuild.util import distinfo

if TYPE_CHECKING:
    from rebuild.index.simple import FileInfo

__all__ = ["MetadataUnavailable", "local_requires_python", "parse_metadata", "read_metadata"]


class MetadataUnavailable(Exception):
    """A wheel's metadata cannot be read without downloading the whole wheel (or at all)."""


def _clean(value: Any) -> str:
    return re.sub(r"\s*\n\s*", " ", str(value)).strip()


def parse_metadata(text: str) -> dict[str, Any]:
    """``{"name", "version", "requires_dist": [...], "requires_python"}`` of a METADATA / PKG-INFO text.

    Lenient like installers are (``packaging.metadata.parse_email``, no validation): folded
    lines are joined, a repeated one-value field counts with its first value, a missing
    Requires-Python is ``None``.
    """
    raw, unparsed = parse_email(text)

    def first(key: str) -> Any:
        if key in raw:
            return raw[key]
        values = unparsed.get(key)
        return values[0] if values else None

    requires_python = first("requires_python")
    return {
        "name": _clean(first("name") or ""),
        "version": _clean(first("version") or ""),
        "requires_dist": [_clean(v) for v in raw.get("requires_dist", [])],
        "requires_python": _clean(requires_python) if requires_python is not None else None,
    }


def _metadata_from_zip(path: Path, file: "FileInfo | None" = None) -> str:
    """The ``.dist-info/METADATA`` text of the wheel at ``path`` (the one of ``file``'s project if several)."""
    shown = file.filename if file is not None else path.name
    try:
        with zipfile.ZipFile(path) as zf:
            candidates = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not candidates:
                raise MetadataUnavailable(f"{shown} has no .dist-info/METADATA")
            chosen = candidates[0]
            if len(candidates) > 1 and file is not None:
                want = (canonicalize_name(file.name or file.filename.split("-", 1)[0]), file.version)
                for n in candidates:
                    dname, dver = distinfo.parse(n.split("/", 1)[0]) or ("", "")
                    try:
                        if (dname, Version(dver)) == want:
                            chosen = n
                            break
                    except InvalidVersion:
                        continue
            return zf.read(chosen).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise MetadataUnavailable(f"cannot read {path}: {exc}") from exc


def local_requires_python(path: Path) -> str | None:
    """Requires-Python of a local wheel (a folder has no index page to say it); None if unknown."""
    try:
        return parse_metadata(_metadata_from_zip(path))["requires_python"] or None
    except (MetadataUnavailable, ValueError):
        return None


def read_metadata(file: "FileInfo", *, timeout: float = 20.0, offline: bool = False) -> dict[str, Any]:
    """:func:`parse_metadata` of a wheel, local or remote.

    Local wheels (path or ``file://``) are opened as zip files. Remote wheels
    are read through PEP 658 (``<url>.metadata``) only when the index says the
    metadata is served; the wheel itself is never downloaded. Otherwise --
    and on any failure to fetch or verify the metadata -- raises
    :class:`MetadataUnavailable`.
    """
    if not file.is_wheel:
        raise MetadataUnavailable(f"{file.filename} is not a wheel; its dependencies are only known after a build")
    local = http.local_path(file.url)
    if local is not None:
        if local.is_file():
            return parse_metadata(_metadata_from_zip(local, file))
        sidecar = local.with_name(local.name + ".metadata")
        if file.has_metadata and sidecar.is_file():
            return parse_metadata(sidecar.read_text(encoding="utf-8", errors="replace"))
        raise MetadataUnavailable(f"{local} does not exist")
    if not http.is_http(file.url):
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
        raise MetadataUnavailable(f"could not fetch {http.redact_url(url)}: {reason}") from exc
    for algo, digest in file.metadata_hashes.items():
        if algo in hashlib.algorithms_guaranteed:
            actual = hashlib.new(algo, resp.body).hexdigest()
            if actual != digest.lower():
                raise MetadataUnavailable(f"the metadata of {file.filename} does not match its {algo} hash")
            break
    return parse_metadata(http.decode(resp.body, resp.content_type))
