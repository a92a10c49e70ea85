"""Credentials (issue 11, point 3): used for every request, never written or printed in plain text.

A loopback PEP 503 index server on 127.0.0.1 serves the kit's wheels and refuses every
request without HTTP basic auth (``alice``/``s3cret``). tfrebuild is configured the way a
user would configure it -- a ``pip.conf`` whose ``index-url`` carries the credentials,
``PIP_INDEX_URL`` / ``UV_INDEX_URL``, a named uv index with ``UV_INDEX_<NAME>_USERNAME`` /
``_PASSWORD``, or a netrc file named by ``NETRC`` -- and runs snapshot, plan, upgrade,
history, rollback, export and bundle against it. The server must have seen authenticated
requests (the upgrade and the bundle cannot succeed otherwise), and then every file
tfrebuild wrote and everything it printed is searched for the password.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rebuild.index import config as indexconf
from rebuild.index import http as rhttp
from rebuild.util import proc
from tests.kit.cli import CliRun as Run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

USER, PASSWORD = "alice", "s3cret"
TOKEN = "tok3nXYZsecret"
CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]


# --------------------------------------------------------------------------- the index server


def _project(filename: str) -> str:
    name = filename.split("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


class _AuthIndex(http.server.BaseHTTPRequestHandler):
    files: dict = {}  # project -> {filename: Path}
    accepted: set = set()  # accepted Authorization header values
    seen: list = []  # (path, authorized: bool)

    head = False

    def do_HEAD(self):  # noqa: N802
        self.head = True
        self.do_GET()

    def do_GET(self):  # noqa: N802
        auth = self.headers.get("Authorization")
        ok = auth in self.accepted
        self.seen.append((self.path, ok))
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if parts == ["simple"]:
            body = "".join(f'<a href="/simple/{p}/">{p}</a>\n' for p in sorted(self.files)).encode()
            return self._send(200, "text/html", body)
        if len(parts) == 2 and parts[0] == "simple":
            project = re.sub(r"[-_.]+", "-", parts[1]).lower()
            if project not in self.files:
                return self._send(404, "text/plain", b"not found")
            links = []
            for name, p in sorted(self.files[project].items()):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                links.append(f'<a href="/files/{name}#sha256={digest}">{name}</a>')
            body = ("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>").encode()
            return self._send(200, "text/html", body)
        if len(parts) == 2 and parts[0] == "files":
            for group in self.files.values():
                if parts[1] in group:
                    return self._send(200, "application/octet-stream", group[parts[1]].read_bytes())
        return self._send(404, "text/plain", b"not found")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def auth_index(kit_index: Path):
    """``(host_port, handler)`` of a basic-auth index of the kit's wheels, stopped after the test."""
    files: dict[str, dict[str, Path]] = {}
    for p in kit_index.iterdir():
        if p.name.endswith((".whl", ".tar.gz")):
            files.setdefault(_project(p.name), {})[p.name] = p
    handler = type(
        "H", (_AuthIndex,), {"files": files, "seen": [], "accepted": {_basic(USER, PASSWORD), _basic(TOKEN, "")}}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop = threading.Timer(900, server.shutdown)  # bounded lifetime, whatever happens to the test
    stop.daemon = True
    stop.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        stop.cancel()
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- running tfrebuild


class World:
    """An isolated HOME / XDG configuration, the environment to run tfrebuild in, and every output."""

    def __init__(self, tmp: Path, kit_env: dict[str, str]):
        self.tmp = tmp
        self.home = tmp / "home"
        self.xdg = tmp / "xdg"
        (self.home / ".config").mkdir(parents=True)
        self.xdg.mkdir()
        self.env = {
            k: v
            for k, v in kit_env.items()
            if k
            not in (
                "UV_FIND_LINKS",
                "PIP_FIND_LINKS",
                "PIP_NO_INDEX",
                "UV_OFFLINE",
                "PIP_CONFIG_FILE",
                "TFREBUILD_FAULT",
                "NETRC",
            )
        }
        self.env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), XDG_CONFIG_DIRS=str(self.xdg))
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            self.env.pop(var, None)
        self.env["no_proxy"] = "*"
        self.runs: list[Run] = []
        self.own: set[Path] = set()  # configuration files the test itself wrote

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        self.own.add(path)
        return path

    def pip_conf(self, text: str) -> Path:
        return self.write(self.xdg / "pip" / "pip.conf", text)

    def tfr(self, *args, ok: bool = True) -> Run:
        cmd = [sys.executable, "-m", "rebuild", *map(str, args)]
        start = time.monotonic()
        p = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=300, cwd=self.tmp, stdin=subprocess.DEVNULL
        )
        run = Run(p, time.monotonic() - start, [str(a) for a in args])
        self.runs.append(run)
        if ok:
            assert run.code == 0, str(run)
        return run

    def leaks(self, secret: str, roots: list[Path]) -> list[str]:
        """Every file under ``roots`` and every output of a run that contains ``secret``."""
        found = []
        for root in roots:
            for top, _dirs, names in os.walk(root):
                for name in names:
                    path = Path(top) / name
                    if path.is_symlink() or not path.is_file() or path in self.own:
                        continue
                    if "site-packages" in path.parts:
                        continue  # the wheels themselves (the kit's code), not something tfrebuild wrote
                    if secret.encode() in path.read_bytes():
                        found.append(str(path))
        for run in self.runs:
            if secret in run.text:
                found.append(f"output of tfrebuild {' '.join(run.args)}")
        return found


