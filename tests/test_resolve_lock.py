"""The lock that follows a resolution is made from uv's cache (issue 26 point 2: plan's fixed costs).

The resolution has just read every index page the lock needs, so ``resolve`` makes the PEP 751 lock with
``--offline`` first: no second round of page requests. When the cache cannot make it (an index that forbids
caching), the lock is made online, as before. Real uv against the kit's wheels served over HTTP on 127.0.0.1
(:class:`tests.kit.simple_index.SimpleIndex` counts every request), each test with a uv cache of its own.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from rebuild.core import resolve
from rebuild.env.profile import Index
from tests.kit.simple_index import SimpleIndex

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

REQUESTED = ["scipy==1.11.4", "pandas"]


def _inputs(index_url: str, log: Path) -> resolve.Inputs:
    return resolve.Inputs(
        python=Path(sys.executable),
        tf_distribution="tensorflow-cpu",
        requested=list(REQUESTED),
        pins={},
        index=Index(index_url=index_url),
        log=log,
    )


def _pages(requests: list[str]) -> Counter[str]:
    return Counter(r.split("?")[0] for r in requests if r.startswith("/simple/") and r != "/simple/")


def _runs(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("$ ") and "pip compile" in line]


@pytest.mark.parametrize("cacheable", [True, False], ids=["cached", "uncacheable-index"])
def test_the_lock_after_a_resolution_reads_no_page_again(kit_index, tmp_path, monkeypatch, cacheable) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.delenv("UV_OFFLINE", raising=False)
    with SimpleIndex(kit_index, headers={} if cacheable else {"Cache-Control": "no-store"}) as served:
        resolved = resolve.resolve(_inputs(served.url, tmp_path / "resolve.log"), "2.18.0")
        pages = _pages(served.requests)
        served.requests.clear()
        # the same pins locked online, the way lock() works without a resolution before it
        with_pages = resolve.lock(_inputs(served.url, tmp_path / "online.log"), resolved.pins, tmp_path)
        online_pages = _pages(served.requests)
    assert resolved.pins["tensorflow-cpu"] == "2.18.0" and "numpy" in resolved.pins
    assert resolved.pylock == with_pages  # the same lock, hashes and URLs included
    assert set(online_pages) == {f"/simple/{n}/" for n in resolved.pins}  # the online lock asks for every page
    locks = [r for r in _runs(tmp_path / "resolve.log") if "pylock.toml" in r]
    if cacheable:
        assert len(locks) == 1 and "--offline" in locks[0], locks
        assert max(pages.values()) == 1, pages  # each page read once: by the resolution, not by the lock
    else:  # nothing in the cache: the cached try fails and the lock is made online, once more
        assert len(locks) == 2 and "--offline" in locks[0] and "--offline" not in locks[1], locks
        assert all(pages[f"/simple/{n}/"] >= 2 for n in resolved.pins), pages
