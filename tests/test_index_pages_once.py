"""One remote project page per command (issue 26 point 2: plan's fixed costs): the plan's pre-flight and its
"newer release for another Python" lookup ask for the same index page from two threads; it is read once, the
second asker waits for the first's answer. Served over HTTP on 127.0.0.1 by the kit (every request counted)."""

from __future__ import annotations

import threading
from pathlib import Path

from rebuild.index import simple
from tests.kit.simple_index import SimpleIndex


def test_two_threads_asking_for_one_page_read_it_once(kit_index: Path, monkeypatch) -> None:
    monkeypatch.setattr(simple, "_PAGES", {})
    with SimpleIndex(kit_index) as served:
        sources = simple.Sources(index_urls=[served.url])
        answers: list[list[str]] = []

        def ask() -> None:
            answers.append(sorted(f.filename for f in simple.list_files("tensorflow-cpu", sources)))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pages = [r for r in served.requests if r.startswith("/simple/tensorflow-cpu")]
        assert answers[0] and answers[0] == answers[1]
        assert len(pages) == 1, served.requests

        monkeypatch.setattr(simple, "_PAGE_SECONDS", 0.0)  # older than a minute: read again
        assert sorted(f.filename for f in simple.list_files("tensorflow-cpu", sources)) == answers[0]
        assert len([r for r in served.requests if r.startswith("/simple/tensorflow-cpu")]) == 2
