"""Offline virtual environments made from the kit's wheels (no pytest needed here).

* :func:`find_python` / :func:`available_pythons` locate real interpreters
  (pyenv's ``versions`` folder first; ``PATH`` only if the candidate really runs,
  because pyenv shims for non-global versions exit 127).
* :func:`offline_env` is a scrubbed environment in which uv and pip cannot
  reach an index or read user/site configuration.
* :func:`create_venv` makes a venv with uv, ``python -m venv`` (+pip) or
  virtualenv (+pip) and installs packages from a ``--find-links`` folder.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = [
    "uv_bin",
    "pyenv_root",
    "find_python",
    "available_pythons",
    "offline_env",
    "with_overrides",
    "venv_python",
    "create_venv",
    "run_python",
    "resolve",
    "copy_seed_wheels",
    "KitCommandError",
]

CREATORS = ("uv", "venv", "virtualenv")


class KitCommandError(RuntimeError):
    """A command the kit ran failed; the message carries its stdout/stderr."""

    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess):
        self.proc = proc
        super().__init__(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


@functools.lru_cache(maxsize=None)
def uv_bin() -> str:
    """The uv executable shipped by the ``uv`` PyPI package (``$TFREBUILD_UV`` wins)."""
    override = os.environ.get("TFREBUILD_UV")
    if override:
        return override
    import uv

    return uv.find_uv_bin()


@functools.lru_cache(maxsize=None)
def pyenv_root() -> Path:
    """``pyenv root`` if pyenv runs, else ``$PYENV_ROOT`` or ``~/.pyenv``."""
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _runs(python: str | Path) -> bool:
    try:
        return subprocess.run([str(python), "-c", "pass"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _normalise_minor(minor: str) -> str:
    minor = str(minor).strip()
    if re.fullmatch(r"\d+", minor):  # "9" -> "3.9"
        minor = f"3.{minor}"
    if not re.fullmatch(r"3\.\d+", minor):
        raise ValueError(f"expected a version like '3.9', got {minor!r}")
    return minor


def _vkey(path: str) -> tuple[int, ...]:
    m = re.search(r"versions/(\d+)\.(\d+)\.(\d+)", path)
    return tuple(int(x) for x in m.groups()) if m else (0,)


@functools.lru_cache(maxsize=None)
def find_python(minor: str) -> Path | None:
    """A working ``python3.X`` for ``minor`` ("3.9" or "9"), or None.

    Looks in ``$(pyenv root)/versions/3.X.*/bin/python3.X`` (newest patch first),
    then ``shutil.which("python3.X")``.  Every candidate must run ``-c pass``.
    """
    minor = _normalise_minor(minor)
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor and sys.prefix == sys.base_prefix:
        base = Path(sys.executable)
        if _runs(base):
            return base
    candidates = sorted(
        glob.glob(str(pyenv_root() / "versions" / f"{minor}.*" / "bin" / f"python{minor}")), key=_vkey, reverse=True
    )
    which = shutil.which(f"python{minor}")
    if which:
        candidates.append(which)
    for cand in candidates:
        if os.access(cand, os.X_OK) and _runs(cand):
            return Path(cand)
    return None


def available_pythons(minors: Iterable[str] = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")) -> dict[str, Path]:
    """``{"3.9": Path(...), ...}`` for every minor that :func:`find_python` can find."""
    found = {}
    for minor in minors:
        py = find_python(minor)
        if py is not None:
            found[_normalise_minor(minor)] = py
    return found


_SCRUB_PREFIXES = ("UV_", "PIP_", "VIRTUALENV_")
_SCRUB_NAMES = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "PYTHONSTARTUP", "PYTHONUSERBASE"}


def offline_env(
    base: Mapping[str, str] | None = None,
    *,
    cache_dir: str | Path | None = None,
    find_links: str | Path | None = None,
) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) that keeps uv and pip offline.

    Drops ``UV_*``, ``PIP_*``, ``VIRTUALENV_*``, ``VIRTUAL_ENV``, ``PYTHONPATH`` (and
    similar), then sets:

    * ``UV_NO_CONFIG=1``, ``UV_PYTHON_DOWNLOADS=never`` (the env form of
      ``--no-python-downloads``), ``UV_OFFLINE=1``, ``UV_LINK_MODE=copy`` (so a
      test that edits an installed file cannot corrupt the shared cache),
      ``UV_NO_PROGRESS=1``; ``UV_CACHE_DIR`` when ``cache_dir`` is given, and ``TFREBUILD_PYC_CACHE``
      beside it (``off`` without one); ``TFREBUILD_PLAN_CACHE=off``;
    * ``PIP_CONFIG_FILE=/dev/null``, ``PIP_DISABLE_PIP_VERSION_CHECK=1``,
      ``PIP_NO_INPUT=1``;
    * with ``find_links``: ``UV_FIND_LINKS``, ``PIP_FIND_LINKS`` and ``PIP_NO_INDEX=1``
      (uv has no environment variable for ``--no-index``; ``UV_OFFLINE`` keeps it
      from reaching PyPI, and the kit's own commands pass ``--no-index``);
    * ``VIRTUALENV_NO_PERIODIC_UPDATE=1`` / ``VIRTUALENV_NO_DOWNLOAD=1``.
    """
    src = dict(os.environ if base is None else base)
    env = {k: v for k, v in src.items() if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES}
    env.update(
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        UV_OFFLINE="1",
        UV_LINK_MODE="copy",
        UV_NO_PROGRESS="1",
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        VIRTUALENV_NO_PERIODIC_UPDATE="1",
        VIRTUALENV_NO_DOWNLOAD="1",
        PYTHONDONTWRITEBYTECODE=src.get("PYTHONDONTWRITEBYTECODE", "1"),
    )
    # tfrebuild's pyc cache: beside the session's uv cache, never the user's (off without a cache folder,
    # so that uv's own --compile-bytecode keeps being exercised too)
    env["TFREBUILD_PYC_CACHE"] = str(Path(cache_dir) / "tfrebuild-pyc") if cache_dir is not None else "off"
    # the plan cache (plan then upgrade resolves once): off, so that each test's upgrade resolves; the tests of
    # the reuse turn it on in a folder of their own (tests/test_plan_reuse.py)
    env["TFREBUILD_PLAN_CACHE"] = "off"
    if cache_dir is not None:
        env["UV_CACHE_DIR"] = str(cache_dir)
    if find_links is not None:
        env["UV_FIND_LINKS"] = str(find_links)
        env["PIP_FIND_LINKS"] = str(find_links)
        env["PIP_NO_INDEX"] = "1"
    return env


