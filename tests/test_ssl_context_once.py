"""tfrebuild's HTTP client makes its TLS context once per process for the same certificate settings (issue 26
point 2: a plan's pre-flight and its release lookup each opened connections, each loading the CA bundle again),
and a new one when a setting or the file it names changes."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

from rebuild.index import http

BUNDLES = [p for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt") if os.path.isfile(p)]


def test_one_context_per_certificate_setting(tmp_path: Path, monkeypatch) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "SSL_CLIENT_CERT"):
        monkeypatch.delenv(name, raising=False)
    first = http.ssl_context()
    assert isinstance(first, ssl.SSLContext) and http.ssl_context() is first
    if not BUNDLES:
        return
    bundle = tmp_path / "ca.pem"
    shutil.copyfile(BUNDLES[0], bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    named = http.ssl_context()
    assert named is not first and http.ssl_context() is named
    assert named.cert_store_stats()["x509_ca"] > 0  # the named bundle was loaded
    bundle.write_text(bundle.read_text() + "\n")  # the file changed: its certificates are read again
    assert http.ssl_context() is not named
