"""Issue 23, point 3: only regular files are written and read as documents.

Device nodes are made with ``mknod`` in the test's own folder (never ``/dev``): a character device like
``/dev/full`` (1, 7) and like ``/dev/zero`` (1, 5). ``-o`` refuses anything there that is not a regular file (a
device, a FIFO, a socket, a folder, a link), ``--force`` included, and leaves it as it was; a FIFO or device given
as ``--profile`` is refused at once (never waited on, never read); a profile behind a link, or larger than the
cap, is refused; a FIFO in place of ``store.toml`` is refused by every command.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest
from tests.kit.cli import run_cli
from tests.test_shared_machine import managed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


def device(path: Path, minor: int) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    return path


def special_files(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(out / "sock"))
    sock.close()
    (out / "folder").mkdir()
    (out / "target.toml").write_text("keep me\n")
    (out / "link").symlink_to(out / "target.toml")
    return {
        "device": device(out / "full", 7),
        "fifo": fifo,
        "socket": out / "sock",
        "folder": out / "folder",
        "link": out / "link",
    }


def kinds(paths: dict[str, Path]) -> dict[str, int]:
    return {k: stat.S_IFMT(os.lstat(p).st_mode) for k, p in paths.items()}


def test_output_refuses_whatever_is_not_a_regular_file(make_venv, kit_env, tmp_path):
    env = make_venv(tmp_path / "tf", ["tensorflow-cpu==2.15.1"])
    paths = special_files(tmp_path)
    before = kinds(paths)
    words = {
        "device": "character device",
        "fifo": "FIFO",
        "socket": "socket",
        "folder": "folder",
        "link": "symbolic link",
    }
    for kind, path in paths.items():
        for command in (["snapshot", "--env", env], ["export", "--env", env, "--offline"]):
            t0 = time.monotonic()
            run = run_cli(kit_env, *map(str, command), "-o", str(path), "--force", cwd=tmp_path, timeout=60)
            assert run.code == 2 and "Traceback" not in run.text, str(run)
            assert words[kind] in run.err and "Wrote" not in run.text, str(run)
            assert time.monotonic() - t0 < 30
    assert kinds(paths) == before
    assert (tmp_path / "out" / "target.toml").read_text() == "keep me\n"


def test_profile_that_is_not_a_regular_file_is_refused_at_once(kit_env, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    fifo = folder / "fifo.toml"
    os.mkfifo(fifo)
    zero = device(folder / "zero", 5)
    real = folder / "real.toml"
    real.write_text("schema = 1\n")
    link = folder / "link.toml"
    link.symlink_to(real)
    big = folder / "big.toml"
    big.write_bytes(b"# " + b"x" * (9 << 20) + b"\n")
    cases = {fifo: "FIFO", zero: "character device", link: "symbolic link", big: "larger than 8 MB"}
    for path, words in cases.items():
        t0 = time.monotonic()
        run = run_cli(kit_env, "export", "--profile", str(path), cwd=tmp_path, timeout=60)
        assert run.code == 2 and "Traceback" not in run.text, str(run)
        assert words in run.err, str(run)
        assert time.monotonic() - t0 < 20, "not refused at once"


def test_fifo_in_place_of_the_state_file_is_refused_by_every_command(tmp_path, kit_env):
    store = managed(tmp_path / "tf", 2)
    store.store_file.unlink()
    os.mkfifo(store.store_file)
    for args in (["status"], ["history"], ["rollback", "--yes"], ["gc", "--keep", "1", "--yes"]):
        run = run_cli(kit_env, *args, "--env", str(store.env), cwd=tmp_path, timeout=60)
        assert run.code == 1 and "Traceback" not in run.text, str(run)
        assert str(store.store_file) in run.err and "FIFO" in run.err, str(run)
    assert stat.S_ISFIFO(os.lstat(store.store_file).st_mode)
