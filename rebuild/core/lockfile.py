"""Standard lock files: read, check, localise and write PEP 751 locks.

A profile's ``lock`` names a ``pylock.toml`` (PEP 751) beside it: every package at an
exact version with the files it may be installed from and their hashes. This module is
the one place that reads, checks and rewrites such locks (``apply``, ``bundle`` and
``export`` use it); :mod:`rebuild.core.lockmake` makes new ones with uv.

Not ``packaging.pylock``: it checks a stricter subset than the locks tfrebuild must
read -- it requires ``created-by`` and a hash on every file, where a lock of
``--find-links`` wheels or one written by hand may have none (``bundle`` computes and
records them) -- and its errors name keys, not what to do about a damaged lock.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import tomli_w
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.util import fs

FORMATS = ("pylock", "requirements")
NEW_LOCK_HINT = "Take a new snapshot with `tfrebuild snapshot`, or restore the lock from where it came from."


# --------------------------------------------------------------------------- the lock model


@dataclass
class LockedFile:
    """One wheel or sdist of a locked package, as the lock names it."""

    kind: str  # wheel | sdist
    filename: str
    url: str = ""
    path: str = ""
    hashes: dict[str, str] = field(default_factory=dict)
    size: int | None = None

    def local_path(self, base: Path | None) -> Path | None:
        """The file on this machine a ``path`` or ``file://`` URL names (it may not exist)."""
        if self.path:
            p = Path(os.path.expanduser(self.path))
            return p if p.is_absolute() or base is None else base / p
        if self.url.lower().startswith("file:"):
            parts = urlsplit(self.url)
            if parts.netloc in ("", "localhost"):
                return Path(unquote(parts.path))
        return None

    @property
    def remote(self) -> bool:
        return not self.path and self.url.lower().startswith(("http://", "https://"))


@dataclass
class LockedPackage:
    name: str  # canonical
    version: str
    marker: str = ""
    requires_python: str = ""
    wheels: list[LockedFile] = field(default_factory=list)
    sdist: LockedFile | None = None
    # A package locked from its own source: ("directory" | "archive" | "vcs", its table), else None.
    source: tuple[str, dict[str, Any]] | None = None

    @property
    def files(self) -> list[LockedFile]:
        return self.wheels + ([self.sdist] if self.sdist else [])

    @property
    def hashed(self) -> bool:
        if self.source is not None:
            return self.source[0] == "archive" and bool(self.source[1].get("hashes"))
        return bool(self.files) and all(f.hashes for f in self.files)

    @property
    def requirement(self) -> str:
        """The line that installs a package locked from its source again (``-e /path``, ``name @ ...``)."""
        if self.source is None:
            return f"{self.name}=={self.version}"
        kind, table = self.source
        where = table.get("path") or table.get("url") or ""
        if kind == "vcs":
            commit = table.get("commit-id") or table.get("requested-revision") or ""
            url = table.get("url") or Path(where).absolute().as_uri()
            return f"{self.name} @ {table.get('type', 'git')}+{url}" + (f"@{commit}" if commit else "")
        if table.get("path"):
            where = Path(os.path.expanduser(table["path"])).absolute().as_uri()
        if kind == "directory" and table.get("editable"):
            return f"-e {unquote(urlsplit(where).path) if where.startswith('file:') else where}"
        return f"{self.name} @ {where}"


@dataclass
class Lock:
    """A parsed PEP 751 lock. ``data`` is the TOML document; ``base`` resolves relative paths."""

    data: dict[str, Any]
    packages: list[LockedPackage]
    where: str
    base: Path | None = None

    def pins(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}

    @property
    def all_hashed(self) -> bool:
        return all(p.hashed for p in self.packages)

    def text(self) -> str:
        return tomli_w.dumps(self.data)

    def package(self, name: str) -> LockedPackage | None:
        return next((p for p in self.packages if p.name == name), None)


def file_name(table: dict[str, Any]) -> str:
    """The file name a lock's file table gives (its ``name``, else the tail of its ``path`` or ``url``)."""
    for key in ("name", "path", "url"):
        value = table.get(key)
        if isinstance(value, str) and value:
            tail = urlsplit(value).path if key == "url" else value
            return unquote(tail.replace("\\", "/").rsplit("/", 1)[-1])
    return ""


def _file(table: object, kind: str, where: str) -> LockedFile:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    url, path = table.get("url", ""), table.get("path", "")
    if not isinstance(url, str) or not isinstance(path, str) or not (url or path):
        raise ValueError(f"{where}: needs a url or a path")
    hashes = table.get("hashes", {})
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{where}: hashes must be a table of strings")
    for algo, digest in hashes.items():
        if algo == "sha256" and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower())):
            raise ValueError(f"{where}: sha256 {digest!r} is not 64 hex digits")
    size = table.get("size")
    filename = file_name(table)
    if kind == "wheel":
        try:
            parse_wheel_filename(filename)
        except InvalidWheelFilename as exc:
            raise ValueError(f"{where}: {filename!r} is not a wheel file name") from exc
    return LockedFile(kind, filename, url, path, dict(hashes), size if isinstance(size, int) else None)


