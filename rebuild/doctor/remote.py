"""Remote wheel metadata when the index serves no PEP 658 file: byte ranges of the wheel, PyPI's JSON API.

Both go through the one HTTP client, :mod:`rebuild.index.http`.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from rebuild.index import http
from rebuild.index import simple as indexinfo
from rebuild.index import metadata

MAX_RANGE_REQUESTS = 8


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches byte ranges on demand.

    ``zipfile`` needs only the end of a wheel (its central directory) and the
    METADATA member, so reading a 270 MB TensorFlow wheel's metadata costs about
    three requests and a few hundred KiB. Servers that ignore ``Range`` are
    refused before their body is read.
    """

    CHUNK = 256 * 1024

    def __init__(self, url: str, timeout: float):
        super().__init__()
        self.url, self.timeout = url, timeout
        self.pos = 0
        self.segments: list[tuple[int, bytes]] = []
        self.requests = 0
        start, body, self.size = self._fetch("-65536")
        self.segments.append((start, body))

    def _fetch(self, spec: str) -> tuple[int, bytes, int]:
        self.requests += 1
        headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
        with http.open_url(self.url, timeout=self.timeout, headers=headers) as resp:
            if resp.status != 206:
                raise metadata.MetadataUnavailable("the server does not serve byte ranges of the wheel")
            match = re.match(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", ""))
            if not match:
                raise metadata.MetadataUnavailable("the server sent no Content-Range")
            return int(match.group(1)), resp.read(), int(match.group(3))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        end = min(self.pos + n, self.size)
        if end <= self.pos:
            return b""
        for start, body in self.segments:
            if start <= self.pos and end <= start + len(body):
                out = body[self.pos - start : end - start]
                self.pos = end
                return out
        if self.requests >= MAX_RANGE_REQUESTS:
            raise metadata.MetadataUnavailable("too many range requests for one METADATA file")
        stop = min(max(end, self.pos + self.CHUNK), self.size) - 1
        start, body, _ = self._fetch(f"{self.pos}-{stop}")
        self.segments.append((start, body))
        out = body[self.pos - start : end - start]
        self.pos = end
        return out

    def readinto(self, buffer) -> int:  # pragma: no cover - zipfile uses read()
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def metadata_by_ranges(file: indexinfo.FileInfo, timeout: float) -> dict:
    """The METADATA of a remote wheel, read through :class:`RangeFile`."""
    try:
        with zipfile.ZipFile(RangeFile(file.url, timeout)) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise metadata.MetadataUnavailable(f"{file.filename} has no .dist-info/METADATA")
            text = zf.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, KeyError, EOFError, *http.ERRORS) as exc:
        raise metadata.MetadataUnavailable(f"could not read {file.filename} by byte ranges: {exc}") from exc
    # TODO(index): simple.py has no public METADATA parser yet; use it once it does.
    return metadata.parse_metadata(text)


def pypi_json(index_urls: list[str], project: str, version: str, timeout: float) -> dict | None:
    """``Requires-Dist`` from PyPI's JSON API, for indexes hosted by PyPI only."""
    for url in index_urls:
        parts = urlsplit(url)
        if parts.hostname not in ("pypi.org", "test.pypi.org"):
            continue
        api = f"{parts.scheme}://{parts.netloc}/pypi/{canonicalize_name(project)}/{version}/json"
        try:
            resp = http.get(api, accept="application/json", timeout=timeout)
            info = json.loads(resp.body.decode("utf-8", errors="replace")).get("info") or {}
        except (*http.ERRORS, AttributeError):
            continue
        if str(info.get("version")) != str(version):
            continue
        return {
            "name": info.get("name") or project,
            "version": str(version),
            "requires_dist": list(info.get("requires_dist") or []),
            "requires_python": info.get("requires_python") or None,
        }
    return None
