"""pip's ``cert`` setting reaches uv and tfrebuild's own HTTP client (pip trusts a company CA through
``cert = /path/ca.pem``; uv reads no pip configuration, so tfrebuild hands it over as ``SSL_CERT_FILE``).

A loopback HTTPS index of the kit's wheels (basic auth, a self-signed certificate made with openssl) is named
in a ``pip.conf`` with ``cert``; ``tfrebuild plan`` resolves against it, which uv can only do when it trusts
the certificate."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rebuild.index import config as indexconf
from tests.test_creds import CLASSIC, PASSWORD, USER, World, _AuthIndex, _basic, _project

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")


def _certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """(server key, server certificate, CA certificate): a CA of the test's own and a leaf it signed for
    127.0.0.1 (rustls, in uv, refuses a CA certificate used as the server's own)."""
    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "key.pem", "srv.csr", "srv.pem"))
    ext = tmp / "srv.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    steps = [
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
            "/CN=tfrebuild test CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        ],
    ]
    for step in steps:
        made = subprocess.run(step, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"openssl cannot make a test certificate: {made.stderr.strip()}")
    return key, cert, ca


def test_pip_cert_and_client_cert_become_uvs_variables(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\ncert = /etc/company/ca.pem\n[install]\nclient-cert = ~/me.pem\n")
    env = {"PIP_CONFIG_FILE": str(conf), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    got = indexconf.tls_environment(env, home=tmp_path)
    assert got == {"SSL_CERT_FILE": "/etc/company/ca.pem", "SSL_CLIENT_CERT": str(Path("~/me.pem").expanduser())}
    assert indexconf.tls_environment({**env, "PIP_CERT": "/other.pem"}, home=tmp_path)["SSL_CERT_FILE"] == "/other.pem"
    # What the user set for uv already wins: nothing is replaced.
    assert "SSL_CERT_FILE" not in indexconf.tls_environment({**env, "SSL_CERT_FILE": "/mine.pem"}, home=tmp_path)
    assert indexconf.tls_environment({"PIP_CONFIG_FILE": "/dev/null"}, home=tmp_path) == {}


@pytest.mark.slow
def test_plan_against_an_https_index_trusted_through_pip_cert(kit_index, make_venv, kit_env, tmp_path):
    key, cert, ca = _certificate(tmp_path)
    files: dict[str, dict[str, Path]] = {}
    for p in kit_index.iterdir():
        if p.name.endswith((".whl", ".tar.gz")):
            files.setdefault(_project(p.name), {})[p.name] = p
    handler = type("H", (_AuthIndex,), {"files": files, "seen": [], "accepted": {_basic(USER, PASSWORD)}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        world = World(tmp_path / "w", kit_env)
        world.tmp.mkdir(exist_ok=True)
        for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "SSL_CLIENT_CERT", "PIP_CERT", "UV_NATIVE_TLS"):
            world.env.pop(var, None)
        url = f"https://{USER}:{PASSWORD}@127.0.0.1:{server.server_address[1]}/simple"
        env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
        world.pip_conf(f"[global]\nindex-url = {url}\n")
        refused = world.tfr("plan", "--env", env, "--to", "2.18", "--json", ok=False)
        assert refused.code != 0 and "certificate" in refused.text.lower(), str(refused)
        # The user's own file: it outranks the machine's (this machine's /etc/pip.conf names a cert of its own).
        world.write(world.home / ".config" / "pip" / "pip.conf", f"[global]\ncert = {ca}\n")
        plan = world.tfr("plan", "--env", env, "--to", "2.18", "--json").json()["plan"]
        assert plan["tf_new"] == "2.18.0"
        assert any(p.startswith("/simple/tensorflow-cpu") and ok for p, ok in handler.seen), handler.seen[:10]
        assert world.leaks(PASSWORD, [world.home, world.xdg]) == []
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreadable_home_does_not_stop_any_command(tmp_path):
    """Another user's HOME (after `su` without `-`): pip's files there cannot be looked at. pip goes on without
    them and so does every tfrebuild command (the TLS settings are read before each one): one paragraph about
    the env, no traceback."""
    setpriv = next((p for p in ("/usr/bin/setpriv", "/bin/setpriv") if Path(p).is_file()), None)
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another uid")
    home = tmp_path / "roots-home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\ncert = /nowhere.pem\n")
    home.chmod(0o700)
    tmp_path.chmod(0o755)
    missing = tmp_path / "no-env"
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "PIP_CERT")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(Path(__file__).parents[1]))
    for verb in ("status", "history"):
        ran = subprocess.run(
            [
                setpriv,
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "rebuild",
                verb,
                "--env",
                str(missing),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode != 0 and "Traceback" not in ran.stderr, ran.stderr
        assert str(missing) in ran.stderr + ran.stdout