def parse_lock(text: str, where: str, base: Path | None = None) -> Lock:
    """Parse and check a PEP 751 lock; every problem is a :class:`UserError` naming ``where``."""
    try:
        data = fs.toml_document(text)  # nesting capped
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"The lock {where} is not valid TOML (truncated or edited?): {exc}.", NEW_LOCK_HINT) from exc
    version = data.get("lock-version")
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise UserError(
            f"The lock {where} has lock-version {version!r}; tfrebuild reads PEP 751 lock-version 1.x.", NEW_LOCK_HINT
        )
    raw_packages = data.get("packages")
    if not isinstance(raw_packages, list) or not raw_packages:
        raise UserError(f"The lock {where} lists no packages (truncated?).", NEW_LOCK_HINT)
    packages: list[LockedPackage] = []
    try:
        for i, raw in enumerate(raw_packages):
            at = f"packages[{i}]"
            if (
                not isinstance(raw, dict)
                or not isinstance(raw.get("name"), str)
                or not (isinstance(raw.get("version"), str) or ("directory" in raw and "version" not in raw))
            ):
                raise ValueError(f"{at}: needs a name and a version")
            at = f"packages[{i}] ({raw['name']})"
            source = next(((key, raw[key]) for key in ("directory", "archive", "vcs") if key in raw), None)
            if source is not None and not (
                isinstance(source[1], dict) and (source[1].get("path") or source[1].get("url"))
            ):
                raise ValueError(f"{at}.{source[0]}: needs a path or a url")
            wheels = raw.get("wheels", [])
            if not isinstance(wheels, list):
                raise ValueError(f"{at}: wheels must be a list")
            pkg = LockedPackage(
                name=canonicalize_name(raw["name"]),
                version=raw.get("version", ""),
                marker=str(raw.get("marker", "")),
                requires_python=str(raw.get("requires-python", "")),
                wheels=[_file(w, "wheel", f"{at}.wheels[{j}]") for j, w in enumerate(wheels)],
                sdist=_file(raw["sdist"], "sdist", f"{at}.sdist") if "sdist" in raw else None,
                source=source,
            )
            if not pkg.files and pkg.source is None:
                raise ValueError(f"{at}: has neither wheels nor an sdist")
            packages.append(pkg)
    except ValueError as exc:
        raise UserError(f"The lock {where} is not a valid PEP 751 lock: {exc}.", NEW_LOCK_HINT) from exc
    return Lock(data, packages, where, base)


def read_lock(path: Path) -> Lock:
    try:
        text = fs.read_document(path).decode("utf-8")  # a regular file, no link followed, size capped
    except FileNotFoundError as exc:
        raise UserError(
            f"The lock {path} does not exist.",
            "The profile's `lock` names a file beside the profile; copy it along, or clear `lock` "
            "to lock the profile's pins again.",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"The lock {path} cannot be read: {exc}.", "Check its permissions.") from exc
    return parse_lock(text, str(path), path.parent)


def package_tables(pylock_text: str) -> list[dict[str, Any]] | None:
    """The ``[[packages]]`` tables of a lock as written, unchecked (a lock tfrebuild wrote itself, read for a
    count or sizes); ``None`` when it is not TOML."""
    try:
        data = tomllib.loads(pylock_text)
    except tomllib.TOMLDecodeError:
        return None
    packages = data.get("packages", [])
    return [p for p in packages if isinstance(p, dict)] if isinstance(packages, list) else []


def read_pins(pylock_text: str, *, unconditional: bool = False) -> dict[str, str] | None:
    """``{canonical name: version}`` of a lock's packages; ``None`` when it is not TOML. ``unconditional``: only
    the packages without a marker and with a version (those every install of the lock has)."""
    tables = package_tables(pylock_text)
    if tables is None:
        return None
    return {
        canonicalize_name(str(p.get("name", ""))): str(p.get("version", ""))
        for p in tables
        if not unconditional or (p.get("name") and p.get("version") and not p.get("marker"))
    }


def profile_lock_path(profile: prof.Profile, profile_path: Path) -> Path | None:
    if not profile.lock:
        return None
    lock = Path(profile.lock)
    return lock if lock.is_absolute() else profile_path.absolute().parent / lock


def file_digests(path: Path, algos: list[str]) -> dict[str, str]:
    """Hex digests of the file at ``path``: sha256 and each of ``algos`` that hashlib knows, in one read."""
    hs = {a: hashlib.new(a) for a in {"sha256", *algos} if a in hashlib.algorithms_available}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hs.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hs.items()}


def sha256_file(path: Path) -> str:
    return file_digests(path, [])["sha256"]


