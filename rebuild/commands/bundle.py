"""``tfrebuild bundle``: every file of a profile's lock in one folder, for machines without network.

The folder holds, for each locked package, the one wheel that suits the profile's
interpreter and platform (an sdist only where the lock has no such wheel), checked
against the lock's hashes (computed and recorded where the lock has none), plus:

* ``pylock.toml``: the lock, each file named by a path relative to the folder;
* ``profile.toml``: the profile, with ``lock = "pylock.toml"``;
* ``SHA256SUMS``: ``sha256sum -c`` format, to check a copy on shared storage;
* ``.tfrebuild-bundle``: the names of the files tfrebuild wrote there (written before the
  first of them, so a crash leaves none unlisted).

``-o DIR`` must be new, empty, or a folder tfrebuild bundle made: in any other folder
nothing is written, and an earlier bundle's files are replaced or removed only when its
``.tfrebuild-bundle`` lists them (a folder bundled before that file existed counts by its
``SHA256SUMS``). A file tfrebuild did not write is never overwritten or deleted.

``tfrebuild apply DIR/profile.toml --find-links DIR --offline`` then installs it
with no index and no network.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

from rebuild.core import consent
from rebuild.core.lockfile import Lock, LockedFile, LockedPackage, file_digests, file_name
from rebuild.core.lockmake import profile_lock, usable_index, with_credentials
from rebuild.env import profile as prof
from rebuild.env import snapshot
from rebuild.errors import UserError
from rebuild.index import http
from rebuild.index.tags import Target, profile_target, supported_tags
from rebuild.util.progress import NULL, Progress

_OWN_FILES = {"profile.toml", "pylock.toml", "SHA256SUMS"}
MARKER = ".tfrebuild-bundle"
DOWNLOADS = 4  #: files fetched at once, over one pool of kept-alive connections (index/http.Pool)


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
    fetch_seconds: float = 0.0  # the fetching alone (every file, DOWNLOADS at once)
    connections: int = 0  # connections opened for the downloads (the others reused one)

    @property
    def downloaded(self) -> int:
        return sum(f.size for f in self.files if f.how == "downloaded")

    @property
    def seconds_per_mib(self) -> float | None:
        """Seconds of fetching per MiB downloaded (``None`` when nothing was)."""
        return self.fetch_seconds / (self.downloaded / 2**20) if self.downloaded else None


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


def _written(out: Path) -> set[str] | None:
    """The files a tfrebuild bundle wrote in ``out`` (its own files included), or ``None`` if it made none."""
    marker = out / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            names = data["files"] if isinstance(data, dict) and data.get("created-by") == "tfrebuild bundle" else None
        except (OSError, ValueError, KeyError):
            names = None
        if isinstance(names, list) and all(isinstance(n, str) and n and "/" not in n for n in names):
            return set(names) | _OWN_FILES
        return None
    try:  # a bundle made before the marker existed: its lock says so, SHA256SUMS names its files
        if tomllib.loads((out / "pylock.toml").read_text(encoding="utf-8")).get("created-by") != "tfrebuild bundle":
            return None
        sums = (out / "SHA256SUMS").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    return {line.split("  ", 1)[1] for line in sums.splitlines() if "  " in line} | _OWN_FILES


def _ours(name: str, written: set[str]) -> bool:
    """``name`` is a file of ours: written, a ``.part`` download of one, or an atomic writer's leftover."""
    if name == MARKER or name in written:
        return True
    if name.endswith(".part") and name[: -len(".part")] in written:
        return True
    return (
        name.startswith(".")
        and name.endswith(".tmp")
        and name[1:].split(".", 1)[0] in {"profile", "pylock", "SHA256SUMS", MARKER[1:]}
    )


