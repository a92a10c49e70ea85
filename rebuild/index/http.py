"""The one HTTP client: GET with basic auth from URL credentials, the machine's CA bundle, redacted errors.

Every request tfrebuild itself makes (index pages, wheel metadata, range reads) goes through
:func:`get` or :func:`open_url`; downloads of many files (``bundle``) go through a :class:`Pool`
of kept-alive connections shared by a few threads, with retries. Credentials embedded in a URL
(``https://user:pass@host/``) become an ``Authorization`` header that is not forwarded on
redirects, and are never shown (``user:****@host``). The standard library is enough here.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from rebuild.errors import UserError
from rebuild.util import proc

USER_AGENT = "tfrebuild (python urllib)"
_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian/Ubuntu/Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora/RHEL
    "/etc/ssl/cert.pem",  # macOS, some BSDs
)
OFFLINE_HINT = (
    "Check your network, proxy (HTTPS_PROXY) and index settings, or work without the index: "
    "run with --offline and point --find-links at a folder of wheels."
)
#: What a request can raise besides UserError: catch these and turn them into :func:`network_error`.
ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


def is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def local_path(url: str) -> Path | None:
    """The filesystem path behind a ``file://`` URL or a plain path; ``None`` for http(s) and other schemes."""
    if is_http(url):
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


def redact_url(value: str) -> str:
    """Hide the secret part of credentials in a URL (``user:****@host``)."""
    from rebuild.util.proc import redact_line

    return redact_line(value)


def redact_text(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with every ``scheme://user:secret@`` masked, and the secrets of ``urls`` wherever they appear."""
    for url in urls:
        if url:
            text = text.replace(url, redact_url(url))
            password = unquote(urlsplit(url).password or "") if "@" in url else ""
            if len(password) >= 4:  # the secret quoted alone (a decoded URL, an echoed header)
                text = text.replace(password, "****")
    return proc.redact_line(text)


def netrc_file() -> Path | None:
    """The netrc file pip, uv and curl read: ``$NETRC``, else ``~/.netrc``, if it exists."""
    name = os.environ.get("NETRC")
    path = Path(os.path.expanduser(name)) if name else Path.home() / ".netrc"
    return path if path.is_file() else None


def netrc_auth(url: str, *, default: bool = True) -> str | None:
    """The ``Authorization`` value the netrc file gives for ``url``'s host (its ``default`` entry too), or None.

    urllib does not read netrc; pip and uv do, so tfrebuild's own requests must too. An
    unreadable or malformed netrc is ignored, as uv ignores it.
    """
    import netrc

    path = netrc_file()
    host = urlsplit(url).hostname
    if path is None or not host:
        return None
    try:
        parsed = netrc.netrc(str(path))
        entry = parsed.authenticators(host) if default or host in parsed.hosts else None
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError):
        return None
    if not entry:
        return None
    login, _account, password = entry
    token = base64.b64encode(f"{login or ''}:{password or ''}".encode()).decode("ascii")
    return f"Basic {token}"