def _hash_ok(path: Path, hashes: dict[str, str]) -> tuple[bool, str, str]:
    """(matches, algorithm, computed) for the strongest hash the lock gives that hashlib knows."""
    for algo in ("sha256", "sha512", "sha384", *sorted(hashes)):
        if algo in hashes and algo in hashlib.algorithms_available:
            got = file_digests(path, [algo])[algo]
            return got == hashes[algo].lower(), algo, got
    return True, "", ""


@dataclass
class HashMismatch:
    package: str
    filename: str
    path: str
    algorithm: str
    expected: str
    got: str


def verify_local(lock: Lock, files: list[tuple[LockedPackage, LockedFile]] | None = None) -> list[HashMismatch]:
    """Check the hashes of the lock's files that are on this machine (others are left to uv)."""
    bad = []
    for pkg, f in files if files is not None else [(p, f) for p in lock.packages for f in p.files]:
        path = f.local_path(lock.base)
        if path is None or not path.is_file():
            continue
        ok, algo, got = _hash_ok(path, f.hashes)
        if not ok:
            bad.append(HashMismatch(pkg.name, f.filename, str(path), algo, f.hashes[algo], got))
    return bad


def hash_error(bad: list[HashMismatch], where: str) -> UserError:
    lines = "\n".join(
        f"  {b.package}: {b.path}\n    expected {b.algorithm}:{b.expected}\n    got      {b.algorithm}:{b.got}"
        for b in bad
    )
    return UserError(
        f"{len(bad)} file(s) do not match the hashes in {where}: "
        f"{', '.join(sorted({b.package for b in bad}))}. Nothing was built.",
        "The files or the lock were changed after locking. Get the files again from their source "
        "(or make the bundle again); never edit hashes by hand.",
        details=lines,
    )


def localize(lock: Lock, folders: list[Path]) -> tuple[Lock, list[str], list[str]]:
    """A copy of ``lock`` whose files point at local copies (absolute paths).

    A relative ``path`` is resolved against the lock's folder; any file (``path`` or
    URL) whose file name is found in one of ``folders`` is taken from there. Returns
    the new lock, the files that stay remote (http/https) and the files that should be
    local but are not found, each as ``"package: filename"``.
    """
    data = copy.deepcopy(lock.data)
    remote: list[str] = []
    missing: list[str] = []
    for raw in data["packages"]:
        tables = [(t, "wheel") for t in raw.get("wheels", [])] + ([(raw["sdist"], "sdist")] if "sdist" in raw else [])
        for table, kind in tables:
            f = _file(table, kind, raw["name"])
            local = f.local_path(lock.base)
            found = local if local is not None and local.is_file() else None
            for folder in folders:
                if found is None and (Path(folder) / f.filename).is_file():
                    found = Path(folder) / f.filename
            if found is not None:
                table.pop("url", None)
                table["path"] = str(found.absolute())
            elif local is not None:
                table["path"] = str(local.absolute())
                missing.append(f"{raw['name']}: {f.filename}")
            elif f.remote:
                remote.append(f"{raw['name']}: {f.filename}")
    return parse_lock(tomli_w.dumps(data), lock.where, None), remote, missing


def to_requirements(lock: Lock) -> str:
    """``name==version --hash=...`` lines for pip/uv, every file's hash included."""
    missing = []
    lines = [
        f"# Exported by tfrebuild from {lock.where}: {len(lock.packages)} packages, exact versions and hashes.",
        "# Install with: pip install --require-hashes --no-deps -r requirements.txt",
        "#           or: uv pip sync requirements.txt",
        "",
    ]
    for pkg in sorted(lock.packages, key=lambda p: p.name):
        if pkg.source is not None:  # from its own source: a direct reference (pip refuses hashes for these)
            digest = pkg.source[1].get("hashes", {}).get("sha256", "")
            lines.append(pkg.requirement + (f" --hash=sha256:{digest}" if digest else ""))
            continue
        hashes: list[str] = []
        for f in pkg.files:
            digest = f.hashes.get("sha256")
            if not digest:
                local = f.local_path(lock.base)
                if local is not None and local.is_file():
                    digest = sha256_file(local)
            if digest:
                hashes.append(f"sha256:{digest.lower()}")
        if not hashes:
            missing.append(pkg.name)
            continue
        marker = f" ; {pkg.marker}" if pkg.marker else ""
        lines.append(f"{pkg.name}=={pkg.version}{marker} \\")
        unique = sorted(set(hashes))
        lines += [f"    --hash={h}" + (" \\" if i < len(unique) - 1 else "") for i, h in enumerate(unique)]
    if missing:
        raise UserError(
            f"{len(missing)} package(s) in {lock.where} have no sha256 hash: {', '.join(missing)}.",
            "pip's hash-checking mode needs one for every package; make a bundle first "
            "(`tfrebuild bundle` computes the missing hashes), then export the bundle's profile.",
        )
    return "\n".join(lines) + "\n"
