"""index/http.Pool, bundle's downloader: kept-alive connections shared by threads, retries, the system's
certificates, credentials never forwarded on a redirect. Real sockets: local HTTP/1.1 and HTTPS servers."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import ssl
import subprocess
import threading
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pytest

from rebuild.index import http as rhttp

FILES = {
    f"/f/pkg{i}-1.0-py3-none-any.whl": hashlib.sha256(str(i).encode()).digest() * (2000 + 97 * i) for i in range(12)
}


class Server:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that records each request's path, headers and connection."""

    def __init__(self, tls: ssl.SSLContext | None = None, script=None) -> None:
        self.requests: list[tuple[str, dict, int]] = []  # (path, headers, client port)
        self.script = script or {}  # path -> list of actions to play first: "503", "cut", "redirect:<url>"
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, dict(self.headers), self.client_address[1]))
                actions = outer.script.get(self.path, [])
                action = actions.pop(0) if actions else ""
                body = FILES.get(self.path)
                if action == "503":
                    self._send(503, b"busy")
                elif action.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", action.split(":", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif body is None:
                    self._send(404, b"no such file")
                elif action == "cut":  # promise the whole file, send half, hang up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self._send(200, body)

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_threads_share_kept_alive_connections(server):
    base = f"http://127.0.0.1:{server.port}"

    def fetch(path: str) -> bytes:
        buf = io.BytesIO()
        assert pool.download(base + path, buf) == len(FILES[path])
        return buf.getvalue()

    with rhttp.Pool(timeout=30) as pool, ThreadPoolExecutor(max_workers=4) as workers:
        got = dict(zip(FILES, workers.map(fetch, FILES), strict=True))
    assert got == FILES
    connections = {port for _, _, port in server.requests}
    assert pool.requests == len(FILES) == len(server.requests)
    assert pool.opened == len(connections) <= 4, (pool.opened, connections)  # 12 files, at most 4 connections


def test_retries_a_busy_server_and_a_cut_transfer_then_gives_up_on_a_404(server):
    path = next(iter(FILES))
    server.script = {path: ["503", "cut"]}
    buf = io.BytesIO(b"stale bytes from an earlier attempt" * 1000)
    with rhttp.Pool(timeout=30, backoff=0.01) as pool:
        assert pool.download(f"http://127.0.0.1:{server.port}{path}", buf) == len(FILES[path])
        assert buf.getvalue() == FILES[path]  # the cut attempt's half file was written over
        assert [p for p, _, _ in server.requests] == [path] * 3
        with pytest.raises(urllib.error.HTTPError) as err:
            pool.download(f"http://127.0.0.1:{server.port}/f/missing.whl", io.BytesIO())
    assert err.value.code == 404 and len(server.requests) == 4  # a 404 is not tried again
    assert "HTTP 404" in rhttp.network_error("the file", err.value.url, err.value).message


def test_gives_up_after_the_retries_with_the_cause(server):
    path = next(iter(FILES))
    server.script = {path: ["503"] * 5}
    with rhttp.Pool(timeout=30, retries=3, backoff=0.01) as pool, pytest.raises(urllib.error.HTTPError) as err:
        pool.download(f"http://127.0.0.1:{server.port}{path}", io.BytesIO())
    assert err.value.code == 503 and len(server.requests) == 3


def test_credentials_go_to_the_host_and_not_through_a_redirect(server):
    other = Server()
    try:
        path = next(iter(FILES))
        server.script = {"/moved.whl": [f"redirect:http://127.0.0.1:{other.port}{path}"]}
        buf = io.BytesIO()
        with rhttp.Pool(timeout=30) as pool:
            pool.download(f"http://user:s3cret@127.0.0.1:{server.port}/moved.whl", buf)
        assert buf.getvalue() == FILES[path]
        assert server.requests[0][1]["Authorization"].startswith("Basic ")
        assert "Authorization" not in other.requests[0][1]
    finally:
        other.close()


def _tls_server(tmp_path, monkeypatch) -> Server:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {made.stderr.strip()}")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return Server(tls)


def test_https_with_the_system_certificates(tmp_path, monkeypatch):
    """The pool's TLS context takes SSL_CERT_FILE (as for every request): a server it names is trusted, and
    without it the certificate error is worded as such (no retry: it would fail the same way)."""
    server = _tls_server(tmp_path, monkeypatch)  # SSL_CERT_FILE names its certificate
    try:
        path = next(iter(FILES))
        url = f"https://127.0.0.1:{server.port}{path}"
        buf = io.BytesIO()
        with rhttp.Pool(timeout=30) as pool:
            assert pool.download(url, buf) == len(FILES[path]) and buf.getvalue() == FILES[path]
        monkeypatch.delenv("SSL_CERT_FILE")  # the system's own bundle: it does not hold this certificate
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        with rhttp.Pool(timeout=30, backoff=0.01) as pool, pytest.raises(urllib.error.URLError) as err:
            pool.download(url, io.BytesIO())
        assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
        assert "TLS certificate could not be verified" in rhttp.network_error("the file", url, err.value).message
    finally:
        server.close()


