"""``tfrebuild bundle``: every file of a profile's lock in one folder, for machines without network.

The folder holds, for each locked package, the one wheel that suits the profile's
interpreter and platform (an sdist only where the lock has no such wheel), checked
against the lock's hashes (computed and recorded where the lock has none), plus:

* ``pylock.toml``: the lock, each file named by a path relative to the folder;
* ``profile.toml``: the profile, with ``lock = "pylock.toml"``;
* ``SHA256SUMS``: ``sha256sum -c`` format, to check a copy on shared storage.

``tfrebuild apply DIR/profile.toml --find-links DIR --offline`` then installs it
with no index and no network.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

from rebuild.index import simple as indexinfo
from rebuild.index import http
from rebuild.errors import UserError
from rebuild.core.lockfile import LockedFile, LockedPackage, profile_lock
from rebuild.core.portability import profile_target
from rebuild.env.snapshot import write_text_atomic as _write_atomic

_OWN_FILES = {"profile.toml", "pylock.toml", "SHA256SUMS"}


@dataclass
class BundledFile:
    package: str
    version: str
    filename: str
    size: int
    sha256: str
    how: str  # copied | downloaded | present
    hash_recorded: bool = False  # the lock had no hash: computed here


@dataclass
class BundleResult:
    profile: str
    output: str
    files: list[BundledFile]
    size: int  # bytes of the whole folder
    lock_source: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def downloaded(self) -> int:
        return sum(f.size for f in self.files if f.how == "downloaded")


def choose_file(pkg: LockedPackage, tags: list[Tag]) -> LockedFile | None:
    """The wheel most preferred by ``tags`` (their order), else the sdist, else ``None``."""
    rank = {t: i for i, t in enumerate(tags)}
    best, best_rank = None, len(rank)
    for wheel in pkg.wheels:
        try:
            _, _, _, wheel_tags = parse_wheel_filename(wheel.filename)
        except ValueError:
            continue
        r = min((rank[t] for t in wheel_tags if t in rank), default=None)
        if r is not None and r < best_rank:
            best, best_rank = wheel, r
    return best or pkg.sdist


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file.", "Pass a folder with -o.")
    if out.is_dir():
        strangers = [e.name for e in out.iterdir()
                     if e.name not in _OWN_FILES and not e.name.endswith((".whl", ".tar.gz", ".zip", ".part"))]
        if strangers:
            raise UserError(f"{out} is not empty and not a bundle: {', '.join(sorted(strangers)[:5])}.",
                            "Pass an empty or new folder with -o (an existing bundle folder is updated in place).")


def _fetch(f: LockedFile, base: Path | None, dest: Path, timeout: float) -> str:
    """Copy or download ``f`` to ``dest`` (via a ``.part`` file); returns how."""
    part = dest.with_name(dest.name + ".part")
    local = f.local_path(base)
    try:
        if local is not None:
            if not local.is_file():
                raise UserError(f"The locked file {local} does not exist.",
                                "Make the bundle on the machine the lock was made on, or pass --find-links to the "
                                "folder that has it.")
            shutil.copyfile(local, part)
            how = "copied"
        elif f.url.lower().startswith(("https://", "http://")):
            clean, auth = http.split_credentials(f.url)
            req = urllib.request.Request(clean, headers={"User-Agent": "tfrebuild-bundle (python urllib)"})
            if auth:
                req.add_unredirected_header("Authorization", auth)
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=http.ssl_context()))
            with opener.open(req, timeout=timeout) as resp, open(part, "wb") as fh:
                shutil.copyfileobj(resp, fh, 1 << 20)
            how = "downloaded"
        else:
            raise UserError(f"tfrebuild cannot fetch {f.url or f.path}.", "Locks name files by https, file:// or path.")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise UserError(f"Cannot get {f.filename}: {exc}.",
                        "Check the network (or the proxy: HTTPS_PROXY) and run the same command again; files "
                        "already in the bundle are kept.") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return how


def _digests(path: Path, algos: list[str]) -> dict[str, str]:
    hs = {a: hashlib.new(a) for a in {"sha256", *algos} if a in hashlib.algorithms_available}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hs.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hs.items()}


def folder_size(folder: Path) -> int:
    return sum(e.stat().st_size for e in folder.iterdir() if e.is_file())


def run(profile_path, output, *, find_links: list[str] | None = None, offline: bool = False,
        python: str | None = None, timeout: float = 300.0, progress=None) -> BundleResult:
    """``tfrebuild bundle PROFILE -o DIR``."""
    from rebuild.cli.render import Progress

    progress = progress or Progress(enabled=False)
    start = time.monotonic()
    out = Path(output).absolute()
    _check_output(out)
    progress.stage("lock", str(profile_path))
    profile, lock, lock_source, notes = profile_lock(profile_path, find_links=find_links, offline=offline,
                                                     python=python)
    target = profile_target(profile)
    tags = indexinfo.supported_tags(target)
    chosen: list[tuple[LockedPackage, LockedFile]] = []
    unsuitable = []
    for pkg in lock.packages:
        f = choose_file(pkg, tags)
        if f is None:
            unsuitable.append(f"{pkg.name} {pkg.version} ({', '.join(w.filename for w in pkg.wheels)})")
        else:
            chosen.append((pkg, f))
            if f.kind == "sdist":
                notes.append(f"{pkg.name} {pkg.version} has no wheel for the profile's platform: the bundle has "
                             "its sdist, which must be built on the target (a compiler and its build "
                             "requirements are needed there)")
    if unsuitable:
        raise UserError(f"{len(unsuitable)} locked package(s) have no file for the profile's Python "
                        f"{target.version} on {target.system} {target.machine}: "
                        f"{', '.join(u.split(' (')[0] for u in unsuitable)}.",
                        "The lock was made for another platform; take the profile and its lock on the machine "
                        "the bundle is for.", details="\n".join(unsuitable))
    folders = [Path(f) for f in find_links or []]
    out.mkdir(parents=True, exist_ok=True)
    data = copy.deepcopy(lock.data)
    data["created-by"] = "tfrebuild bundle"
    by_name = {pkg.name: raw for pkg, raw in zip(lock.packages, data["packages"])}
    bundled: list[BundledFile] = []
    for i, (pkg, f) in enumerate(chosen, 1):
        dest = out / f.filename
        source = f
        if f.local_path(lock.base) is None or not f.local_path(lock.base).is_file():
            for folder in folders:  # a local copy of a remote file: take it instead of downloading
                if (folder / f.filename).is_file():
                    source = LockedFile(f.kind, f.filename, path=str((folder / f.filename).absolute()),
                                        hashes=f.hashes)
        how = "present"
        digests: dict[str, str] = {}
        if dest.is_file():
            digests = _digests(dest, list(f.hashes))
            if any(a in digests and digests[a] != v.lower() for a, v in f.hashes.items()):
                dest.unlink()  # an earlier, different file: fetch it again
                digests = {}
        if not digests:
            if offline and source.remote:
                raise UserError(f"{pkg.name} {pkg.version} ({f.filename}) must be downloaded, but --offline was given.",
                                "Drop --offline, or pass --find-links to a folder that has the file.")
            progress.stage("fetch", f"[{i}/{len(chosen)}] {f.filename}")
            how = _fetch(source, lock.base, dest, timeout)
            part = dest.with_name(dest.name + ".part")
            digests = _digests(part, list(f.hashes))
            wrong = [a for a, v in f.hashes.items() if a in digests and digests[a] != v.lower()]
            if wrong:
                part.unlink()
                a = wrong[0]
                raise UserError(f"{f.filename} does not match the lock's hash: expected {a}:{f.hashes[a]}, got "
                                f"{a}:{digests[a]}. Nothing was added to the bundle for it.",
                                "The file changed after locking (or the download was altered). Lock again from a "
                                "trusted index; never edit hashes by hand.")
            os.replace(part, dest)
        recorded = "sha256" not in f.hashes
        raw = by_name[pkg.name]
        entry = {k: v for k, v in _table_of(raw, f).items() if k not in ("url", "path", "hashes", "size")}
        entry.update(name=f.filename, path=f.filename, size=dest.stat().st_size,
                     hashes={**f.hashes, "sha256": digests["sha256"]})
        if f.kind == "wheel":
            raw["wheels"] = [entry]
            raw.pop("sdist", None)
        else:
            raw["sdist"] = entry
            raw.pop("wheels", None)
        bundled.append(BundledFile(pkg.name, pkg.version, f.filename, dest.stat().st_size, digests["sha256"], how,
                                   recorded))
    if any(b.hash_recorded for b in bundled):
        notes.append(f"the lock had no sha256 for {sum(b.hash_recorded for b in bundled)} file(s); the bundle's lock "
                     "records the hashes computed here")
    _write_atomic(out / "pylock.toml", tomli_w.dumps(data))
    bundle_profile = copy.deepcopy(profile)
    bundle_profile.lock = "pylock.toml"
    from rebuild.env.snapshot import write

    write(bundle_profile, out / "profile.toml")
    sums = "".join(f"{b.sha256}  {b.filename}\n" for b in sorted(bundled, key=lambda b: b.filename))
    _write_atomic(out / "SHA256SUMS", sums)
    keep = {b.filename for b in bundled} | _OWN_FILES
    stale = [e for e in out.iterdir() if e.is_file() and e.name not in keep]
    for e in stale:  # files of an earlier bundle in the same folder that this lock does not name
        e.unlink()
    return BundleResult(profile=str(Path(profile_path).absolute()), output=str(out), files=bundled,
                        size=folder_size(out), lock_source=lock_source, notes=notes,
                        seconds=time.monotonic() - start)


def _table_of(raw: dict, f: LockedFile) -> dict:
    """The TOML table of ``f`` inside the package table ``raw``."""
    from rebuild.core.lockfile import _filename

    if f.kind == "sdist":
        return dict(raw.get("sdist", {}))
    for table in raw.get("wheels", []):
        if _filename(table) == f.filename:
            return dict(table)
    return {}
