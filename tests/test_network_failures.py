"""Network and index failures are their own errors (issue 11, point 4).

Each case points tfrebuild at a source that fails in one way -- a refused port, a loopback
server answering 501 / 500 / 401 / 403 / 404 (404 at its root too), a plain-http server
addressed with https (TLS), a host name that does not resolve, a missing find-links folder
or ``file://`` index, a malformed URL -- and runs the real CLI (real uv) for ``plan`` and
``upgrade`` (and ``export`` / ``doctor``, which also read the index). Each must give one
error paragraph that names the source (credentials redacted) and what failed, exit 1
(2 for empty or malformed input), no traceback, and leave the env's folder -- env and
state folder beside it -- exactly as it was.

The servers bind 127.0.0.1 only. uv's retries are switched off (``UV_HTTP_RETRIES=0``) so
that each case takes about a second; the classification does not depend on them.
"""

from __future__ import annotations

import base64
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.kit.cli import CliRun as Run, tree_state

from tests.kit import create_venv

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

SECRET = "s3cr3t-pw"
GOOD_AUTH = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/s<code>/...`` answers ``<code>`` for every page, root included; ``/auth/`` wants alice's password
    and then has no projects (404)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        first = self.path.strip("/").split("/")[0]
        code = 404
        if first.startswith("s") and first[1:].isdigit():
            code = int(first[1:])
        elif first == "auth":
            code = 404 if self.headers.get("Authorization") == GOOD_AUTH else 401
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def refused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    return port


@pytest.fixture(scope="module")
def tf_env(tmp_path_factory, kit_index: Path, kit_env: dict[str, str]) -> Path:
    """A venv alone in its folder, so the folder's tree covers the env and any state folder beside it."""
    path = tmp_path_factory.mktemp("netfail") / "tfenv"
    return create_venv(path, ["tensorflow-cpu==2.15.1", "six"], find_links=kit_index, env=dict(kit_env))


@pytest.fixture
def online_env(kit_env: dict[str, str]) -> dict[str, str]:
    """The kit's environment with uv allowed on the (loopback) network and no find-links configured."""
    env = {
        k: v for k, v in kit_env.items() if k not in ("UV_OFFLINE", "PIP_NO_INDEX", "UV_FIND_LINKS", "PIP_FIND_LINKS")
    }
    env["UV_HTTP_RETRIES"] = "0"
    return env


def _cli(environ: dict[str, str], cwd: Path, *args: str) -> Run:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rebuild", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    return Run(proc, time.monotonic() - start, list(args))


def _tree(folder: Path) -> dict[str, tuple]:
    """Every entry under the env's folder. The folder's own mtime is left out: upgrade makes its lock and
    log folder beside the env and removes it again when the env was not managed yet."""
    state = tree_state(folder)
    state["."] = state["."][0]
    return state


def _run_unchanged(tf_env: Path, environ: dict[str, str], tmp_path: Path, *args: str) -> Run:
    before = _tree(tf_env.parent)
    res = _cli(environ, tmp_path, *args)
    assert _tree(tf_env.parent) == before, f"the env's folder changed\n{res}"
    return res


def _assert_one_paragraph(res: Run, code: int, *fragments: str) -> None:
    assert res.code == code, str(res)
    assert "Traceback" not in res.text, str(res)
    assert SECRET not in res.text, str(res)
    first = next(line for line in res.err.splitlines() if line.startswith("error:"))
    for fragment in fragments:
        assert fragment in first, (fragment, str(res))
    # Never the old misreadings of a network failure as a version problem.
    assert "release matches" not in res.err and "resolves" not in first, str(res)


# (id, index URL template, fragments the error line must hold)
HTTP_CASES = [
    ("refused", "http://127.0.0.1:{refused}/simple", ["http://127.0.0.1:{refused}/simple", "connection was refused"]),
    (
        "http-501",
        "http://alice:" + SECRET + "@{server}/s501/simple",
        ["http://alice:****@{server}/s501/simple", "HTTP 501 Not Implemented"],
    ),
    ("http-500", "http://{server}/s500/simple", ["http://{server}/s500/simple", "HTTP 500"]),
    ("http-401", "http://{server}/auth/simple", ["http://{server}/auth/simple", "refused access", "401"]),
    (
        "http-401-wrong-password",
        "http://alice:wrong-" + SECRET + "@{server}/s401/simple",
        ["alice:****@{server}/s401/simple", "refused access", "401"],
    ),
    ("http-403", "http://{server}/s403/simple", ["http://{server}/s403/simple", "refused access", "403"]),
    ("http-404-root", "http://{server}/s404/simple", ["http://{server}/s404/simple", "HTTP 404"]),
    ("tls", "https://{server}/s404/simple", ["https://{server}/s404/simple", "TLS"]),
]


def _fill(text: str, server: str, refused: int) -> str:
    return text.format(server=server, refused=refused)


