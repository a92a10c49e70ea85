"""A PEP 503 simple index of a wheel folder, served over HTTP on 127.0.0.1 from a thread.

Tools without ``--find-links`` (Poetry) need an index URL; this one serves the kit's wheels:

    with SimpleIndex(kit_index) as index:
        index.url  # "http://127.0.0.1:PORT/simple/"

``/simple/`` lists the projects, ``/simple/<name>/`` their files (``#sha256=`` on each link),
``/files/<file>`` the files; every request is counted in :attr:`SimpleIndex.requests`. ``headers`` are added to
every answer (``{"Cache-Control": "no-store"}``: an index whose pages uv must not cache).
"""

from __future__ import annotations

import hashlib
import html
import http.server
import threading
from pathlib import Path

from .wheels import normalize_name

__all__ = ["SimpleIndex"]


def _project(filename: str) -> str:
    stem = filename[: -len(".whl")] if filename.endswith(".whl") else filename.rsplit("-", 1)[0]
    return normalize_name(stem.split("-")[0])


class SimpleIndex:
    def __init__(self, folder: Path, headers: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.headers = dict(headers or {})  # sent with every answer ("Cache-Control": "no-store")
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def _files(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and (path.name.endswith(".whl") or path.name.endswith(".tar.gz")):
                out.setdefault(_project(path.name), []).append(path)
        return out

    def _page(self, path: str) -> tuple[int, bytes, str]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["simple"]:
            links = "".join(f'<a href="{n}/">{n}</a>\n' for n in self._files())
            return 200, f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(), "text/html"
        if len(parts) == 2 and parts[0] == "simple":
            files = self._files().get(normalize_name(parts[1]))
            if not files:
                return 404, b"not found", "text/plain"
            links = "".join(
                f'<a href="/files/{html.escape(f.name)}#sha256='
                f'{hashlib.sha256(f.read_bytes()).hexdigest()}">{html.escape(f.name)}</a>\n'
                for f in files
            )
            return 200, f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(), "text/html"
        if len(parts) == 2 and parts[0] == "files":
            target = self.folder / parts[1]
            if "/" not in parts[1] and target.is_file():
                return 200, target.read_bytes(), "application/octet-stream"
        return 404, b"not found", "text/plain"

    def __enter__(self) -> "SimpleIndex":
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self, head: bool = False):  # noqa: N802 - the http.server name
                index.requests.append(self.path)
                status, body, kind = index._page(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in index.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802 - uv asks whether a wheel's server takes range requests
                self.do_GET(head=True)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
