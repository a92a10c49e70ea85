"""Build a fresh, relocatable venv from a lock, in a staging folder beside the env."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

from rebuild.core import lockfile
from rebuild.core.carry import Carry, copy_into
from rebuild.index import config as indexconf
from rebuild.util import distinfo
from rebuild.util import uv as uvcmd
from rebuild.errors import UserError
from rebuild.env.profile import Index

if TYPE_CHECKING:
    from rebuild.util.progress import Progress

MARGIN = 64 * 1024 * 1024  # free space left over after the estimate, at the least (uv's temporary files)
MARGIN_FRACTION = 0.25  # and at least this share of the estimate
UNPACK_FACTOR = 3  # installed size relative to the wheels' (compressed) size


@dataclass
class BuildResult:
    env: Path
    pylock: Path
    seconds: float
    estimate: int
    bytecode: object = None  # bytecode.Compiled when tfrebuild compiled (through its pyc cache), else None


@dataclass(frozen=True)
class BuildOptions:
    """How :func:`build` installs the lock: the transaction's ``Spec.build`` (upgrade's and apply's choices)."""

    offline: bool = False
    compile_bytecode: bool = True
    log: Path | None = None
    requested: set[str] | None = None
    legacy_keras: bool = False
    require_hashes: bool = False
    build_constraints: Sequence[str] = ()
    carry: Carry | None = None  # what of the user's outside the lock the new env gets
    # the current env's disk usage, computed beforehand (usage_later: while upgrade plans), for the estimate
    current_usage: Callable[[], tuple[dict[Path, int], int]] | None = None


def lock_bytes(pylock_text: str) -> int:
    """The locked wheels' (or sdists') sizes times an unpack factor; 0 when the lock gives no sizes."""
    total = 0
    for pkg in lockfile.package_tables(pylock_text) or []:
        files = [w for w in pkg.get("wheels", []) if isinstance(w, dict)]
        if isinstance(pkg.get("sdist"), dict):
            files.append(pkg["sdist"])
        sizes = [f.get("size", 0) for f in files if isinstance(f.get("size", 0), int)]
        total += max(sizes) if sizes else 0
    return total * UNPACK_FACTOR


def _links_from_cache(where: Path) -> bool:
    """Whether uv's cache is on the filesystem of ``where`` (then installed files are hard links, not copies)."""
    import os

    try:
        cache = Path(uvcmd.run(["cache", "dir"], timeout=30).stdout.strip())
        return os.stat(cache if cache.exists() else cache.parent).st_dev == os.stat(where).st_dev
    except (UserError, uvcmd.UvFailed, OSError):
        return False


def usage_later(env: Path) -> Callable[[], tuple[dict[Path, int], int]]:
    """:func:`rebuild.store.disk.exclusive_usage` of ``env``, computed in a thread from now (it walks the whole env:
    a second on a TensorFlow env), so that the build's free-space estimate does not wait for it; call the result to
    get it (an error is raised there)."""
    import threading

    from rebuild.store.disk import exclusive_usage

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["usage"] = exclusive_usage([Path(env)])
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="tfrebuild-env-usage", daemon=True)
    thread.start()

    def result() -> tuple[dict[Path, int], int]:
        thread.join()
        if "error" in box:
            raise box["error"]
        return cast("tuple[dict[Path, int], int]", box["usage"])

    return result


def estimate_bytes(
    pylock_text: str,
    current: Path | None = None,
    *,
    links: bool = False,
    usage: Callable[[], tuple[dict[Path, int], int]] | None = None,
) -> int:
    """Disk the new env needs: the larger of what the lock unpacks to and what the current env takes.

    The current env counts whole when uv copies files (its cache on another filesystem); with
    ``links`` (cache on the same filesystem) only its files that are not hard-linked elsewhere
    (bytecode, scripts, metadata), since uv hard-links the rest from its cache again. ``usage``: the current env's
    usage computed beforehand (:func:`usage_later`).
    """
    need = lock_bytes(pylock_text)
    if current is not None and Path(current).is_dir():
        from rebuild.store.disk import exclusive_usage

        alone, total = usage() if usage is not None else exclusive_usage([Path(current)])
        need = max(need, alone[Path(current)] if links else total)
    return need