@pytest.mark.parametrize("command", ["plan", "upgrade"])
@pytest.mark.parametrize("case,url,fragments", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_an_index_that_fails_is_named_with_what_failed(
    command, case, url, fragments, tf_env, online_env, server, refused_port, tmp_path
) -> None:
    url = _fill(url, server, refused_port)
    args = [command, "--env", str(tf_env), "--index-url", url] + (["--yes"] if command == "upgrade" else [])
    res = _run_unchanged(tf_env, online_env, tmp_path, *args)
    _assert_one_paragraph(res, 1, *[_fill(f, server, refused_port) for f in fragments])


def test_the_right_password_gets_past_the_401_and_the_error_is_then_about_the_package(
    tf_env, online_env, server, tmp_path
) -> None:
    """The 401 case is a real check: with alice's password the server lets uv in (and has no projects)."""
    url = f"http://alice:{SECRET}@{server}/auth/simple"
    res = _run_unchanged(tf_env, online_env, tmp_path, "plan", "--env", str(tf_env), "--index-url", url)
    assert res.code != 0 and "Traceback" not in res.text, str(res)
    assert "refused access" not in res.err and SECRET not in res.text, str(res)


def test_an_extra_index_that_fails_is_named(tf_env, online_env, kit_index, server, tmp_path) -> None:
    res = _run_unchanged(
        tf_env,
        online_env,
        tmp_path,
        "plan",
        "--env",
        str(tf_env),
        "--find-links",
        str(kit_index),
        "--extra-index-url",
        f"http://{server}/s501/simple",
    )
    _assert_one_paragraph(res, 1, f"http://{server}/s501/simple", "HTTP 501")


def test_a_configured_index_that_fails_is_named_for_export(tf_env, online_env, server, tmp_path) -> None:
    """export locks the installed set with uv: a configured (UV_INDEX_URL) index that fails is the error."""
    environ = dict(online_env, UV_INDEX_URL=f"http://alice:{SECRET}@{server}/s501/simple")
    res = _run_unchanged(tf_env, environ, tmp_path, "export", "--env", str(tf_env), "-o", str(tmp_path / "lock.toml"))
    _assert_one_paragraph(res, 1, f"http://alice:****@{server}/s501/simple", "HTTP 501")
    assert not (tmp_path / "lock.toml").exists()


def test_a_host_name_that_does_not_resolve(tf_env, online_env, tmp_path) -> None:
    res = _run_unchanged(
        tf_env,
        online_env,
        tmp_path,
        "plan",
        "--env",
        str(tf_env),
        "--index-url",
        "http://tfrebuild-no-such-host.invalid/simple",
    )
    _assert_one_paragraph(res, 1, "tfrebuild-no-such-host.invalid", "could not be resolved")


# Local sources and malformed input: refused before uv runs.
@pytest.mark.parametrize("command", ["plan", "upgrade", "doctor"])
@pytest.mark.parametrize(
    "case,args,code,fragments",
    [
        ("find-links-missing", ["--find-links", "/nonexistent/wheels"], 1, ["/nonexistent/wheels", "does not exist"]),
        (
            "file-index-missing",
            ["--index-url", "file:///nonexistent/simple"],
            1,
            ["file:///nonexistent/simple", "does not exist"],
        ),
        ("not-a-url", ["--index-url", "not a url"], 2, ["--index-url", "not a url", "neither a URL"]),
        ("bad-scheme", ["--extra-index-url", "ftp://mirror/simple"], 2, ["ftp://mirror/simple", "ftp://"]),
        ("bad-port", ["--index-url", "http://127.0.0.1:99999/simple"], 2, ["127.0.0.1:99999", "not a valid URL"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_local_and_malformed_sources_are_refused(
    command, case, args, code, fragments, tf_env, online_env, tmp_path
) -> None:
    extra = ["--yes"] if command == "upgrade" else []
    res = _run_unchanged(tf_env, online_env, tmp_path, command, "--env", str(tf_env), *args, *extra)
    _assert_one_paragraph(res, code, *fragments)


def test_a_configured_find_links_folder_that_is_missing_names_its_origin(tf_env, online_env, tmp_path) -> None:
    environ = dict(online_env, PIP_FIND_LINKS="/nonexistent/company-wheels")
    res = _run_unchanged(tf_env, environ, tmp_path, "plan", "--env", str(tf_env))
    _assert_one_paragraph(res, 1, "/nonexistent/company-wheels", "PIP_", "does not exist")


_TAKES = {
    "plan": ["--to", "--python", "--index-url", "--extra-index-url", "--find-links"],
    "upgrade": ["--to", "--python", "--index-url", "--extra-index-url", "--find-links"],
    "doctor": ["--to", "--index-url", "--extra-index-url", "--find-links"],
    "export": ["--find-links"],
    "bundle": ["--python", "--find-links"],
    "apply": ["--python", "--find-links"],
}


@pytest.mark.parametrize("command,option", [(c, o) for c, opts in _TAKES.items() for o in opts])
def test_empty_option_values_are_refused(command, option, tf_env, online_env, tmp_path) -> None:
    head = {
        "bundle": ["bundle", str(tmp_path / "p.toml"), "-o", str(tmp_path / "out")],
        "apply": ["apply", str(tmp_path / "p.toml"), "--env", str(tf_env), "--yes"],
    }.get(command, [command, "--env", str(tf_env)] + (["--yes"] if command == "upgrade" else []))
    res = _run_unchanged(tf_env, online_env, tmp_path, *head, option, "")
    _assert_one_paragraph(res, 2, option, "empty value")
    assert not (tmp_path / "out").exists()
