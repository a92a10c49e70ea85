"""Was an installed compiled package built for NumPy 1 or NumPy 2?

A package's ``Requires-Dist`` on numpy rarely has an upper bound, yet a release compiled against NumPy 1 fails at
import under NumPy 2 ("numpy.core.multiarray failed to import", "numpy.dtype size changed"). So "it accepts
NumPy 2" is read, in this order, from: the table of first NumPy-2 builds (rebuild/knowledge/data/numpy2.toml,
with sources); the upload date of the release's compiled wheels on the index (before NumPy 2's ABI existed
means built for NumPy 1). A pure-Python wheel has no NumPy ABI. Anything else is not known.
"""

from __future__ import annotations

import csv
import mmap
import os

from packaging.version import InvalidVersion, Version

from rebuild.knowledge import numpy2


def compiled(dist: dict) -> bool | None:
    """Whether the installed wheel is compiled (a platform tag); None when the probe did not read its WHEEL."""
    tags = dist.get("wheel_tags")
    if not tags:
        return None
    return any(not t.endswith("-none-any") for t in tags)


def built_for(ctx, name: str, dist: dict) -> tuple[int | None, str]:
    """(1 or 2, why) for the installed release of ``name``; (None, "") when not known or not compiled."""
    version = str(dist.get("version") or "")
    if compiled(dist) is False:
        return None, ""
    row = numpy2.first_build(name)
    verdict = numpy2.built_for_numpy2(name, version) if row is not None else None
    if row is not None and verdict is True:
        return 2, f"{name} {version} was built for NumPy 2 ({row.source})"
    if row is not None and verdict is False:
        return 1, (
            f"{name} {version} was built for NumPy 1 and fails to import under NumPy 2 although its "
            f"Requires-Dist sets no upper bound: the first {name} built for NumPy 2 is {row.first} "
            f"({row.source})"
        )
    if not compiled(dist) or ctx is None:
        return None, ""
    files = ctx.files(name)
    try:
        want = Version(version)
    except InvalidVersion:
        return None, ""
    times = sorted(
        f.upload_time
        for f in files or []
        if f.version == want and f.is_wheel and f.upload_time and any(t.platform != "any" for t in f.tags)
    )
    if times and times[0][:10] < numpy2.abi_from() and uses_numpy_c_api(dist) is not False:
        return 1, (
            f"{name} {version} is compiled and its wheels were uploaded on {times[0][:10]}, before any "
            "package could be built for NumPy 2 (NumPy 2.0.0rc1, March 2024): it fails to import under "
            "NumPy 2 although its Requires-Dist sets no upper bound"
        )
    return None, ""


_C_API = (b"_ARRAY_API", b"_UFUNC_API")  # the capsules every user of NumPy's C API imports at load time


def uses_numpy_c_api(dist: dict) -> bool | None:
    """Whether one of the distribution's extension modules imports NumPy's C API (only those break under another
    NumPy ABI; a library loaded through ctypes, as xgboost's and lightgbm's are, does not); None when its files
    cannot be read. Reads the RECORD's shared objects, stopping at the first that names the C API."""
    info, site = dist.get("path"), dist.get("site_dir")
    if not info or not site:
        return None
    try:
        with open(os.path.join(str(info), "RECORD"), encoding="utf-8", newline="") as fh:
            rows = [row[0] for row in csv.reader(fh) if row]
    except (OSError, UnicodeError, csv.Error):
        return None
    for rel in rows:
        if ".so" not in rel.rsplit("/", 1)[-1] or rel.startswith(("/", "..")):
            continue
        try:
            fd = os.open(os.path.join(str(site), rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            if size and any(_find(fd, size, needle) for needle in _C_API):
                return True
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
    return False


def _find(fd: int, size: int, needle: bytes) -> bool:
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
        return view.find(needle) != -1
