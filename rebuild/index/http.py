"""The one HTTP client: GET with basic auth from URL credentials, the machine's CA bundle, redacted errors.

Every request tfrebuild itself makes (index pages, wheel metadata, range reads, bundle
downloads) goes through :func:`get` or :func:`open_url`. Credentials embedded in a URL
(``https://user:pass@host/``) become an ``Authorization`` header that is not forwarded
to other hosts on redirects, and are never shown (``user:****@host``). The standard
library is enough here: one GET at a time, no sessions or retries that would pay for a
dependency.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

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


def netrc_auth(url: str) -> str | None:
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
        entry = netrc.netrc(str(path)).authenticators(host)
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


def ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    cafile = os.environ.get("SSL_CERT_FILE")
    try:
        if cafile and os.path.isfile(cafile):
            ctx.load_verify_locations(cafile=cafile)
        else:
            for bundle in _CA_BUNDLES:
                if os.path.isfile(bundle):
                    ctx.load_verify_locations(cafile=bundle)
                    break
        cadir = os.environ.get("SSL_CERT_DIR")
        if cadir and os.path.isdir(cadir):
            ctx.load_verify_locations(capath=cadir)
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
            hint = ("If you are behind a proxy that re-signs TLS traffic, set SSL_CERT_FILE to its "
                    "CA bundle. " + OFFLINE_HINT)
        elif isinstance(inner, (TimeoutError, socket.timeout)):
            reason = "the connection timed out"
        else:
            reason = str(inner)
    else:
        reason = str(exc) or type(exc).__name__
    reason = redact_text(reason, [url])
    return UserError(f"Could not read {kind} {shown}: {reason}.", hint, exit_code=1,
                     details=f"{type(exc).__name__}: {reason}")