def split_credentials(url: str) -> tuple[str, str | None]:
    """Return (url without userinfo, Authorization header value or None).

    Credentials in the URL win; a URL without them takes the netrc entry for its host.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, netrc_auth(url) if is_http(url) else None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


_CERT_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "SSL_CLIENT_CERT")
_contexts: dict[tuple[tuple[str, str, int, int], ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """The TLS context for the certificate settings in effect: made once per process for the same settings (and
    the same files), since loading a CA bundle costs about 0.1 s of CPU and a plan opens several connections."""
    key = tuple((name, value, *_stamp(value)) for name in _CERT_SETTINGS for value in [os.environ.get(name, "")])
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = _new_ssl_context()
    return ctx


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    return (st.st_mtime_ns, st.st_size) if st is not None else (0, -1)


def _new_ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()  # OpenSSL's default certificates (SSL_CERT_FILE's, when set)
    cafile = os.environ.get("SSL_CERT_FILE")
    loaded = os.path.realpath(ssl.get_default_verify_paths().cafile or "")
    try:
        chosen = cafile if cafile and os.path.isfile(cafile) else next(filter(os.path.isfile, _CA_BUNDLES), "")
        if chosen and os.path.realpath(chosen) != loaded:  # the same bundle twice would cost its load twice
            ctx.load_verify_locations(cafile=chosen)
        cadir = os.environ.get("SSL_CERT_DIR")
        if cadir and os.path.isdir(cadir):
            ctx.load_verify_locations(capath=cadir)
        client = os.environ.get("SSL_CLIENT_CERT")  # uv's variable (pip's client-cert): one PEM, key included
        if client and os.path.isfile(client):
            ctx.load_cert_chain(client, password=lambda: b"")  # an encrypted key fails here, never prompts
    except (ssl.SSLError, OSError):
        pass  # keep whatever the default store has
    return ctx


@dataclass
class Response:
    url: str  # final URL (after redirects), credentials re-attached if they were given
    content_type: str
    body: bytes


def open_url(url: str, *, timeout: float, headers: Mapping[str, str] | None = None):
    """Open ``url`` for reading (a context manager over the response); raises what :data:`ERRORS` lists."""
    clean, auth = split_credentials(url)
    req = urllib.request.Request(clean, headers={"User-Agent": USER_AGENT, **(headers or {})})
    if auth:
        # Not forwarded on redirects to other hosts.
        req.add_unredirected_header("Authorization", auth)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context()))
    return opener.open(req, timeout=timeout)


def get(url: str, *, accept: str = "*/*", timeout: float, headers: Mapping[str, str] | None = None) -> Response:
    """GET ``url`` whole; raises urllib.error.HTTPError / URLError / TimeoutError / OSError."""
    clean = split_credentials(url)[0]
    with open_url(url, timeout=timeout, headers={"Accept": accept, **(headers or {})}) as resp:
        body = resp.read()
        final = resp.geturl() or clean
        content_type = resp.headers.get("Content-Type", "") or ""
    if "@" in urlsplit(url).netloc and urlsplit(final).netloc == urlsplit(clean).netloc:
        # Keep credentials on same-host URLs so file links derived from the page work.
        final = urlunsplit(urlsplit(final)._replace(netloc=urlsplit(url).netloc))
    return Response(final, content_type, body)


def decode(body: bytes, content_type: str) -> str:
    match = re.search(r"charset=([\w.-]+)", content_type, re.I)
    encoding = match.group(1) if match else "utf-8"
    try:
        return body.decode(encoding, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def network_error(kind: str, url: str, exc: BaseException) -> UserError:
    shown = redact_url(url)
    hint = OFFLINE_HINT
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
        if exc.code in (401, 403):
            hint = "The server refused access: check the credentials in the URL. " + OFFLINE_HINT
    elif isinstance(exc, (TimeoutError, socket.timeout)):
        reason = "the connection timed out"
    elif isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, ssl.SSLCertVerificationError):
            reason = f"the TLS certificate could not be verified ({inner.verify_message or inner})"
            hint = (
                "If you are behind a proxy that re-signs TLS traffic, set SSL_CERT_FILE to its "
                "CA bundle. " + OFFLINE_HINT
            )
        elif isinstance(inner, (TimeoutError, socket.timeout)):
            reason = "the connection timed out"
        else:
            reason = str(inner)
    else:
        reason = str(exc) or type(exc).__name__
    reason = redact_text(reason, [url])
    return UserError(
        f"Could not read {kind} {shown}: {reason}.", hint, exit_code=1, details=f"{type(exc).__name__}: {reason}"
    )


# --------------------------------------------------------------------------- a pool of kept-alive connections

RETRIES = 3  #: attempts per download
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the ``*_proxy`` variables give for ``scheme://host`` (``no_proxy`` honoured), as urllib reads them."""
    proxies = urllib.request.getproxies()
    if scheme not in proxies or urllib.request.proxy_bypass(host):
        return None
    return proxies[scheme]


def _proxy_credentials(proxy: str) -> tuple[str, str | None]:
    """The proxy's URL without userinfo and its ``Proxy-Authorization`` value (from the URL, else netrc)."""
    return split_credentials(proxy if "://" in proxy else f"http://{proxy}")


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _RETRY_STATUS
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False  # the same certificate fails the same way
    return isinstance(exc, (OSError, http.client.HTTPException))


