"""The dependency graph's short cuts (issue 26: a big env's snapshot) give the edges evaluating everything gives.

``graph.edges`` skips lines naming nothing installed before parsing them, and evaluates a marker only for the
extras it names; the reference here parses every line and tries every extra.
"""

from __future__ import annotations

import random

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rebuild.env import graph

ENV = graph.marker_environment({"version_info": [3, 11, 7], "version": "3.11.7"}, {"system": "Linux"})

LINES = [
    "lib",
    "Lib_Two>=1.0",
    "  lib.three ; python_version >= '3.8'",
    "lib ; python_version < '3.0'",
    'helper ; extra == "Test_Suite"',  # the extra written otherwise than Provides-Extra spells it
    "helper ; extra == 'docs' or extra == 'dev'",
    'helper ; extra != "docs"',  # true for any other extra: every one must be tried
    'helper ; "docs" == extra',
    'helper ; extra in "docs dev"',
    'helper ; platform_version == "extra"',  # the word, not the variable
    'helper[fast] @ https://example.invalid/helper.whl ; extra == "dev"',
    "notinstalled>=1 ; extra == 'docs'",
    "lib >= = 1",  # malformed: no edge
    "-lib",
    "",
    "lib ; extra == ",
    "lib-two ; python_version >= '3.8' and extra == 'dev' and sys_platform == 'linux'",
    # where the first ";" falls: read as packaging reads the whole line
    "lib;python_version>'3'",
    "lib ;",
    "lib-two ; ",
    "lib >= 1.0 ; os_name == 'posix' ; extra == 'dev'",
    "lib===1.0;python_version>'3'",
    "lib (>=1.0) ; python_version > '3'",
    "lib-three[fast] ; extra == 'dev'",
    "lib ; platform_version == 'a;b'",
    "helper @ https://example.invalid/a;b/helper.whl ; extra == 'dev'",
    "helper @ https://example.invalid/helper.whl;extra == 'dev'",
]


def reference(dists, env, provides_extra):
    out = []
    for parent, requires in dists.items():
        extras = provides_extra.get(parent, [])
        for text in requires:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            child = canonicalize_name(req.name)
            if child == parent or child not in dists:
                continue
            if req.marker is None:
                out.append(graph.Edge(parent, child, text, False))
                continue
            try:
                if req.marker.evaluate({**env, "extra": ""}):
                    out.append(graph.Edge(parent, child, text, False))
                elif any(req.marker.evaluate({**env, "extra": e}) for e in extras):
                    out.append(graph.Edge(parent, child, text, True))
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                pass
    return out


def test_edges_are_those_of_evaluating_every_line_and_extra() -> None:
    rng = random.Random(26)
    extras_pool = ["test-suite", "docs", "dev", "all", "fast"]
    for _ in range(60):
        dists = {
            name: rng.sample(LINES, rng.randint(0, len(LINES)))
            for name in ("app", "lib", "lib-two", "lib-three", "helper")
            if name == "app" or rng.random() < 0.8
        }
        provides = {name: rng.sample(extras_pool, rng.randint(0, len(extras_pool))) for name in dists}
        got = graph.edges(dists, ENV, provides)
        assert got == reference(dists, ENV, provides), (dists, provides)
    # the cases that matter, once by hand
    dists = {"app": LINES, "lib": [], "lib-two": [], "lib-three": [], "helper": []}
    got = {(e.child, e.requirement, e.via_extra) for e in graph.edges(dists, ENV, {"app": ["test-suite", "other"]})}
    assert ("helper", 'helper ; extra == "Test_Suite"', True) in got
    assert ("helper", 'helper ; extra != "docs"', False) in got
    assert not any(r.startswith("notinstalled") or r == "lib >= = 1" for _c, r, _v in got)
    assert {("lib", "lib", False), ("lib-two", "Lib_Two>=1.0", False)} <= got