def _logs_are_private(state: Path) -> None:
    logs = list((state / "logs").glob("*.log"))
    assert logs, f"no logs in {state}"
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, (log, oct(log.stat().st_mode))


def _full_round(world: World, env: Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """snapshot, plan, upgrade, history --json, rollback, export, bundle; returns the folders written."""
    profiles = world.tmp / "profiles"
    world.tfr("snapshot", "--env", env, "-o", profiles / "tf.toml")
    plan = world.tfr("plan", "--env", env, "--to", "2.18", "--json", *extra).json()["plan"]
    assert plan["tf_new"] == "2.18.0"
    up = world.tfr("upgrade", "--env", env, "--to", "2.18", "--yes", "--json", *extra).json()
    assert up["ok"] and up["generation"] == 2
    hist = world.tfr("history", "--env", env, "--json").json()
    assert [r["number"] for r in hist["rows"]] == [1, 2]
    world.tfr("history", "--env", env)
    world.tfr("rollback", "--env", env, "--yes", "--json")
    exports = world.tmp / "exports"
    exports.mkdir(exist_ok=True)
    world.tfr("export", "--env", env, "--format", "pylock", "-o", exports / "pylock.toml")
    world.tfr("export", "--env", env, "--format", "requirements", "-o", exports / "requirements.txt")
    state = env.parent / f".{env.name}.tfrebuild"
    gen2_profile = state / "generations" / "2" / "profile.toml"
    assert gen2_profile.is_file(), sorted(p.name for p in (state / "generations" / "2").iterdir())
    bundle = world.tmp / "bundle"
    b = world.tfr("bundle", gen2_profile, "-o", bundle, "--json").json()
    assert any(f["how"] == "downloaded" for f in b["files"]), b
    _logs_are_private(state)
    return [state, profiles, exports, bundle, world.home, world.xdg]


def _assert_authenticated(handler) -> None:
    good = [p for p, ok in handler.seen if ok]
    assert any(p.startswith("/simple/tensorflow-cpu") for p in good), handler.seen[:20]
    assert any(p.startswith("/files/") for p in good), handler.seen[:20]


# --------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_pip_conf_with_credentials_end_to_end(auth_index, make_venv, kit_env, tmp_path):
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    world.pip_conf(f"[global]\nindex-url = http://{USER}:{PASSWORD}@{host}/simple\n")
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    written = _full_round(world, env)
    _assert_authenticated(handler)
    # The index is recorded, redacted, where the user can see which one it was.
    hist = world.tfr("history", "--env", env, "--json").json()
    assert all(PASSWORD not in r["command"] for r in hist["rows"])
    assert world.leaks(PASSWORD, written) == []


@pytest.mark.slow
def test_index_url_on_the_command_line_is_redacted_in_history(auth_index, make_venv, kit_env, tmp_path):
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    url = f"http://{USER}:{PASSWORD}@{host}/simple"
    world.tfr("upgrade", "--env", env, "--to", "2.18", "--yes", "--index-url", url)
    _assert_authenticated(handler)
    hist = world.tfr("history", "--env", env, "--json").json()
    assert "alice:****@" in hist["rows"][-1]["command"], hist["rows"][-1]
    table = world.tfr("history", "--env", env)
    assert PASSWORD not in table.text and "upgrade" in table.out
    state = env.parent / f".{env.name}.tfrebuild"
    _logs_are_private(state)
    assert world.leaks(PASSWORD, [state]) == []


@pytest.mark.parametrize("variable", ["PIP_INDEX_URL", "UV_INDEX_URL"])
@pytest.mark.slow
def test_index_url_variables_with_credentials(variable, auth_index, make_venv, kit_env, tmp_path):
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    world.env[variable] = f"http://{USER}:{PASSWORD}@{host}/simple"
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    written = _full_round(world, env)
    _assert_authenticated(handler)
    assert world.leaks(PASSWORD, written) == []


@pytest.mark.slow
def test_bare_token_and_named_uv_index_credentials(auth_index, make_venv, kit_env, tmp_path):
    """``https://TOKEN@host`` (a bare token), then a named index whose credentials come from UV_INDEX_<NAME>_*."""
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    world.env["PIP_INDEX_URL"] = f"http://{TOKEN}@{host}/simple"
    world.tfr("upgrade", "--env", env, "--to", "2.16", "--yes")
    _assert_authenticated(handler)
    handler.seen.clear()
    del world.env["PIP_INDEX_URL"]
    world.env.update(
        UV_DEFAULT_INDEX=f"corp-mirror=http://{host}/simple",
        UV_INDEX_CORP_MIRROR_USERNAME=USER,
        UV_INDEX_CORP_MIRROR_PASSWORD=PASSWORD,
    )
    plan = world.tfr("plan", "--env", env, "--to", "2.18", "--json").json()["plan"]
    assert plan["tf_new"] == "2.18.0"
    world.tfr("upgrade", "--env", env, "--to", "2.18", "--yes")
    _assert_authenticated(handler)
    state = env.parent / f".{env.name}.tfrebuild"
    assert world.leaks(TOKEN, [state]) == []
    assert world.leaks(PASSWORD, [state]) == []


@pytest.mark.slow
def test_netrc_credentials_are_used_for_every_request(auth_index, make_venv, kit_env, tmp_path):
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    netrc = world.write(world.tmp / "netrc", f"machine 127.0.0.1\n  login {USER}\n  password {PASSWORD}\n")
    world.env["NETRC"] = str(netrc)
    world.pip_conf(f"[global]\nindex-url = http://{host}/simple\n")
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    written = _full_round(world, env)
    _assert_authenticated(handler)
    assert world.leaks(PASSWORD, written) == []


def test_http_client_reads_netrc(auth_index, tmp_path, monkeypatch):
    host, handler = auth_index
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    resp = rhttp.get(f"http://{host}/simple/six/", timeout=10)
    assert b"six-" in resp.body
    assert handler.seen[-1] == ("/simple/six/", True)
    # Credentials in the URL win over netrc.
    with pytest.raises(rhttp.urllib.error.HTTPError) as err:
        rhttp.get(f"http://bob:wrong@{host}/simple/six/", timeout=10)
    assert err.value.code == 401
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    with pytest.raises(rhttp.urllib.error.HTTPError):
        rhttp.get(f"http://{host}/simple/six/", timeout=10)


def test_one_redaction_function():
    cases = {
        "https://alice:s3cret@host/simple": "https://alice:****@host/simple",
        "https://tok3n@host/": "https://****@host/",
        "corp=https://alice:s3cret@host/simple": "corp=https://alice:****@host/simple",
        "https://alice:p@ss@host/simple": "https://alice:****@host/simple",
        "https://host/simple": "https://host/simple",
        "not a url": "not a url",
    }
    for raw, shown in cases.items():
        assert indexconf.redact(raw) == shown, raw
        assert rhttp.redact_url(raw) == shown, raw
        assert proc.redact_line(f"uv says: {raw} failed") == f"uv says: {shown} failed", raw
    assert (
        rhttp.redact_text("GET https://alice:s3cret@h/x and https://t0k@h/y", [])
        == "GET https://alice:****@h/x and https://****@h/y"
    )
