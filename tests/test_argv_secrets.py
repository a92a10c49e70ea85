"""Issue 23, point 2: no secret in any argv.

``/proc/PID/cmdline`` is readable by every user of the machine, a process's environment only by its owner. A
scanner thread reads the command line of every process on the machine while tfrebuild runs plan, upgrade,
apply and bundle against a real loopback index that refuses every request without HTTP basic auth
(``tests/test_creds.py``'s server, credentials in pip.conf): the password is never on any command line, and the
server saw authenticated requests (so uv did get the credentials, through its environment). A control run shows
the scanner does catch a password on a command line.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from tests.kit.cli import run_cli
from tests.test_creds import CLASSIC, PASSWORD, USER, World, _assert_authenticated, auth_index  # noqa: F401

from rebuild.util.uv import secrets_to_environment

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


class ArgvScanner:
    """Reads every ``/proc/*/cmdline`` in a loop; keeps the ones holding ``secret`` and counts uv's."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.leaks: list[str] = []
        self.uv_seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._me = str(os.getpid())

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == self._me:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        raw = fh.read()
                except OSError:
                    continue
                if self.secret in raw:
                    self.leaks.append(raw.replace(b"\0", b" ").decode(errors="replace"))
                args = raw.split(b"\0")
                if args and args[0].endswith(b"/uv") and len(args) > 2:
                    self.uv_seen.add(" ".join(a.decode(errors="replace") for a in args[1:4]))
            time.sleep(0.002)

    def __enter__(self) -> "ArgvScanner":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def test_scanner_catches_a_password_on_a_command_line():
    with ArgvScanner("pa55-control") as scan:
        subprocess.run(["sh", "-c", "sleep 0.3", "pa55-control"], check=True)
        time.sleep(0.05)
    assert any("pa55-control" in leak for leak in scan.leaks)


def test_credentials_leave_the_command_line_for_uvs_environment():
    args = [
        "pip",
        "compile",
        "--index",
        "http://a:pw@h/simple",
        "--index",
        "http://mirror/simple",
        "--default-index",
        "http://a:pw@h/simple",
        "--find-links",
        "/wheels",
        "--extra-index-url=http://tok@x/s",
        "--offline",
    ]
    out, env = secrets_to_environment(args)
    assert out == ["pip", "compile", "--find-links", "/wheels", "--offline"]
    assert env == {
        "UV_INDEX": "http://a:pw@h/simple http://mirror/simple",
        "UV_DEFAULT_INDEX": "http://a:pw@h/simple",
        "UV_EXTRA_INDEX_URL": "http://tok@x/s",
    }
    out, env = secrets_to_environment(
        ["pip", "sync", "-f", "http://u:p@h/links", "-f", "/local", "--index-url", "http://h/simple"]
    )
    assert out == ["pip", "sync", "--index-url", "http://h/simple"]
    assert env == {"UV_FIND_LINKS": "http://u:p@h/links,/local"}
    assert secrets_to_environment(["venv", "/x"]) == (["venv", "/x"], {})
    # a constraints file may be a URL with credentials (pip.conf's `constraint = https://u:pw@host/c.txt`)
    out, env = secrets_to_environment(
        [
            "pip",
            "compile",
            "--constraint",
            "/etc/c.txt",
            "-c",
            "https://u:pw@h/c.txt",
            "--build-constraint",
            "https://u:pw@h/b.txt",
            "--offline",
        ]
    )
    assert out == ["pip", "compile", "--offline"]
    assert env == {"UV_CONSTRAINT": "/etc/c.txt https://u:pw@h/c.txt", "UV_BUILD_CONSTRAINT": "https://u:pw@h/b.txt"}


@pytest.mark.slow
def test_no_password_in_any_argv_during_plan_upgrade_apply_and_bundle(auth_index, make_venv, kit_env, tmp_path):
    host, handler = auth_index
    world = World(tmp_path / "w", kit_env)
    world.tmp.mkdir(exist_ok=True)
    world.pip_conf(f"[global]\nindex-url = http://{USER}:{PASSWORD}@{host}/simple\n")
    env = make_venv(tmp_path / "envs" / "tf", CLASSIC)
    with ArgvScanner(PASSWORD) as scan:
        world.tfr("plan", "--env", env, "--to", "2.18", "--json")
        up = world.tfr("upgrade", "--env", env, "--to", "2.18", "--yes", "--json").json()
        assert up["ok"] and up["generation"] == 2
        profile = env.parent / f".{env.name}.tfrebuild" / "generations" / "2" / "profile.toml"
        world.tfr(
            "apply",
            profile,
            "--env",
            tmp_path / "envs" / "copy",
            "--yes",
            "--allow-insecure-index",
            "--allow-index",
            "--json",
        )
        world.tfr("bundle", profile, "-o", tmp_path / "bundle", "--json")
    _assert_authenticated(handler)
    assert scan.uv_seen, "the scanner saw no uv process: it proves nothing"
    assert scan.leaks == [], scan.leaks
    assert world.leaks(PASSWORD, [env.parent / f".{env.name}.tfrebuild", tmp_path / "bundle"]) == []


@pytest.mark.slow
def test_find_links_url_with_credentials_is_a_url_and_redacted(make_venv, kit_env, kit_index, tmp_path):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    url = "http://alice:pw-find-links@127.0.0.1:9/wheels/"
    for command in ("plan", "upgrade"):
        run = run_cli(
            kit_env,
            command,
            "--env",
            env,
            "--find-links",
            url,
            "--yes" if command == "upgrade" else "--json",
            cwd=tmp_path,
            timeout=120,
            overrides={"UV_OFFLINE": None},
        )
        assert run.code != 0 and "Traceback" not in run.text, str(run)
        assert "pw-find-links" not in run.text, str(run)
        assert "127.0.0.1:9/wheels" in run.text and "http:/alice" not in run.text, str(run)
        assert str(tmp_path / "http:") not in run.text, str(run)
