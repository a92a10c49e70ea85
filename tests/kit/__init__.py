"""Offline test kit for tfrebuild: fake TensorFlow-ecosystem wheels and venv helpers.

* :mod:`.wheels`  -- :func:`build_wheel`, a stdlib-only wheel writer.
* :mod:`.catalog` -- the fake package universe (:data:`CATALOG`) and :func:`build_catalog`.
* :mod:`.venvs`   -- :func:`find_python`, :func:`offline_env`, :func:`create_venv`, ...
* :mod:`.cli`     -- :func:`run_cli` (the one way tests run ``python -m rebuild``), :func:`tree_state`.

The pytest fixtures that wrap these live in ``tests/conftest.py``.
"""

from .catalog import CATALOG, MANYLINUX, TF_VERSIONS, Release, build_catalog, latest, releases, versions
from .venvs import (
    KitCommandError,
    available_pythons,
    copy_seed_wheels,
    create_venv,
    find_python,
    offline_env,
    pyenv_root,
    resolve,
    run_python,
    uv_bin,
    venv_python,
    with_overrides,
)
from .wheels import build_wheel, normalize_name, record_rows, wheel_filename

__all__ = [
    "CATALOG",
    "MANYLINUX",
    "TF_VERSIONS",
    "Release",
    "build_catalog",
    "latest",
    "releases",
    "versions",
    "KitCommandError",
    "available_pythons",
    "copy_seed_wheels",
    "create_venv",
    "find_python",
    "offline_env",
    "pyenv_root",
    "resolve",
    "run_python",
    "uv_bin",
    "venv_python",
    "with_overrides",
    "build_wheel",
    "normalize_name",
    "record_rows",
    "wheel_filename",
]
