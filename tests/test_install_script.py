"""install.py's choice of where ``tfrebuild`` goes on PATH (offline; the install itself is run by
tests/test_readme.py on a fresh machine and by tests/test_project_advice.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def installer():
    spec = importlib.util.spec_from_file_location("tfrebuild_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def target(tmp_path: Path) -> Path:
    exe = tmp_path / "share" / "tfrebuild" / "venv" / "bin" / "tfrebuild"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho tfrebuild\n")
    exe.chmod(0o755)
    return exe


def test_first_writable_folder_on_path_skipping_sbin_and_shims(installer, target, tmp_path, monkeypatch):
    sbin, shims, missing, first, second = (tmp_path / n for n in ("sbin", "pyenv/shims", "missing", "bin", "bin2"))
    for folder in (sbin, shims, first, second):
        folder.mkdir(parents=True)
    monkeypatch.setenv("PATH", os.pathsep.join(map(str, (sbin, shims, missing, "relative", first, second))))
    assert installer.bin_dirs() == [first, second]
    assert installer.place_link(target, None) == 0
    assert os.readlink(first / "tfrebuild") == str(target)
    assert installer.place_link(target, None) == 0, "a second install finds its own link"


def test_a_foreign_tfrebuild_is_left_alone(installer, target, tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "bin", tmp_path / "bin2"
    first.mkdir()
    second.mkdir()
    (first / "tfrebuild").write_text("#!/bin/sh\necho someone else's\n")
    (first / "tfrebuild").chmod(0o755)
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{second}")
    assert installer.place_link(target, None) == 3, "the other tfrebuild comes first on PATH"
    assert (first / "tfrebuild").read_text().endswith("someone else's\n")
    assert os.readlink(second / "tfrebuild") == str(target)
    assert "comes first on your PATH" in capsys.readouterr().out


def test_no_writable_folder_on_path_links_into_local_bin_and_says_so(installer, target, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert installer.place_link(target, None) == 3
    link = tmp_path / "home" / ".local" / "bin" / "tfrebuild"
    assert os.readlink(link) == str(target)
    assert f'export PATH="{link.parent}:$PATH"' in capsys.readouterr().out
