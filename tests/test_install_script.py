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


def test_no_writable_folder_on_path_links_into_local_bin_and_says_so(installer, target, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert installer.place_link(target, None) == 3
    link = tmp_path / "home" / ".local" / "bin" / "tfrebuild"
    assert os.readlink(link) == str(target)
    assert f'export PATH="{link.parent}:$PATH"' in capsys.readouterr().out


def test_the_bin_of_a_venv_or_conda_env_never_takes_the_link(installer, target, tmp_path, monkeypatch):
    """With a venv active its ``bin`` is first on PATH and writable; ``tfrebuild upgrade --yes`` would swap the
    link away with the env. Skipped: a ``bin`` beside ``pyvenv.cfg`` or ``conda-meta``, ``$VIRTUAL_ENV/bin``,
    ``$CONDA_PREFIX/bin``."""
    venv_bin, conda_bin, active, conda_active, plain = (
        tmp_path / n / "bin" for n in ("venv", "conda", "active", "base", "tools")
    )
    for folder in (venv_bin, conda_bin, active, conda_active, plain):
        folder.mkdir(parents=True)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "conda" / "conda-meta").mkdir()
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path / "active"))  # no pyvenv.cfg there: the variable alone counts
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "base"))
    monkeypatch.setenv("PATH", os.pathsep.join(map(str, (active, venv_bin, conda_active, conda_bin, plain))))
    assert installer.bin_dirs() == [plain]
    assert installer.place_link(target, None) == 0
    assert os.readlink(plain / "tfrebuild") == str(target)
    assert not any(os.path.lexists(f / "tfrebuild") for f in (venv_bin, conda_bin, active, conda_active))
    monkeypatch.delenv("VIRTUAL_ENV")
    monkeypatch.delenv("CONDA_PREFIX")
    assert installer.bin_dirs() == [active, conda_active, plain]


def test_an_empty_home_is_an_unset_one(installer, tmp_path, monkeypatch):
    """``HOME=`` must not make the prefix ``/.local/share/tfrebuild/venv``: the password database's home."""
    import pwd

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    own = pwd.getpwuid(os.getuid()).pw_dir
    assert installer.home() == Path(own)
    assert installer.default_prefix() == Path(own) / ".local" / "share" / "tfrebuild" / "venv"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # not absolute: ignored, as the XDG spec says
    assert installer.default_prefix() == Path(own) / ".local" / "share" / "tfrebuild" / "venv"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert installer.default_prefix() == tmp_path / ".local" / "share" / "tfrebuild" / "venv"


@pytest.mark.parametrize("home, database", [("", "/"), ("/", "/root"), ("relative", "/root"), ("", "")])
def test_no_usable_home_is_refused_before_anything_is_made(installer, tmp_path, monkeypatch, capsys, home, database):
    import pwd

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", home)
    entry = pwd.getpwuid(os.getuid())
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: pwd.struct_passwd((*entry[:5], database, entry[6])))
    monkeypatch.setattr(installer, "make_venv", lambda prefix: pytest.fail(f"made a venv at {prefix}"))
    with pytest.raises(SystemExit) as exited:
        installer.main([])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "cannot tell your home folder" in err and "--prefix DIR" in err