def _check_output(out: Path) -> set[str]:
    """The files an earlier bundle wrote in ``out`` (empty for a new or empty folder); :class:`UserError` for
    a folder tfrebuild did not make, or one that also holds files it did not write."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file.", "Pass a folder with -o.")
    if not out.is_dir():
        return set()
    names = sorted(os.listdir(out))
    if not names:
        return set()
    written = _written(out)
    if written is None:
        raise UserError(
            f"{out} is not empty and not a bundle (tfrebuild bundle did not make it): {', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}. Nothing was written.",
            "Pass a new or empty folder with -o: tfrebuild writes only into a folder it made "
            f"(it holds {MARKER}), and never deletes or overwrites files it did not write.",
        )
    strangers = [n for n in names if not _ours(n, written)]
    if strangers:
        raise UserError(
            f"{out} is a tfrebuild bundle, but it also holds {len(strangers)} file(s) tfrebuild did not "
            f"write: {', '.join(strangers[:5])}{' ...' if len(strangers) > 5 else ''}. Nothing was written.",
            "Move them out of the folder (tfrebuild never deletes or overwrites them), or pass a new folder with -o.",
        )
    return written - _OWN_FILES


def _mark(out: Path, names: set[str]) -> None:
    """Record the files this bundle writes (or wrote) in ``out``."""
    text = json.dumps({"created-by": "tfrebuild bundle", "files": sorted(names)}, indent=1) + "\n"
    snapshot.write_text_atomic(out / MARKER, text)


def _fetch(f: LockedFile, base: Path | None, dest: Path, timeout: float, pool: http.Pool | None = None) -> str:
    """Copy or download ``f`` to ``dest`` (via a ``.part`` file; a download through ``pool``, else a pool of its
    own); returns how."""
    part = dest.with_name(dest.name + ".part")
    local = f.local_path(base)
    if local is not None and not local.is_file():
        raise UserError(
            f"The locked file {local} does not exist.",
            "Make the bundle on the machine the lock was made on, or pass --find-links to the folder that has it.",
        )
    if local is None and not f.remote:
        raise UserError(f"tfrebuild cannot fetch {f.url or f.path}.", "Locks name files by https, file:// or path.")
    try:
        if local is not None:
            shutil.copyfile(local, part)
            return "copied"
        with open(part, "wb") as fh:
            if pool is not None:
                pool.download(f.url, fh)
            else:
                with http.Pool(timeout=timeout) as own:
                    own.download(f.url, fh)
        return "downloaded"
    except http.ERRORS as exc:
        part.unlink(missing_ok=True)
        again = " Run the same command again: files already in the bundle are kept."
        if local is not None:
            raise UserError(f"Cannot get {f.filename}: {exc}.", "Check the disk and the permissions." + again) from exc
        err = http.network_error(f"the locked file {f.filename} at", f.url, exc)
        raise UserError(err.message, err.hint + again, details=err.details) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def folder_size(folder: Path) -> int:
    return sum(e.stat().st_size for e in folder.iterdir() if e.is_file())


def _choose(lock: Lock, target: Target, notes: list[str]) -> list[tuple[LockedPackage, LockedFile]]:
    """The file of each locked package the target installs; a UserError if some package has none."""
    tags = supported_tags(target)
    chosen: list[tuple[LockedPackage, LockedFile]] = []
    unsuitable = []
    for pkg in lock.packages:
        if pkg.source is not None:  # a folder, a local file or a repository: it stays what the lock names
            notes.append(
                f"{pkg.name} {pkg.version} comes from its own source ({pkg.requirement}): the bundle's "
                "lock keeps that reference, and the target machine needs it at the same place"
            )
            continue
        f = choose_file(pkg, tags)
        if f is None:
            unsuitable.append(f"{pkg.name} {pkg.version} ({', '.join(w.filename for w in pkg.wheels)})")
            continue
        chosen.append((pkg, f))
        if f.kind == "sdist":
            notes.append(
                f"{pkg.name} {pkg.version} has no wheel for the profile's platform: the bundle has "
                "its sdist, which must be built on the target (a compiler and its build "
                "requirements are needed there)"
            )
    if unsuitable:
        raise UserError(
            f"{len(unsuitable)} locked package(s) have no file for the profile's Python "
            f"{target.version} on {target.system} {target.machine}: "
            f"{', '.join(u.split(' (')[0] for u in unsuitable)}.",
            "The lock was made for another platform; take the profile and its lock on the machine the bundle is for.",
            details="\n".join(unsuitable),
        )
    return chosen


def _source(f: LockedFile, base: Path | None, folders: list[Path]) -> LockedFile:
    """``f``, or a local copy of it in one of ``folders`` when ``f`` is not on this machine."""
    local = f.local_path(base)
    source = f
    if local is None or not local.is_file():
        for folder in folders:  # a local copy of a remote file: take it instead of downloading
            if (folder / f.filename).is_file():
                source = LockedFile(f.kind, f.filename, path=str((folder / f.filename).absolute()), hashes=f.hashes)
    return source


def _bundle_one(
    pkg: LockedPackage,
    f: LockedFile,
    source: LockedFile,
    base: Path | None,
    dest: Path,
    *,
    offline: bool,
    timeout: float,
    progress: Progress,
    label: str,
    pool: http.Pool | None = None,
) -> tuple[str, dict[str, str]]:
    """Put ``f`` at ``dest`` (kept if already there with the lock's hashes); (how, digests)."""
    if dest.is_file():
        digests = file_digests(dest, list(f.hashes))
        if not any(a in digests and digests[a] != v.lower() for a, v in f.hashes.items()):
            return "present", digests
        dest.unlink()  # an earlier, different file: fetch it again
    if offline and source.remote:
        raise UserError(
            f"{pkg.name} {pkg.version} ({f.filename}) must be downloaded, but --offline was given.",
            "Drop --offline, or pass --find-links to a folder that has the file.",
        )
    progress.stage("fetch", label)
    how = _fetch(source, base, dest, timeout, pool)
    part = dest.with_name(dest.name + ".part")
    digests = file_digests(part, list(f.hashes))
    wrong = [a for a, v in f.hashes.items() if a in digests and digests[a] != v.lower()]
    if wrong:
        part.unlink()
        a = wrong[0]
        raise UserError(
            f"{f.filename} does not match the lock's hash: expected {a}:{f.hashes[a]}, got "
            f"{a}:{digests[a]}. Nothing was added to the bundle for it.",
            "The file changed after locking (or the download was altered). Lock again from a "
            "trusted index; never edit hashes by hand.",
        )
    os.replace(part, dest)
    return how, digests


def _record(raw: dict, f: LockedFile, size: int, sha256: str) -> None:
    """Make the package table ``raw`` name only ``f``, by its path in the bundle, with its hashes."""
    entry = {k: v for k, v in _table_of(raw, f).items() if k not in ("url", "path", "hashes", "size")}
    entry.update(name=f.filename, path=f.filename, size=size, hashes={**f.hashes, "sha256": sha256})
    if f.kind == "wheel":
        raw["wheels"] = [entry]
        raw.pop("sdist", None)
    else:
        raw["sdist"] = entry
        raw.pop("wheels", None)


def _write_bundle(out: Path, data: dict, profile: prof.Profile, bundled: list[BundledFile], earlier: set[str]) -> None:
    """The bundle's lock, profile and SHA256SUMS; files an earlier bundle wrote (``earlier``) that this lock
    does not name go. Nothing else in the folder is touched."""
    snapshot.write_text_atomic(out / "pylock.toml", tomli_w.dumps(data))
    bundle_profile = copy.deepcopy(profile)
    bundle_profile.lock = "pylock.toml"
    snapshot.write(bundle_profile, out / "profile.toml")
    sums = "".join(f"{b.sha256}  {b.filename}\n" for b in sorted(bundled, key=lambda b: b.filename))
    snapshot.write_text_atomic(out / "SHA256SUMS", sums)
    keep = {b.filename for b in bundled}
    for name in sorted(earlier - keep - _OWN_FILES):
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    _mark(out, keep)


def run(
    profile_path,
    output,
    *,
    find_links: list[str] | None = None,
    offline: bool = False,
    python: str | None = None,
    timeout: float = 300.0,
    progress: Progress | None = None,
    allowed: consent.Allowed = consent.Allowed(),
) -> BundleResult:
    """``tfrebuild bundle PROFILE -o DIR``."""
    progress = progress or NULL
    start = time.monotonic()
    out = Path(output).absolute()
    earlier = _check_output(out)
    consent.check_file(profile_path, allowed=allowed, command="bundle", offline=offline)
    progress.stage("lock", str(profile_path))
    profile, lock, lock_source, notes = profile_lock(
        profile_path, find_links=find_links, offline=offline, python=python
    )
    chosen = _choose(lock, profile_target(profile), notes)
    folders = [Path(f) for f in find_links or []]
    out.mkdir(parents=True, exist_ok=True)
    earlier = _check_output(out)  # again, now that the folder is there: nothing else wrote into it meanwhile
    _mark(out, earlier | {f.filename for _, f in chosen})  # before the first file: a crash leaves none unlisted
    data = copy.deepcopy(lock.data)
    data["created-by"] = "tfrebuild bundle"
    by_name = {pkg.name: raw for pkg, raw in zip(lock.packages, data["packages"], strict=True)}
    bundled: list[BundledFile] = []
    auth = usable_index(profile.index)  # the profile's sources with this machine's credentials filled in
    fetching = time.monotonic()
    with http.Pool(timeout=timeout) as pool:
        got = _fetch_all(
            chosen, out, lock.base, folders, auth, offline=offline, timeout=timeout, pool=pool, progress=progress
        )
    fetch_seconds = time.monotonic() - fetching
    for i, (pkg, f) in enumerate(chosen):
        dest = out / f.filename
        how, digests = got[i]
        size = dest.stat().st_size
        _record(by_name[pkg.name], f, size, digests["sha256"])
        bundled.append(
            BundledFile(pkg.name, pkg.version, f.filename, size, digests["sha256"], how, "sha256" not in f.hashes)
        )
    if any(b.hash_recorded for b in bundled):
        notes.append(
            f"the lock had no sha256 for {sum(b.hash_recorded for b in bundled)} file(s); the bundle's lock "
            "records the hashes computed here"
        )
    _write_bundle(out, data, profile, bundled, earlier)
    return BundleResult(
        profile=str(Path(profile_path).absolute()),
        output=str(out),
        files=bundled,
        size=folder_size(out),
        lock_source=lock_source,
        notes=notes,
        seconds=time.monotonic() - start,
        fetch_seconds=fetch_seconds,
        connections=pool.opened,
    )


def _fetch_all(
    chosen: list[tuple[LockedPackage, LockedFile]],
    out: Path,
    base: Path | None,
    folders: list[Path],
    auth: prof.Index,
    *,
    offline: bool,
    timeout: float,
    pool: http.Pool,
    progress: Progress,
) -> dict[int, tuple[str, dict[str, str]]]:
    """Every chosen file into ``out``, :data:`DOWNLOADS` at once over ``pool``; ``{index in chosen: (how,
    digests)}``. The first failure (or an interrupt) stops the transfers in progress and is raised."""
    got: dict[int, tuple[str, dict[str, str]]] = {}
    with ThreadPoolExecutor(max_workers=DOWNLOADS, thread_name_prefix="bundle-fetch") as workers:
        futures = {}
        for i, (pkg, f) in enumerate(chosen):
            source = _source(f, base, folders)
            if source.remote:
                source = copy.copy(source)
                source.url = with_credentials(source.url, auth)
            futures[
                workers.submit(
                    _bundle_one,
                    pkg,
                    f,
                    source,
                    base,
                    out / f.filename,
                    offline=offline,
                    timeout=timeout,
                    progress=NULL,
                    label=f.filename,
                    pool=pool,
                )
            ] = i
        try:
            for future in as_completed(futures):
                i = futures[future]
                got[i] = future.result()
                if got[i][0] != "present":
                    progress.stage("fetch", f"[{len(got)}/{len(chosen)}] {chosen[i][1].filename} ({got[i][0]})")
        except BaseException:
            pool.abort()
            for future in futures:
                future.cancel()
            raise
    return got


def _table_of(raw: dict, f: LockedFile) -> dict:
    """The TOML table of ``f`` inside the package table ``raw``."""
    if f.kind == "sdist":
        return dict(raw.get("sdist", {}))
    for table in raw.get("wheels", []):
        if file_name(table) == f.filename:
            return dict(table)
    return {}