def test_abort_ends_a_transfer_in_progress():
    """A server that sends a byte and stalls: abort() (bundle's Ctrl-C or first failure) ends the wait at once."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx")

    threading.Thread(target=serve, daemon=True).start()
    pool = rhttp.Pool(timeout=120)
    result: list[BaseException] = []

    def download() -> None:
        try:
            pool.download(f"http://127.0.0.1:{port}/stall.whl", io.BytesIO())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result.append(exc)

    thread = threading.Thread(target=download)
    thread.start()
    while not accepted:
        thread.join(0.05)
    thread.join(0.5)
    assert thread.is_alive()  # stalled, as the server wants
    pool.abort()
    thread.join(10)
    assert not thread.is_alive() and isinstance(result[0], urllib.error.URLError)
    accepted[0].close()
    listener.close()


def test_a_redirect_from_https_to_http_is_refused(server, tmp_path, monkeypatch):
    """A download that began over TLS never continues in the clear: the redirect is refused, nothing is fetched
    from the plain-http host, and the message says why."""
    secure = _tls_server(tmp_path, monkeypatch)
    try:
        path = next(iter(FILES))
        secure.script = {"/moved.whl": [f"redirect:http://127.0.0.1:{server.port}{path}"]}
        with rhttp.Pool(timeout=30) as pool, pytest.raises(ValueError) as err:
            pool.download(f"https://127.0.0.1:{secure.port}/moved.whl", io.BytesIO())
        assert "refused a redirect from https" in str(err.value)
        assert server.requests == []
        shown = rhttp.network_error("the file", f"https://127.0.0.1:{secure.port}/moved.whl", err.value).message
        assert "in the clear" in shown
    finally:
        secure.close()


def test_after_a_redirect_the_new_host_gets_its_own_netrc_entry(server, tmp_path, monkeypatch):
    """The URL's credentials stay with the first host; the host redirected to is asked with what netrc gives
    for it (pip and uv read netrc per host), so a mirror that needs its own login still works."""
    other = Server()
    try:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine localhost login mirror password m1rr0r-pass\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        path = next(iter(FILES))
        server.script = {"/moved.whl": [f"redirect:http://localhost:{other.port}{path}"]}
        buf = io.BytesIO()
        with rhttp.Pool(timeout=30) as pool:
            pool.download(f"http://user:s3cret@127.0.0.1:{server.port}/moved.whl", buf)
        assert buf.getvalue() == FILES[path]
        sent = other.requests[0][1]["Authorization"]
        assert sent == "Basic " + base64.b64encode(b"mirror:m1rr0r-pass").decode()
        assert base64.b64encode(b"user:s3cret").decode() not in sent
    finally:
        other.close()


def test_a_plain_http_proxy_gets_its_credentials_on_every_request(server, monkeypatch):
    """http_proxy with credentials: each request through a plain-http proxy carries Proxy-Authorization (the
    CONNECT tunnel for https carries it already), and the proxy is sent the whole URL."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://puser:pp4ss@127.0.0.1:{server.port}")
    with rhttp.Pool(timeout=30, retries=1) as pool, pytest.raises(urllib.error.HTTPError):
        pool.download("http://files.example.invalid/f/pkg0-1.0-py3-none-any.whl", io.BytesIO())
    asked, headers, _ = server.requests[0]
    assert asked == "http://files.example.invalid/f/pkg0-1.0-py3-none-any.whl"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"puser:pp4ss").decode()


def test_a_redirect_never_gets_the_netrc_default_login(server, tmp_path, monkeypatch):
    """netrc's `default` entry is for hosts the user named; a host a server redirects to gets a login only from a
    `machine` entry of its own."""
    other = Server()
    try:
        netrc = tmp_path / "netrc"
        netrc.write_text("default login anyone password d3fault-pass\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        path = next(iter(FILES))
        server.script = {"/moved.whl": [f"redirect:http://localhost:{other.port}{path}"]}
        with rhttp.Pool(timeout=30) as pool:
            pool.download(f"http://127.0.0.1:{server.port}/moved.whl", io.BytesIO())
        assert server.requests[0][1]["Authorization"]  # the host the user named: its netrc login, default or not
        assert "Authorization" not in other.requests[0][1]
    finally:
        other.close()
