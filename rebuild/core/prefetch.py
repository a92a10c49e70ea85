"""Downloads start as soon as the target is known (issue 26 point 1): ``upgrade`` fetches the TensorFlow wheel (by
far the largest download of an env) into uv's cache while it resolves the rest and runs the pre-flight.

In a thread, once the target version is known: when uv's cache has no wheel of that version yet, uv locks the one
file (``uv pip compile --no-deps --generate-hashes``, the index's own hashes) and installs it with
``--require-hashes`` into a temporary folder that is then removed. What stays is uv's cache entry, with its hash
recorded, which the build's ``uv pip sync --require-hashes`` of the same file takes from the cache: nothing is
downloaded twice, and the build waits for the fetch before it installs (:meth:`Fetch.wait`). Offline, or with the
wheel already cached, nothing is done. A failed fetch is silent: the build downloads as before.
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from rebuild.index import config as indexconf
from rebuild.util import uv as uvcmd


def cached(cache: Path, name: str, version: str) -> bool:
    """Whether uv's cache (``uv cache dir``) has a wheel of ``name`` ``version`` from any index (uv's layout:
    ``wheels-v*/<index>/<name>/<version>-<tags>``; a change of layout only means one fetch more)."""
    root, tail = glob.escape(str(cache)), f"{name}/{glob.escape(version)}-*"
    return any(True for depth in ("*", "*/*") for _ in glob.iglob(f"{root}/wheels-v*/{depth}/{tail}"))


class Fetch:
    """The thread fetching the target's wheel; ``wait()`` returns once it is done (``seconds``: its run time,
    ``fetched``: whether it downloaded, ``None`` while running)."""

    def __init__(self, inputs, version: str):
        self.seconds: float | None = None
        self.fetched: bool | None = None
        self._thread = threading.Thread(target=self._work, args=(inputs, version), name="tfrebuild-prefetch",
                                        daemon=True)
        self._thread.start()

    def _work(self, inputs, version: str) -> None:
        began = time.monotonic()
        try:
            self.fetched = _fetch(inputs, version)
        except Exception:  # noqa: BLE001 - only a head start: the build downloads what is missing
            self.fetched = False
        finally:
            self.seconds = time.monotonic() - began

    def wait(self) -> None:
        self._thread.join()


def start(inputs, version: str) -> Callable[[], None] | None:
    """Fetch ``inputs.tf_distribution`` ``version`` in a thread; the function that waits for it (``None`` when
    offline: nothing to fetch)."""
    if inputs.offline or os.environ.get("UV_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    job = Fetch(inputs, version)

    def wait() -> None:  # a plain function: a plan holding it stays copyable (dataclasses.asdict)
        job.wait()

    return wait


def _fetch(inputs, version: str) -> bool:
    from rebuild.core import resolve

    name = inputs.tf_distribution
    found = uvcmd.run(["cache", "dir"], timeout=30, check=False)
    cache = found.stdout.strip()
    if found.returncode != 0 or not cache or cached(Path(cache), name, version):
        return False
    with tempfile.TemporaryDirectory(prefix="tfrebuild-prefetch-") as tmp:
        wanted, locked = Path(tmp) / "tf.in", Path(tmp) / "tf.txt"
        wanted.write_text(f"{name}=={version}\n", encoding="utf-8")
        resolve._pip_compile(inputs, [str(wanted), "--no-deps", "--generate-hashes", "--no-header", "--no-annotate",
                                      "--only-binary", name, "-o", str(locked)], constrained=False)
        if "--hash=" not in locked.read_text(encoding="utf-8"):
            return False  # no hash from the index: a fetch without one might not serve a hashed install
        args = ["pip", "install", "--no-config", "--python", str(inputs.python), "--target", str(Path(tmp) / "t"),
                "--no-deps", "--require-hashes", "-r", str(locked), "--quiet", "--only-binary", name]
        args += indexconf.uv_args(inputs.index, offline=inputs.offline, for_install=True)
        result = uvcmd.run(args, check=False, log=inputs.log, what="uv pip install (prefetch)", for_install=True,
                           sources=uvcmd.index_sources(inputs.index))
        return result.returncode == 0