def size_text(n: int) -> str:
    """``1.4 GiB``, ``212 MiB``, ``40 KiB``: precise enough that two different figures never read the same."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{max(n, 0) / 2**10:.0f} KiB"


def check_disk(where: Path, needed: int) -> None:
    """:class:`UserError` unless ``where`` has ``needed`` bytes free plus a margin."""
    free = shutil.disk_usage(where).free
    margin = max(MARGIN, int(needed * MARGIN_FRACTION))
    if free < needed + margin:
        raise UserError(
            f"Not enough free disk space at {where}: the new environment needs about {size_text(needed)} "
            f"(plus {size_text(margin)} to spare), and {size_text(free)} is free.",
            "Free some space (e.g. `tfrebuild gc --yes`, `uv cache prune`) and try again. Nothing was changed.",
            exit_code=1,
        )


def requirements_from_lock(pylock_text: str, lock_path: Path) -> tuple[Path, bool]:
    """The lock as a requirements file (exact pins, with every hash when all packages have one).

    uv 0.13 re-validates each URL of a ``pylock.toml`` with the server and downloads the
    wheels again even with a warm cache; the same pins as ``name==version --hash=...``
    are served from the cache (hard links, no download). Packages locked from a URL,
    a path or VCS keep the pylock itself.
    """
    from rebuild.core import lockfile as export

    lock = export.parse_lock(pylock_text, str(lock_path), base=lock_path.parent)
    if any(not (p.wheels or p.sdist) for p in lock.packages) or any(
        f.path or (f.url and not f.remote and not f.local_path(lock.base)) for p in lock.packages for f in p.files
    ):
        return lock_path, False
    try:
        text, hashed = export.to_requirements(lock), True
    except UserError:  # some package has no hash (e.g. a find-links file): exact pins only
        text = "".join(
            f"{p.name}=={p.version}" + (f" ; {p.marker}" if p.marker else "") + "\n"
            for p in sorted(lock.packages, key=lambda p: p.name)
        )
        hashed = False
    out = lock_path.with_name("requirements.txt")
    out.write_text(text, encoding="utf-8")
    return out, hashed


def mark_requested(env: Path, requested: set[str]) -> None:
    """Keep ``REQUESTED`` markers only on what the user asked for, and RECORD in step with them.

    ``uv pip sync`` marks every distribution of a lock as requested; the old env's
    markers said which ones the user had named, and a later snapshot must see that.
    Each marker removed or added is taken out of or written into its ``RECORD``, so
    the env's own doctor finds no file listed that does not exist (nor one unlisted).
    """
    for dist_info in env.glob("lib/python*/site-packages/*.dist-info"):
        name = (distinfo.parse(dist_info.name) or ("", ""))[0]
        marker = dist_info / "REQUESTED"
        if name in requested:
            if not marker.exists():
                marker.touch()
            _record_requested(dist_info, present=True)
        elif marker.exists():
            marker.unlink()
            _record_requested(dist_info, present=False)


_EMPTY_SHA256 = "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"  # urlsafe-b64 sha256 of b"", as in RECORD


def _record_requested(dist_info: Path, *, present: bool) -> None:
    """List ``<dist-info>/REQUESTED`` in RECORD exactly when the marker exists."""
    record = dist_info / "RECORD"
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    row = f"{dist_info.name}/REQUESTED"
    kept = [line for line in lines if line.split(",", 1)[0] != row]
    if present:
        kept.append(f"{row},{_EMPTY_SHA256},0")
    if kept != lines:
        record.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def enable_legacy_keras(env: Path) -> Path:
    """Make every interpreter started from ``env`` use Keras 2 through tf-keras.

    A ``.pth`` file in site-packages runs at every start-up (``site`` executes its
    ``import`` lines), so this holds for ``env/bin/python``, console scripts and
    Jupyter kernels alike, activated or not. An explicit ``TF_USE_LEGACY_KERAS``
    in the environment still wins.
    """
    from rebuild.knowledge.tf import LEGACY_KERAS_LINE, LEGACY_KERAS_PTH

    site = next(iter(env.glob("lib/python*/site-packages")), None)
    if site is None:
        raise UserError(f"{env} has no site-packages folder.", "The build is incomplete; see the log.")
    path = site / LEGACY_KERAS_PTH
    path.write_text(LEGACY_KERAS_LINE, encoding="utf-8")
    return path


def build(
    staging: Path,
    python: Path,
    pylock_text: str,
    index: Index,
    options: BuildOptions = BuildOptions(),
    *,
    current: Path | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Create ``staging/env`` with uv and install exactly the lock into it, as ``options`` say (``current``: the env
    it replaces, for the free-space estimate; ``options.current_usage``: its usage, computed beforehand). Bytecode:
    through tfrebuild's pyc cache where it can be used (:mod:`rebuild.core.bytecode`), else uv's
    ``--compile-bytecode``. ``options.carry`` (a :class:`rebuild.core.carry.Carry`): the user's own files outside the
    lock are copied in, and the system site-packages kept visible."""
    import time

    offline, compile_bytecode, log, requested = (
        options.offline,
        options.compile_bytecode,
        options.log,
        options.requested,
    )
    legacy_keras, require_hashes, build_constraints = (
        options.legacy_keras,
        options.require_hashes,
        options.build_constraints,
    )
    carry = options.carry

    from rebuild.core import bytecode
    from rebuild.util.progress import NULL

    progress = progress or NULL

    start = time.monotonic()
    needed = estimate_bytes(pylock_text, current, links=_links_from_cache(staging.parent), usage=options.current_usage)
    check_disk(staging.parent, needed)
    staging.mkdir(parents=True, exist_ok=True)
    lock_path = staging / "pylock.toml"
    lock_path.write_text(pylock_text, encoding="utf-8")
    env = staging / "env"
    install_file, hashed = requirements_from_lock(pylock_text, lock_path)
    args = ["pip", "sync", str(install_file), "--no-config", "--python", str(env / "bin" / "python"), "--quiet"]
    if hashed or require_hashes:
        args.append("--require-hashes")
    args += indexconf.uv_args(index, offline=offline, for_install=True)
    for path in build_constraints:  # an sdist in the lock is built with the user's build-time caps
        args += ["--build-constraints", str(path)]
    packages = _count_packages(pylock_text)
    cache = None
    try:
        system_site = ["--system-site-packages"] if carry is not None and carry.system_site else []
        uvcmd.run(
            ["venv", "--no-config", "--relocatable", *system_site, "--python", str(python), "--quiet", str(env)],
            log=log,
            what="uv venv",
        )
        cache = (
            bytecode.usable_cache(staging, owner_of=current if current is not None else staging.parent.parent.parent)
            if compile_bytecode and bytecode.supported(env)
            else None
        )
        if compile_bytecode and cache is None:
            args.append("--compile-bytecode")
        progress.stage(
            "link",
            f"linking {packages} packages into the new env (from uv's cache)"
            + (", compiling bytecode" if "--compile-bytecode" in args else ""),
        )
        uvcmd.run(args, log=log, what="uv pip sync", sources=uvcmd.index_sources(index), for_install=True)
    except uvcmd.UvFailed as exc:
        from rebuild.util import failtext

        package = failtext.failed_package(exc.result.stderr)
        what = f": it failed to build {package}" if package else ""
        failed = UserError(
            f"{exc.what} could not build the new environment{what}; your environment was not changed.",
            f"uv's full output is in {log}." if log else "Run again to see uv's output.",
            exit_code=1,
            details="uv says:\n" + failtext.uv_error(exc.result.stderr),
        )
        failed.build_failed = True
        raise failed from None
    compiled = None
    if cache is not None:
        progress.stage("bytecode", f"compiling bytecode (pycs of unchanged files linked from {cache})")
        compiled = bytecode.compile_env(env, cache, log=log)
    copy_into(env, carry, current if current is not None else staging.parent.parent.parent)
    if requested is not None:
        mark_requested(env, requested)
    if legacy_keras:
        enable_legacy_keras(env)
    return BuildResult(env=env, pylock=lock_path, seconds=time.monotonic() - start, estimate=needed, bytecode=compiled)


def _count_packages(pylock_text: str) -> int:
    return len(lockfile.package_tables(pylock_text) or [])
