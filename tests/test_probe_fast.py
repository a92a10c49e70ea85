"""The probe's short cuts on a big env read the same facts as reading everything would (issue 26).

* Orphans: a plain scan confirms its candidates (names no ``top_level.txt`` claims) against the RECORDs, parsing only
  those whose text holds a candidate's name; a ``--deep`` scan parses every RECORD. Both must name the same files.
* Headers: METADATA's header block is read by one regular expression; the email parser is the reference.
* Top-level names from a RECORD: the usual paths are looked at by their first component only.
"""

import os
import random
from email.parser import HeaderParser

import pytest

from tests.test_probe_script import _clean_env, _find_version, _load_module, make_venv, run_probe, write_dist

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX venv layout assumed")


def _found(doc):
    return sorted((x["kind"], os.path.basename(x["path"])) for x in doc["debris"])


@pytest.mark.parametrize("minor", [None, 8])
def test_orphans_are_found_when_only_a_record_explains_the_others(tmp_path, minor):
    python = _find_version(minor) if minor else None
    if minor and python is None:
        pytest.skip("no pyenv interpreter for 3.%d" % minor)
    vpy, site = make_venv(tmp_path / "venv", python=python)
    # Many distributions without top_level.txt (hatchling, flit, maturin wheels): their RECORDs give their names.
    for i in range(30):
        name = "plain%02d" % i
        write_dist(site, name, "1.0", record=["%s/__init__.py" % name, "%s/core.py" % name])
    # A loose module known only from a RECORD (no top_level.txt anywhere names it).
    write_dist(site, "alpha", "1.0", record=["alpha/__init__.py", "alpha_helper.py"], files=["alpha_helper.py"])
    # top_level.txt that leaves out files the RECORD installs: a module and a .pth (setuptools'
    # distutils-precedence.pth is one), confirmed by reading that RECORD.
    write_dist(
        site,
        "beta",
        "1.0",
        top_level=["beta"],
        record=["beta/__init__.py", "beta_extra.py", "beta-owned.pth"],
        files=["beta_extra.py", "beta-owned.pth"],
    )
    # Paths a RECORD may write otherwise: quoted (a comma; a '"' doubled) and with a leading "./".
    odd = {"com,ma.pth": '"com,ma.pth"', "gamma_dotted.py": "./gamma_dotted.py"}
    write_dist(site, "gamma", "1.0", top_level=["gamma"], record=list(odd.values()), files=list(odd))
    write_dist(site, "delta", "1.0", top_level=["delta"], record=['"we""ird.pth"'], files=['we"ird.pth'])
    # The user's own: found, even where an owned file's name contains theirs ("extra.py" in "beta_extra.py").
    for rel in ("mine.pth", "extra.py", "loose_mod.py", "userpkg/__init__.py"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("# the user's\n")

    want = [
        ("orphan-top-level", "extra.py"),
        ("orphan-top-level", "loose_mod.py"),
        ("orphan-top-level", "userpkg"),
        ("own-pth", "mine.pth"),
    ]
    shallow = run_probe(vpy, env=_clean_env(tmp_path))
    assert _found(shallow) == want, shallow["debris"]
    deep = run_probe(vpy, "--deep", env=_clean_env(tmp_path))
    assert _found(deep) == want, deep["debris"]
    tops = {d["canonical"]: d["top_level"] for d in shallow["distributions"]}
    assert tops["alpha"] == ["alpha", "alpha_helper"] and tops["plain07"] == ["plain07"]
    assert shallow["warnings"] == []


def test_top_level_names_of_usual_and_unusual_paths():
    mod = _load_module()
    usual = ["pkg/__init__.py", "pkg/sub/m.py", "mod.py", "ext.cpython-311-x86_64-linux-gnu.so", "bin/tool"]
    assert mod.top_level_from_paths(usual) == ["ext", "mod", "pkg"]
    assert mod.top_level_from_paths(usual + ["bin/__init__.py"]) == ["bin", "ext", "mod", "pkg"]
    assert mod.top_level_from_paths(usual + ["./bin/__init__.py", "Scripts/x.exe"]) == ["bin", "ext", "mod", "pkg"]
    odd = ["pkg\\win.py", "./lead/x.py", "/abs/path.py", "../up.py", "", ".hidden/x.py", "__pycache__/a.pyc"]
    assert mod.top_level_from_paths(iter(odd)) == ["lead", "pkg"]  # any iterable, as before


_PIECES = [
    "Name: pkg",
    "Version: 1.0",
    "Requires-Dist: a>=1",
    "requires-dist: b ; extra == 'x'",
    "Summary:",
    "Keywords:   a, b   ",
    " continued",
    "\tcontinued with a tab",
    "   ",
    "not a header",
    "From someone",
    "Name : spaced",
    "X-Weird!#: ok",
    ":empty name",
    "Caf\u00e9: not ascii",
    "License: caf\u00e9 \u2603",
]


def test_a_long_token_without_a_colon_goes_to_the_email_parser_at_once():
    """A header block with a long unindented token (a blob in a hand-made METADATA) is not a plain block: the fast
    reader gives it to the email parser after one pass (an unanchored search took minutes on 80,000 characters)."""
    mod = _load_module()
    text = "Name: x\n" + "a" * 400_000 + "\nVersion: 1\n"
    assert mod._simple_headers(text) is None
    assert mod._simple_headers("Name: x\nVersion: 1\n").get("version") == "1"


@pytest.mark.parametrize("seed", range(40))
def test_header_block_reads_as_the_email_parser_reads_it(seed):
    mod = _load_module()
    rng = random.Random(seed)
    lines = [rng.choice(_PIECES) for _ in range(rng.randint(0, 8))]
    text = "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lines)
    if lines and rng.random() < 0.3:
        text = text.rstrip("\r\n")  # no final line break
    want = HeaderParser().parsestr(text)
    fast = mod._simple_headers(text)
    got = fast if fast is not None else want
    for key in ("Name", "Version", "Requires-Dist", "Summary", "Keywords", "License", "X-Weird!#", "Missing"):
        assert got.get(key) == want.get(key), (key, text)
        assert (got.get_all(key) or []) == (want.get_all(key) or []), (key, text)
    assert mod._simple_headers("Name: pkg\r\nVersion: 1.0\nRequires-Dist: a\n  b\n") is not None  # the usual way


def test_likely_owners_are_read_first():
    mod = _load_module()
    assert mod._likely_owner("setuptools-80.9.0.dist-info", {"distutils-precedence.pth"})
    assert mod._likely_owner("protobuf-4.25.3.dist-info", {"protobuf-4.25.3-nspkg.pth"})
    assert mod._likely_owner("my_tool-1.0.dist-info", {"__editable__.my_tool-1.0.pth"})
    assert not mod._likely_owner("numpy-1.26.4.dist-info", {"distutils-precedence.pth", "mine.pth"})
