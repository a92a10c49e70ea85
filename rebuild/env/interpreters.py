"""Find Python interpreters on this machine, including the ones uv misses.

uv's discovery walks ``PATH``; pyenv shims of versions that are not active
exit 127 there, so ``uv python find 3.9`` fails although 3.9 is installed.
We therefore also look in pyenv's versions folder, conda's env folders and
the usual system locations, and verify each candidate by running it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from rebuild.util import uv as uvcmd
from rebuild.errors import UserError
from rebuild.util import proc
from rebuild.util import versions


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: str  # "3.12.1"
    source: str  # where it was found

    @property
    def minor(self) -> str:
        return versions.minor(self.version)


def _pyenv_root() -> Path | None:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def _candidate_paths() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    root = _pyenv_root()
    if root:
        for exe in sorted(glob.glob(str(root / "versions" / "*" / "bin" / "python3.*"))):
            if not exe.endswith("-config"):
                found.append((Path(exe), "pyenv"))
    for base in (Path.home() / "miniconda3", Path.home() / "anaconda3", Path.home() / "miniforge3", Path("/opt/conda")):
        for path in [base / "bin" / "python3"] + sorted(
            Path(p) for p in glob.glob(str(base / "envs" / "*" / "bin" / "python3"))
        ):
            if path.exists():
                found.append((path, "conda"))
    for folder in ("/usr/local/bin", "/usr/bin"):
        for exe in sorted(glob.glob(f"{folder}/python3.[0-9]*")):
            if not exe.endswith("-config") and Path(exe).name.count(".") == 1:
                found.append((Path(exe), "system"))
    on_path = shutil.which("python3")
    if on_path:
        found.append((Path(on_path), "PATH"))
    return found


def version_of(exe: Path) -> str | None:
    """``"3.12.1"`` for a working interpreter ``exe``; ``None`` when it does not run."""
    result = proc.run([exe, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], timeout=10)
    return result.stdout.strip() if result.ok else None


def real_path(path: str | os.PathLike, version: str) -> str:
    """The real interpreter behind ``path``: a pyenv shim (``<root>/shims/python3``, a script that picks a version
    when it runs) is ``<root>/versions/<version>/bin/python…``; anything else, its real path."""
    shim = Path(path)
    if shim.parent.name == "shims" and version:
        for name in (shim.name, f"python{versions.minor(version)}", "python3"):
            candidate = shim.parent.parent / "versions" / version / "bin" / name
            if candidate.exists():
                return os.path.realpath(candidate)
    return os.path.realpath(path)


def discover() -> list[Interpreter]:
    """Every working interpreter we can find, newest first, one per real path (pyenv shims resolved)."""
    seen: set[str] = set()
    out: list[Interpreter] = []
    for exe, source in _candidate_paths():
        real = os.path.realpath(exe)
        if real in seen:
            continue
        seen.add(real)
        version = version_of(exe)
        real = real_path(exe, version or "")
        key = f"{version}@{Path(real).parent}"
        if version and key not in seen:
            seen.add(key)
            out.append(Interpreter(exe, version, source))
    out.sort(key=lambda i: Version(i.version), reverse=True)
    return out


def find(request: str, *, allow_download: bool = False) -> Interpreter:
    """An interpreter for ``request`` (``3.12``, ``3.12.1`` or a path)."""
    if os.sep in request or request.startswith("."):
        exe = Path(request).expanduser()
        version = version_of(exe) if exe.exists() else None
        if not version:
            raise UserError(
                f"{exe} is not a working Python interpreter.", "Pass a version such as 3.12, or a path to python3.X."
            )
        return Interpreter(exe.absolute(), version, "given")
    try:
        wanted = Version(request)
    except InvalidVersion as exc:
        raise UserError(
            f"'{request}' is not a Python version.", "Use a version such as 3.12 or a path to an interpreter."
        ) from exc
    parts = len(request.split("."))
    for interp in discover():
        have = Version(interp.version)
        if have.release[:parts] == wanted.release[:parts]:
            return interp
    result = uvcmd.run(["python", "find", request], allow_python_downloads=allow_download, check=False)
    if result.returncode == 0 and result.stdout.strip():
        exe = Path(result.stdout.strip())
        version = version_of(exe)
        if version:
            return Interpreter(exe, version, "uv")
    if allow_download:
        uvcmd.run(["python", "install", request], allow_python_downloads=True, what="uv python install")
        result = uvcmd.run(["python", "find", request], allow_python_downloads=True, check=False)
        if result.returncode == 0:
            exe = Path(result.stdout.strip())
            return Interpreter(exe, version_of(exe) or request, "uv (downloaded)")
    found = ", ".join(f"{i.version} ({i.path})" for i in discover()) or "none"
    raise UserError(
        f"No Python {request} was found on this machine.",
        f"Install it (e.g. `pyenv install {request}`), or pass --allow-python-download. Found: {found}.",
    )


def as_json(interps: list[Interpreter]) -> str:
    return json.dumps([{"path": str(i.path), "version": i.version, "source": i.source} for i in interps])
