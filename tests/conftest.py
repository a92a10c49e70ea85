"""Shared pytest fixtures: an offline fake TensorFlow universe and real venvs built from it.

Session fixtures
    ``kit_index``        Path: a flat ``--find-links`` folder with every catalog wheel
                         (see ``tests/kit/catalog.py``) plus the pip/setuptools wheels
                         bundled with the local Pythons and virtualenv.
    ``uv_cache``         Path: a UV cache dir private to this test session.
    ``kit_env``          dict: ``os.environ`` scrubbed of ``UV_*``/``PIP_*``/``VIRTUAL_ENV``/
                         ``PYTHONPATH`` and set up so uv and pip stay offline and use
                         ``kit_index`` (``UV_FIND_LINKS``, ``UV_OFFLINE=1``, ...).
    ``python_versions``  dict ``{"3.9": Path, ...}`` of working interpreters.
    ``pypi_reachable``   None, or ``pytest.skip`` with the reason when PyPI does not answer (one probe per
                         session; every test marked ``network`` gets it, asked for or not).

Function fixtures
    ``make_venv``        factory ``make_venv(path, packages, *, python=None, creator="uv", ...)``
                         -> Path of a real venv with ``packages`` installed offline.
    ``require_python``   factory ``require_python("3.9")`` -> Path, or ``pytest.skip``.
    ``venv_run``         factory ``venv_run(venv, code, **env_overrides)`` ->
                         ``CompletedProcess`` of ``<venv>/bin/python -c code`` under ``kit_env``.
    ``uv``               factory ``uv(*args, check=True)`` -> ``CompletedProcess`` of the
                         kit's uv under ``kit_env``.

Import the plain helpers with ``from tests.kit import ...`` (the repository root is
put on ``sys.path`` here, whatever pytest's import mode).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.kit import (  # noqa: E402
    KitCommandError,
    available_pythons,
    build_catalog,
    copy_seed_wheels,
    create_venv,
    find_python,
    offline_env,
    run_python,
    uv_bin,
    with_overrides,
)


PYPI_PROBE = "https://pypi.org/simple/tensorflow-cpu/"


@functools.cache
def pypi_unreachable() -> str | None:
    """Why the real PyPI cannot be used from here (``None`` when it answers): probed once per session, through
    this machine's own proxy settings, the page the end-to-end tests start from."""
    try:
        with urllib.request.urlopen(PYPI_PROBE, timeout=5) as response:
            response.read(1)
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, with the reason
        return (
            f"PyPI is unreachable: probing {PYPI_PROBE} with a 5 s timeout failed ({type(exc).__name__}: {exc}); "
            "this test needs the real package index"
        )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every ``network`` test is skipped, with the reason, before its fixtures build anything, when PyPI is away."""
    if item.get_closest_marker("network") is not None and pypi_unreachable():
        pytest.skip(pypi_unreachable())


@pytest.fixture(scope="session")
def pypi_reachable() -> None:
    """The one PyPI reachability check, for fixtures that need PyPI before a test runs."""
    reason = pypi_unreachable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def kit_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of all catalog wheels (+ bundled pip/setuptools), built once per session."""
    dest = tmp_path_factory.mktemp("kit-index")
    build_catalog(dest)
    copy_seed_wheels(dest, available_pythons().values())
    return dest


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A uv cache directory shared by the session (never the user's cache)."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="session")
def kit_env(kit_index: Path, uv_cache: Path) -> dict[str, str]:
    """Environment for running uv/pip (or tfrebuild) offline against ``kit_index``.

    A fresh ``dict`` copy is returned each time you call ``dict(kit_env)``; do not
    mutate the shared one.  See :func:`tests.kit.venvs.offline_env` for the keys.
    """
    return offline_env(cache_dir=uv_cache, find_links=kit_index)


@pytest.fixture(scope="session")
def python_versions() -> dict[str, Path]:
    """``{"3.8": Path, "3.9": Path, ...}`` for each interpreter that really runs."""
    return available_pythons()


@pytest.fixture
def require_python() -> Callable[[str], Path]:
    """``require_python("3.9")`` -> interpreter path, or skip the test with a clear reason."""

    def _require(minor: str) -> Path:
        py = find_python(minor)
        if py is None:
            pytest.skip(f"Python {minor} is not installed (looked in pyenv versions and PATH)")
        return py

    return _require


@pytest.fixture(scope="session")
def _virtualenv_app_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("virtualenv-app-data")


@pytest.fixture
def make_venv(
    kit_index: Path, kit_env: dict[str, str], tmp_path: Path, _virtualenv_app_data: Path
) -> Callable[..., Path]:
    """Factory: ``make_venv(path, packages=(), *, python=None, creator="uv", ...) -> Path``.

    * ``path``: where to create it; a relative path is taken under the test's ``tmp_path``.
    * ``packages``: requirement strings, installed offline from ``kit_index``.
    * ``python``: interpreter path or version ("3.9"); missing version -> ``pytest.skip``.
    * ``creator``: ``"uv"`` (uv venv + uv pip install; ~0.1 s), ``"venv"`` (stdlib venv
      + pip inside, pip-installed; ~2 s) or ``"virtualenv"`` (skips if not importable).
    * ``extra_find_links``: more wheel folders (e.g. your own ``build_wheel`` output).
    * ``install_args``: extra installer arguments, e.g. ``["--no-deps"]``.
    * ``seed`` (uv only): put pip/setuptools in the venv (``uv venv --seed``).
    * ``ensurepip`` (venv only): literal ``python -m venv`` with ensurepip (~4 s).
    * ``env``: overrides merged into ``kit_env`` for the creation commands.
    """

    def _make(
        path: str | Path,
        packages: Sequence[str] = (),
        *,
        python: str | Path | None = None,
        creator: str = "uv",
        extra_find_links: Iterable[str | Path] = (),
        install_args: Sequence[str] = (),
        seed: bool = False,
        ensurepip: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Path:
        path = Path(path)
        if not path.is_absolute():
            path = tmp_path / path
        if python is not None and re.fullmatch(r"3\.\d+|\d+", str(python)):
            found = find_python(str(python))
            if found is None:
                pytest.skip(f"Python {python} is not installed (looked in pyenv versions and PATH)")
            python = found
        if creator == "virtualenv":
            pytest.importorskip("virtualenv", reason="virtualenv is not importable")
        run_env = dict(kit_env)
        run_env.update(env or {})
        try:
            return create_venv(
                path,
                list(packages),
                find_links=kit_index,
                python=python,
                creator=creator,
                env=run_env,
                extra_find_links=extra_find_links,
                install_args=install_args,
                seed=seed,
                app_data=_virtualenv_app_data,
                ensurepip=ensurepip,
            )
        except KitCommandError as exc:
            if creator == "virtualenv" and "no longer ships pip/setuptools" in str(exc):
                pytest.skip(f"this virtualenv cannot seed Python {python}: {exc.proc.stdout.strip()}")
            raise

    return _make


@pytest.fixture
def venv_run(kit_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Factory: ``venv_run(venv, code, **env)`` runs ``code`` in the venv; never raises.

    Keyword arguments are environment overrides (``FAKE_TF_GPUS="2"``); a value of
    ``None`` removes the variable.
    """

    def _run(venv: str | Path, code: str, **overrides: str | None) -> subprocess.CompletedProcess:
        return run_python(venv, code, env=with_overrides(kit_env, overrides))

    return _run


@pytest.fixture
def uv(kit_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Factory: ``uv("pip", "install", ..., check=True)`` runs the kit's uv under ``kit_env``.

    ``--no-index``/``--find-links`` are *not* added for you (``kit_env`` sets
    ``UV_FIND_LINKS`` and ``UV_OFFLINE``).  With ``check=True`` a failure raises
    :class:`tests.kit.KitCommandError` showing uv's output.
    """

    def _uv(*args: str | os.PathLike, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        cmd = [uv_bin(), *map(str, args)]
        proc = subprocess.run(cmd, env=dict(kit_env), capture_output=True, text=True, input=input, timeout=300)
        if check and proc.returncode != 0:
            raise KitCommandError(cmd, proc)
        return proc

    return _uv


@pytest.fixture
def kit_os_env(monkeypatch, kit_env):
    """Run core functions in-process exactly as the CLI would under ``kit_env`` (offline, no user config)."""
    for key in list(os.environ):
        if key not in kit_env:
            monkeypatch.delenv(key)
    for key, value in kit_env.items():
        monkeypatch.setenv(key, value)
    return kit_env