class Pool:
    """Kept-alive HTTP(S) connections per host, shared by the threads of one job (``bundle``'s downloads).

    Standard library only: ``http.client`` connections; an idle one is kept per (scheme, host, port) and
    reused by the next request to that host, so many files from one index cost one TLS handshake per thread,
    not one per file. One TLS context for all (the system's certificates, :func:`ssl_context`); the
    ``*_proxy`` variables as urllib reads them (CONNECT for https, with the proxy's credentials on the tunnel
    or on every plain-http request); credentials as :func:`open_url` sends them (the URL's, else netrc): the
    URL's never after a redirect, the new host's netrc entry after one; a redirect from https to http is refused. A failed connection, a cut or short transfer, a timeout, a
    408/429/5xx is tried again, up to :data:`RETRIES` attempts with a short pause; a reused connection the
    server had closed is replaced at once. Errors are urllib's (an ``HTTPError`` for a status, a ``URLError``
    around the cause) so :func:`network_error` words them. :meth:`abort` ends the transfers in progress.
    """

    def __init__(self, *, timeout: float, retries: int = RETRIES, backoff: float = 0.5) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.opened = 0  #: connections made (every other request reused one)
        self.requests = 0
        self._context = ssl_context()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._busy: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def abort(self) -> None:
        """End every transfer in progress (their sockets are shut down) and refuse new ones."""
        self._stopped.set()
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close()

    def download(self, url: str, fh: BinaryIO) -> int:
        """GET ``url`` into ``fh`` (written from its start: a retry rewrites it); the number of bytes."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._get(url, fh)
            except (OSError, http.client.HTTPException, urllib.error.HTTPError) as exc:
                if self._stopped.is_set() or attempt >= self.retries or not _retryable(exc):
                    if isinstance(exc, urllib.error.URLError):
                        raise
                    raise urllib.error.URLError(exc) from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))

    def _connection(self, scheme: str, host: str, port: int) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to the host (reused: True), else a new one."""
        with self._lock:
            idle = self._idle.get((scheme, host, port))
            conn = idle.pop() if idle else None
            if conn is None:
                self.opened += 1
        if conn is not None:
            return conn, True
        proxy = _proxy_for(scheme, host)
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context), False
            return http.client.HTTPConnection(host, port, timeout=self.timeout), False
        where, auth = _proxy_credentials(proxy)
        parts = urlsplit(where)
        headers = {"Proxy-Authorization": auth} if auth else None
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port or 80, timeout=self.timeout, context=self._context
            )
            conn.set_tunnel(host, port, headers=headers)
            return conn, False
        return http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=self.timeout), False

    def _get(self, url: str, fh: BinaryIO) -> int:
        clean, auth = split_credentials(url)
        for _ in range(10):
            if self._stopped.is_set():
                raise InterruptedError("the download was stopped")
            parts = urlsplit(clean)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {redact_url(clean)}")
            port = parts.port or (443 if scheme == "https" else 80)
            conn, reused = self._connection(scheme, parts.hostname, port)
            path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
            headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
            proxy = _proxy_for(scheme, parts.hostname) if scheme == "http" else None
            if proxy is not None:
                path = clean  # a plain-http proxy takes the whole URL, and its credentials on each request
                proxy_auth = _proxy_credentials(proxy)[1]
                if proxy_auth:
                    headers["Proxy-Authorization"] = proxy_auth
            if auth:
                headers["Authorization"] = auth
            with self._lock:
                self._busy.add(conn)
                self.requests += 1
            try:
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                except _STALE:
                    if not reused:
                        raise
                    conn.close()  # the server closed the idle connection: a fresh one, not a retry
                    continue
                if resp.status in _REDIRECTS and resp.getheader("Location"):
                    resp.read()
                    target = urljoin(clean, resp.getheader("Location") or "")
                    if scheme == "https" and urlsplit(target).scheme.lower() != "https":
                        raise ValueError(
                            f"refused a redirect from https to {redact_url(target)}: "
                            "it would send the download in the clear"
                        )
                    self._keep(scheme, parts.hostname, port, conn, resp)
                    # The URL's credentials stay with the first host; the new host gets its own netrc `machine`
                    # entry, never the `default` one (a server-chosen host is not given the catch-all login).
                    clean, auth = split_credentials(target)
                    if auth is not None and "@" not in urlsplit(target).netloc:
                        auth = netrc_auth(target, default=False)
                    continue
                if resp.status != 200:
                    resp.read()
                    self._keep(scheme, parts.hostname, port, conn, resp)
                    status = resp
                else:
                    written = self._body(resp, fh)
                    self._keep(scheme, parts.hostname, port, conn, resp)
                    return written
            except BaseException:
                conn.close()
                raise
            finally:
                with self._lock:
                    self._busy.discard(conn)
            raise urllib.error.HTTPError(redact_url(clean), status.status, status.reason, status.headers, None)
        raise urllib.error.HTTPError(redact_url(url), 310, "too many redirects", http.client.HTTPMessage(), None)

    def _body(self, resp: http.client.HTTPResponse, fh: BinaryIO) -> int:
        """The response's body into ``fh`` from its start; a transfer cut short is an ``IncompleteRead``."""
        fh.seek(0)
        fh.truncate()
        written = 0
        while chunk := resp.read(1 << 20):
            if self._stopped.is_set():
                raise InterruptedError("the download was stopped")
            fh.write(chunk)
            written += len(chunk)
        length = resp.getheader("Content-Length") or ""
        if length.isdigit() and not resp.getheader("Transfer-Encoding") and written != int(length):
            raise http.client.IncompleteRead(b"", int(length) - written)
        return written

    def _keep(
        self, scheme: str, host: str, port: int, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
    ) -> None:
        """Put ``conn`` back for the next request to the host, unless the server ends it."""
        if resp.will_close or self._stopped.is_set():
            conn.close()
            return
        with self._lock:
            self._idle.setdefault((scheme, host, port), []).append(conn)