def with_overrides(env: Mapping[str, str], overrides: Mapping[str, object] | None) -> dict[str, str]:
    """A copy of ``env`` with ``overrides`` set (``str()``-ed); a value of ``None`` removes the variable."""
    out = dict(env)
    for key, value in (overrides or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def venv_python(venv: str | Path) -> Path:
    """The interpreter inside a venv (``bin/python`` or ``Scripts/python.exe``)."""
    venv = Path(venv)
    win = venv / "Scripts" / "python.exe"
    return win if win.exists() else venv / "bin" / "python"


def _run(args: Sequence[str], env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise KitCommandError(args, proc)
    return proc


def _resolve_python(python: str | Path | None) -> Path:
    if python is None:
        return Path(sys.executable)
    text = str(python)
    if re.fullmatch(r"3\.\d+|\d+", text):
        found = find_python(text)
        if found is None:
            raise LookupError(f"no working Python {text} on this machine")
        return found
    return Path(python)


def create_venv(
    path: str | Path,
    packages: Sequence[str] = (),
    *,
    find_links: str | Path | Sequence[str | Path],
    python: str | Path | None = None,
    creator: str = "uv",
    env: Mapping[str, str] | None = None,
    extra_find_links: Iterable[str | Path] = (),
    install_args: Sequence[str] = (),
    seed: bool = False,
    app_data: str | Path | None = None,
    ensurepip: bool = False,
) -> Path:
    """Create a venv at ``path`` and install ``packages`` offline; return ``path``.

    ``python`` is an interpreter path or a version such as ``"3.9"`` (default:
    the running interpreter).  ``creator``:

    * ``"uv"``: ``uv venv`` then ``uv pip install --no-index --find-links ...``.
      No pip inside unless ``seed=True`` (needs pip in a find-links folder, see
      :func:`copy_seed_wheels`).
    * ``"venv"``: ``python -m venv`` then pip installs the packages (a "pip-made"
      env: pip inside, absolute shebangs, ``INSTALLER`` = ``pip``).  By default
      the venv is made ``--without-pip`` and pip installs itself (and setuptools,
      if that Python bundles it) from the interpreter's ``ensurepip`` wheels in
      the same command as the packages, without bytecode compilation: the same
      result as ensurepip in about half the time.  ``ensurepip=True`` runs the
      literal ``python -m venv`` + ``bin/python -m pip install`` instead.
    * ``"virtualenv"``: ``python -m virtualenv -p <python>`` (running interpreter's
      virtualenv) then the venv's pip, as above.

    ``install_args`` are added to the install command (e.g. ``["--no-deps"]``).
    Raises :class:`KitCommandError` with the tool's output when a step fails.
    """
    if creator not in CREATORS:
        raise ValueError(f"creator must be one of {CREATORS}, got {creator!r}")
    path = Path(path)
    py = _resolve_python(python)
    links = [find_links] if isinstance(find_links, (str, Path)) else list(find_links)
    links += list(extra_find_links)
    env = dict(env) if env is not None else offline_env()
    link_args = ["--no-index"]
    for link in links:
        link_args += ["--find-links", str(link)]

    if creator == "uv":
        cmd = [uv_bin(), "venv", "--no-python-downloads", "--no-config", "-q", "--python", str(py)]
        if seed:
            cmd += ["--seed", *link_args]
        _run(cmd + [str(path)], env)
        if packages:
            _run(
                [
                    uv_bin(),
                    "pip",
                    "install",
                    "--no-python-downloads",
                    "--no-config",
                    "-q",
                    "--python",
                    str(venv_python(path)),
                    *link_args,
                    *install_args,
                    *packages,
                ],
                env,
            )
        return path

    if creator == "venv":
        bundled = [] if ensurepip else _bundled_seed_wheels(py)
        if bundled:
            # What ensurepip does (pip installs itself from its bundled wheel), minus the
            # bytecode compilation that makes ``python -m venv`` take ~4 s.
            _run([str(py), "-m", "venv", "--without-pip", str(path)], env)
            pip_whl = next(w for w in bundled if w.name.startswith("pip-"))
            _run(
                [
                    str(venv_python(path)),
                    str(pip_whl / "pip"),
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-compile",
                    *link_args,
                    *install_args,
                    *map(str, bundled),
                    *packages,
                ],
                env,
            )
            return path
        _run([str(py), "-m", "venv", str(path)], env)
    else:
        try:
            import virtualenv  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise LookupError("virtualenv is not importable by the running interpreter") from exc
        venv_env = dict(env)
        if app_data is not None:
            venv_env["VIRTUALENV_OVERRIDE_APP_DATA"] = str(app_data)
        _run([sys.executable, "-m", "virtualenv", "-q", "--no-periodic-update", "-p", str(py), str(path)], venv_env)
    if packages:
        _run(
            [
                str(venv_python(path)),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *link_args,
                *install_args,
                *packages,
            ],
            env,
        )
    return path


_ENSUREPIP_PROBE = (
    "import ensurepip, os; print(os.path.dirname(ensurepip.__file__)); "
    "print(ensurepip.version()); print(getattr(ensurepip, '_SETUPTOOLS_VERSION', ''))"
)


@functools.lru_cache(maxsize=None)
def _bundled_seed_wheels(python: Path) -> tuple[Path, ...]:
    """The pip (first) and setuptools wheels that ``python``'s ensurepip would install, or ()."""
    try:
        out = subprocess.run([str(python), "-c", _ENSUREPIP_PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ()
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) < 3:
        return ()
    bundled = Path(lines[0]) / "_bundled"
    pip = sorted(bundled.glob(f"pip-{lines[1]}-*.whl"))
    if not pip:
        return ()
    setuptools = sorted(bundled.glob(f"setuptools-{lines[2]}-*.whl")) if lines[2] else []
    return (pip[0], *setuptools[:1])


def resolve(
    requirements: Sequence[str],
    *,
    find_links: str | Path | Sequence[str | Path],
    python_version: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> dict[str, str]:
    """Resolve ``requirements`` with ``uv pip compile`` (no venv, no install).

    Returns ``{normalised_name: version}``.  ``python_version`` ("3.9") is the
    target interpreter version (default: the running one).  Raises
    :class:`KitCommandError` (uv's explanation in ``.proc.stderr``) when there
    is no solution.
    """
    from .wheels import normalize_name

    links = [find_links] if isinstance(find_links, (str, Path)) else list(find_links)
    args = [
        uv_bin(),
        "pip",
        "compile",
        "-",
        "--no-config",
        "--no-python-downloads",
        "--no-header",
        "--no-annotate",
        "--quiet",
        "--no-index",
    ]
    for link in links:
        args += ["--find-links", str(link)]
    args += ["--python-version", python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"]
    args += list(extra_args)
    env = dict(env) if env is not None else offline_env()
    proc = subprocess.run(
        args, input="\n".join(requirements) + "\n", env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise KitCommandError(args, proc)
    pins = {}
    for line in proc.stdout.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize_name(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def run_python(
    venv_or_python: str | Path,
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``code`` with a venv's interpreter (or a given python); never raises on failure."""
    target = Path(venv_or_python)
    py = venv_python(target) if target.is_dir() else target
    return subprocess.run(
        [str(py), "-c", code],
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_seed_wheels(dest_dir: str | Path, pythons: Iterable[str | Path] = ()) -> list[Path]:
    """Copy the pip/setuptools/wheel wheels bundled with Pythons (``ensurepip``) and
    with virtualenv into ``dest_dir``, so envs that contain pip can be rebuilt offline.

    Returns the copied files.  Best effort: missing folders are skipped.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    folders: list[Path] = []
    for py in [sys.executable, *pythons]:
        prefix = Path(py).resolve().parent.parent
        folders += [Path(p) for p in glob.glob(str(prefix / "lib" / "python3.*" / "ensurepip" / "_bundled"))]
    folders.append(Path(sysconfig.get_paths()["stdlib"]) / "ensurepip" / "_bundled")
    try:
        import virtualenv

        folders.append(Path(virtualenv.__file__).parent / "seed" / "wheels" / "embed")
    except ImportError:
        pass
    copied = []
    for folder in folders:
        for whl in sorted(folder.glob("*.whl")) if folder.is_dir() else ():
            target = dest / whl.name
            if not target.exists():
                shutil.copyfile(whl, target)
            copied.append(target)
    return copied
