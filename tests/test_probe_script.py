"""Tests for rebuild/env/_probe.py, the standalone probe run by a target interpreter.

Every test runs the script in a subprocess, as tfrebuild does
(``<python> -I -S _probe.py [--deep]``), against throwaway environments made
in tmp_path with ``-m venv --without-pip`` and hand-written metadata folders.
"""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "rebuild" / "env" / "_probe.py"

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX venv layout assumed")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _clean_env(tmp_path, **extra):
    env = dict(os.environ)
    for k in _load_module().ENVIRON_KEYS + ("__PYVENV_LAUNCHER__",):
        env.pop(k, None)
    # Keep the real user site out of the picture unless a test asks for it.
    empty = tmp_path / "_empty_userbase"
    empty.mkdir(exist_ok=True)
    env["PYTHONUSERBASE"] = str(empty)
    env.update(extra)
    return env


def run_probe(python, *args, env=None, flags=("-I", "-S")):
    cmd = [str(python), *flags, str(PROBE), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, "probe failed (%s):\n%s" % (proc.returncode, proc.stderr)
    out = proc.stdout
    assert out.endswith("\n") and out.count("\n") == 1, "not exactly one JSON line: %r" % out[:500]
    doc = json.loads(out)
    assert doc["probe_version"] == 1
    return doc


def base_python():
    """A non-venv interpreter: the one running the tests, or its base."""
    if sys.prefix == sys.base_prefix:
        return sys.executable
    v = "%d.%d" % sys.version_info[:2]
    for name in ("python" + v, "python3", "python"):
        cand = os.path.join(sys.base_prefix, "bin", name)
        if os.path.isfile(cand):
            return cand
    pytest.skip("cannot locate the base interpreter of %s" % sys.executable)


def make_venv(path, python=None, system_site=False):
    python = python or sys.executable
    cmd = [str(python), "-m", "venv", "--without-pip"]
    if system_site:
        cmd.append("--system-site-packages")
    cmd.append(str(path))
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    vpy = path / "bin" / "python"
    assert vpy.exists()
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    site = Path(site)
    assert site.is_dir()
    return vpy, site


def write_dist(
    site,
    name,
    version,
    requires=(),
    extras=(),
    requires_python=None,
    installer=None,
    requested=False,
    direct_url=None,
    record=None,
    top_level=None,
    files=(),
    body="",
):
    di = site / ("%s-%s.dist-info" % (name.replace("-", "_"), version))
    di.mkdir()
    lines = ["Metadata-Version: 2.1", "Name: %s" % name, "Version: %s" % version]
    if requires_python:
        lines.append("Requires-Python: %s" % requires_python)
    lines += ["Provides-Extra: %s" % e for e in extras]
    lines += ["Requires-Dist: %s" % r for r in requires]
    text = "\n".join(lines) + "\n"
    if body:
        text += "\n" + body
    (di / "METADATA").write_text(text, encoding="utf-8")
    if installer is not None:
        (di / "INSTALLER").write_text(installer + "\n")
    if requested:
        (di / "REQUESTED").write_text("")
    if direct_url is not None:
        (di / "direct_url.json").write_text(json.dumps(direct_url))
    if top_level is not None:
        (di / "top_level.txt").write_text("".join(t + "\n" for t in top_level))
    for rel in files:
        f = site / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("# %s\n" % rel)
    if record is not None:
        rows = ["%s,sha256=x,1" % r for r in record]
        rows.append("%s/RECORD,," % di.name)
        (di / "RECORD").write_text("\n".join(rows) + "\n")
    return di


def by_canonical(doc):
    out = {}
    for d in doc["distributions"]:
        out.setdefault(d["canonical"], []).append(d)
    return out


def _load_module():
    spec = importlib.util.spec_from_file_location("_probe_under_test", PROBE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# (a) a hand-populated venv
# ---------------------------------------------------------------------------


@pytest.fixture
def sample_venv(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    write_dist(
        site,
        "Alpha_Pkg",
        "1.0",
        requires=["numpy>=1.0", 'rich>=13; extra == "cli"'],
        extras=["cli"],
        requires_python=">=3.8",
        installer="uv",
        requested=True,
        record=[
            "alpha_pkg/__init__.py",
            "alpha_pkg/sub/x.py",
            "alpha_mod.py",
            "_alpha_ext.cpython-311-x86_64-linux-gnu.so",
            "alpha_pkg/__pycache__/__init__.cpython-311.pyc",
            "../../../bin/alpha",
            "Alpha_Pkg-1.0.data/scripts/y",
            "alpha.pth",
        ],
        files=["alpha_pkg/__init__.py", "alpha_pkg/sub/x.py", "alpha_mod.py"],
        body="Long description\n\nRequires-Dist: not-a-header\n",
    )
    write_dist(
        site,
        "beta",
        "2.0",
        installer="pip",
        top_level=["beta"],
        direct_url={"url": "file:///src/beta", "dir_info": {"editable": True}},
        record=["__editable__.beta-2.0.pth"],
    )
    write_dist(
        site,
        "gamma",
        "0.1",
        installer="uv",
        requested=True,
        direct_url={
            "url": "https://github.com/example/gamma.git",
            "vcs_info": {"vcs": "git", "commit_id": "0123abcd", "requested_revision": "main"},
        },
        top_level=["gamma"],
        record=["gamma/__init__.py"],
    )
    # debris
    (site / "~ensorflow").mkdir()
    (site / "~ensorflow" / "__init__.py").write_text("")
    (site / "broken-1.0.dist-info").mkdir()
    (site / "broken-1.0.dist-info" / "RECORD").write_text("")
    bad = site / "latin-1.0.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_bytes(b"Metadata-Version: 2.1\nName: latin\nVersion: 1.0\nAuthor: Andr\xe9\n")
    noname = site / "noname-1.0.dist-info"
    noname.mkdir()
    (noname / "METADATA").write_text("Metadata-Version: 2.1\nSummary: x\n")
    dirmeta = site / "dirmeta-1.0.dist-info"
    (dirmeta / "METADATA").mkdir(parents=True)
    # legacy egg-info (setuptools develop / old installs)
    egg = site / "delta-3.0-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.2\nName: delta\nVersion: 3.0\nRequires-Python: >=3.6\n")
    (egg / "requires.txt").write_text(
        'six\n\n[docs]\nsphinx>=4\n\n[:sys_platform == "win32"]\npywin32\n\n[test:python_version < "3.8"]\nmock\n'
    )
    (egg / "top_level.txt").write_text("delta\n")
    # distutils-style single-file egg-info
    (site / "old-0.9-py3.11.egg-info").write_text("Metadata-Version: 1.0\nName: old\nVersion: 0.9\n")
    return vpy, site


def test_sample_venv(sample_venv, tmp_path):
    vpy, site = sample_venv
    venv_dir = vpy.parent.parent
    env = _clean_env(tmp_path, VIRTUAL_ENV=str(venv_dir), TF_CPP_MIN_LOG_LEVEL="2")
    doc = run_probe(vpy, env=env)

    assert set(doc) == {
        "probe_version",
        "interpreter",
        "platform",
        "env",
        "paths",
        "environ",
        "distributions",
        "debris",
        "sys_path",
        "warnings",
    }
    interp = doc["interpreter"]
    assert interp["executable"] == str(vpy)
    assert interp["version_info"][:3] == list(sys.version_info[:3])
    assert interp["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert interp["implementation"] == "cpython"
    assert os.path.realpath(interp["prefix"]) == os.path.realpath(venv_dir)
    assert interp["base_prefix"] == sys.base_prefix
    assert interp["pointer_bits"] in (32, 64)
    assert isinstance(interp["gil_disabled"], bool)
    assert interp["soabi"] and interp["ext_suffix"].endswith(".so")

    plat = doc["platform"]
    assert plat["system"] == "Linux" or sys.platform != "linux"
    if sys.platform.startswith("linux"):
        assert plat["libc"] in ("glibc", "musl")

    e = doc["env"]
    assert e["kind"] == "venv"
    assert e["is_venv"] is True and e["conda"] is False
    assert e["include_system_site_packages"] is False
    assert e["externally_managed"] is False
    assert "home" in e["pyvenv_cfg"]

    paths = doc["paths"]
    assert [os.path.realpath(p) for p in paths["site_packages"]] == [os.path.realpath(site)]
    assert paths["user_site_enabled"] is False
    assert paths["user_site"].startswith(env["PYTHONUSERBASE"])
    assert paths["system_site_packages"], "base site-packages should be reported"
    assert paths["stdlib"]

    assert doc["environ"] == {
        "VIRTUAL_ENV": str(venv_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUSERBASE": env["PYTHONUSERBASE"],
    }
    assert isinstance(doc["sys_path"], list)

    dists = by_canonical(doc)
    assert sorted(dists) == ["alpha-pkg", "beta", "delta", "gamma", "latin", "old"]
    assert [d["canonical"] for d in doc["distributions"]] == sorted(dists)
    assert all(d["location"] == "env" for d in doc["distributions"])
    assert all("record_missing" not in d for d in doc["distributions"])

    a = dists["alpha-pkg"][0]
    assert a["name"] == "Alpha_Pkg" and a["version"] == "1.0"
    assert a["requires"] == ["numpy>=1.0", 'rich>=13; extra == "cli"']
    assert a["requires_python"] == ">=3.8"
    assert a["provides_extra"] == ["cli"]
    assert a["installer"] == "uv" and a["requested"] is True
    assert a["direct_url"] is None
    assert a["top_level"] == ["_alpha_ext", "alpha_mod", "alpha_pkg"]
    assert a["dist_info"] == str(site / "Alpha_Pkg-1.0.dist-info")
    assert os.path.realpath(a["site_dir"]) == os.path.realpath(site)

    b = dists["beta"][0]
    assert b["installer"] == "pip" and b["requested"] is False
    assert b["direct_url"] == {"url": "file:///src/beta", "dir_info": {"editable": True}}
    assert b["top_level"] == ["beta"]
    assert b["requires"] == [] and b["requires_python"] is None and b["provides_extra"] == []

    g = dists["gamma"][0]
    assert g["direct_url"]["vcs_info"]["commit_id"] == "0123abcd"
    assert g["requested"] is True

    d = dists["delta"][0]
    assert d["dist_info"].endswith("delta-3.0-py3.11.egg-info")
    assert d["requires"] == [
        "six",
        'sphinx>=4; extra == "docs"',
        'pywin32; sys_platform == "win32"',
        'mock; (python_version < "3.8") and extra == "test"',
    ]
    assert d["requires_python"] == ">=3.6"
    assert d["top_level"] == ["delta"] and d["installer"] is None

    assert dists["old"][0]["version"] == "0.9"
    assert dists["latin"][0]["version"] == "1.0"

    debris = {(x["kind"], os.path.basename(x["path"])) for x in doc["debris"]}
    assert debris == {
        ("tilde-folder", "~ensorflow"),
        ("no-metadata", "broken-1.0.dist-info"),
        ("bad-metadata", "latin-1.0.dist-info"),
        ("bad-metadata", "noname-1.0.dist-info"),
        ("bad-metadata", "dirmeta-1.0.dist-info"),
    }
    for x in doc["debris"]:
        assert os.path.isabs(x["path"]) and x["location"] == "env"
    assert not any(x["kind"] == "orphan-top-level" for x in doc["debris"])


@pytest.mark.parametrize(
    "marker,kind",
    [
        ("uv", "uv"),
        ("virtualenv", "virtualenv"),
        ("conda", "conda"),
        ("duplicate", "venv"),
    ],
)
def test_env_kinds_and_duplicates(tmp_path, marker, kind):
    vpy, site = make_venv(tmp_path / "venv")
    venv = vpy.parent.parent
    if marker in ("uv", "virtualenv"):
        with open(venv / "pyvenv.cfg", "a") as f:
            f.write("%s = 1.2.3\n" % marker)
    elif marker == "conda":
        (venv / "conda-meta").mkdir()
    else:
        write_dist(site, "six", "1.16.0")
        dup = site / "six-1.15.0.dist-info"
        dup.mkdir()
        (dup / "METADATA").write_text("Name: six\nVersion: 1.15.0\n")
    doc = run_probe(vpy, env=_clean_env(tmp_path))
    assert doc["env"]["kind"] == kind
    if marker in ("uv", "virtualenv"):
        assert doc["env"]["pyvenv_cfg"][marker] == "1.2.3"
    if marker == "conda":
        assert doc["env"]["conda"] is True
    if marker == "duplicate":
        six = [d for d in doc["distributions"] if d["canonical"] == "six"]
        assert sorted(d["version"] for d in six) == ["1.15.0", "1.16.0"]


def test_venv_with_system_site_packages(tmp_path):
    vpy, site = make_venv(tmp_path / "venv", system_site=True)
    write_dist(site, "localpkg", "1.0", top_level=["localpkg"])
    doc = run_probe(vpy, env=_clean_env(tmp_path))
    assert doc["env"]["include_system_site_packages"] is True
    assert doc["paths"]["user_site_enabled"] is True
    sys_dirs = doc["paths"]["system_site_packages"]
    assert sys_dirs
    locs = [d["location"] for d in doc["distributions"]]
    assert locs[0] == "env" and "localpkg" in [d["canonical"] for d in doc["distributions"]]
    has_meta = any(glob.glob(os.path.join(p, "*.dist-info")) for p in sys_dirs)
    if has_meta:
        assert "system" in locs
        # location order: all env entries before all system entries
        assert locs == sorted(locs, key=["env", "user", "system"].index)
        assert all(d["site_dir"] in sys_dirs for d in doc["distributions"] if d["location"] == "system")


# ---------------------------------------------------------------------------
# (b) a system interpreter
# ---------------------------------------------------------------------------


def _system_pythons():
    out = [("base", None)]
    if os.path.isfile("/usr/bin/python3"):
        out.append(("usr-bin", "/usr/bin/python3"))
    return out


@pytest.mark.parametrize("label,python", _system_pythons(), ids=[x[0] for x in _system_pythons()])
def test_system_interpreter(tmp_path, label, python):
    python = python or base_python()
    doc = run_probe(python, env=_clean_env(tmp_path))
    assert doc["env"]["kind"] == "system"
    assert doc["env"]["is_venv"] is False and doc["env"]["pyvenv_cfg"] == {}
    assert doc["paths"]["system_site_packages"] == []
    assert doc["paths"]["site_packages"]
    assert doc["paths"]["user_site_enabled"] is True
    assert doc["distributions"], "expected the system interpreter to have distributions"
    assert {d["location"] for d in doc["distributions"]} <= {"env", "user"}
    for d in doc["distributions"]:
        assert d["name"] and d["version"] is not None
        assert d["canonical"] == d["canonical"].lower()
    stdlib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert doc["env"]["externally_managed"] == os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))
    # Cross-check names/versions against importlib.metadata run normally.
    ref = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json, sys\n"
            "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in "
            "m.distributions(path=sys.argv[1:]) if d.metadata['Name']})))",
            *doc["paths"]["site_packages"],
        ],
        capture_output=True,
        text=True,
    )
    if ref.returncode == 0:
        expected = {tuple(x) for x in json.loads(ref.stdout)}
        got = {(d["name"], d["version"]) for d in doc["distributions"] if d["location"] == "env"}
        assert got == expected


# ---------------------------------------------------------------------------
# (c) every interpreter version available through pyenv
# ---------------------------------------------------------------------------


def _pyenv_root():
    exe = shutil.which("pyenv")
    if exe:
        try:
            r = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and r.stdout.strip():
                return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def _find_version(minor):
    pattern = os.path.join(_pyenv_root(), "versions", "3.%d.*" % minor, "bin", "python3.%d" % minor)
    hits = sorted(p for p in glob.glob(pattern) if os.access(p, os.X_OK))
    return hits[-1] if hits else None


@pytest.mark.parametrize("minor", [6, 7, 8, 9, 10, 11, 12, 13])
def test_pyenv_versions(tmp_path, minor):
    py = _find_version(minor)
    if py is None:
        pytest.skip("no pyenv interpreter for 3.%d under %s/versions" % (minor, _pyenv_root()))
    # Syntax: the interpreter itself compiles the source.
    subprocess.run(
        [py, "-c", "import sys; p=sys.argv[1]; compile(open(p, encoding='utf-8').read(), p, 'exec')", str(PROBE)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    vpy, site = make_venv(tmp_path / "venv", python=py)
    write_dist(
        site,
        "marker-pkg",
        "0.1",
        requires=["idna"],
        installer="uv",
        record=["marker_pkg/__init__.py"],
        files=["marker_pkg/__init__.py"],
    )
    (site / "~arker").mkdir()
    doc = run_probe(vpy, env=_clean_env(tmp_path))
    assert doc["interpreter"]["version_info"][:2] == [3, minor]
    assert doc["interpreter"]["version"].startswith("3.%d." % minor)
    assert doc["interpreter"]["executable"] == str(vpy)
    assert doc["env"]["kind"] == "venv"
    assert [os.path.realpath(p) for p in doc["paths"]["site_packages"]] == [os.path.realpath(site)]
    assert [(d["canonical"], d["top_level"], d["requires"]) for d in doc["distributions"]] == [
        ("marker-pkg", ["marker_pkg"], ["idna"])
    ]
    assert [x["kind"] for x in doc["debris"]] == ["tilde-folder"]
    assert doc["warnings"] == []
    deep = run_probe(vpy, "--deep", env=_clean_env(tmp_path))
    assert deep["distributions"][0]["record_missing_count"] == 0


# ---------------------------------------------------------------------------
# (d) --deep
# ---------------------------------------------------------------------------


def test_deep_record_missing_and_orphans(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    venv = vpy.parent.parent
    (venv / "bin" / "eps").write_text("#!/bin/sh\n")
    write_dist(
        site,
        "epsilon",
        "1.0",
        installer="pip",
        record=[
            "epsilon/__init__.py",
            "epsilon/core.py",
            "epsilon/__pycache__/core.cpython-311.pyc",  # never written: ignored
            "../../../bin/eps",
        ],
        files=["epsilon/__init__.py", "epsilon/core.py"],
    )
    (site / "epsilon" / "core.py").unlink()
    write_dist(
        site,
        "zeta",
        "2.0",
        top_level=["zeta"],
        record=["zeta/__init__.py", "zeta_helper.py"],
        files=["zeta/__init__.py", "zeta_helper.py"],
    )
    write_dist(site, "norecord", "1.0", top_level=["norecord"], files=["norecord/__init__.py"])
    egg = site / "delta-3.0-py3.11.egg-info"  # legacy: installed-files.txt
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: delta\nVersion: 3.0\n")
    (egg / "installed-files.txt").write_text("../delta/__init__.py\n../delta/gone.py\nPKG-INFO\n")
    (site / "delta").mkdir()
    (site / "delta" / "__init__.py").write_text("")
    # orphans
    (site / "orphanpkg").mkdir()
    (site / "orphanpkg" / "__init__.py").write_text("")
    (site / "lonely.py").write_text("")
    (site / "cext.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    # not orphans
    (site / "nsdir").mkdir()
    (site / "nsdir" / "mod.py").write_text("")
    (site / "_virtualenv.py").write_text("")
    (site / "_distutils_hack").mkdir()
    (site / "_distutils_hack" / "__init__.py").write_text("")
    (site / "x.pth").write_text("")
    (site / "__pycache__").mkdir(exist_ok=True)
    (site / "README.txt").write_text("")
    (site / "~rphan").mkdir()
    (site / "~rphan" / "__init__.py").write_text("")

    shallow = run_probe(vpy, env=_clean_env(tmp_path))
    assert all("record_missing" not in d for d in shallow["distributions"])
    # Issue 23: the plain scan finds them too (confirmed against the RECORDs), so the plan names them.
    assert sorted(x["name"] for x in shallow["debris"] if x["kind"] == "orphan-top-level") == [
        "cext",
        "lonely",
        "orphanpkg",
    ]
    assert [os.path.basename(x["path"]) for x in shallow["debris"] if x["kind"] == "own-pth"] == ["x.pth"]

    doc = run_probe(vpy, "--deep", env=_clean_env(tmp_path))
    dists = by_canonical(doc)
    eps = dists["epsilon"][0]
    assert eps["record_missing"] == ["epsilon/core.py"]
    assert eps["record_missing_count"] == 1
    assert dists["zeta"][0]["record_missing"] == []
    assert dists["zeta"][0]["record_missing_count"] == 0
    assert dists["norecord"][0]["record_missing"] is None
    assert dists["delta"][0]["record_missing"] == ["../delta/gone.py"]
    assert dists["delta"][0]["top_level"] == ["delta"]
    orphans = sorted((x["name"], os.path.basename(x["path"])) for x in doc["debris"] if x["kind"] == "orphan-top-level")
    assert orphans == [
        ("cext", "cext.cpython-311-x86_64-linux-gnu.so"),
        ("lonely", "lonely.py"),
        ("orphanpkg", "orphanpkg"),
    ]
    assert [x["kind"] for x in doc["debris"]].count("tilde-folder") == 1


def test_deep_record_missing_is_capped(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    rec = ["many/f%02d.py" % i for i in range(30)]
    write_dist(site, "many", "1.0", record=rec)
    doc = run_probe(vpy, "--deep", env=_clean_env(tmp_path))
    d = doc["distributions"][0]
    assert d["record_missing_count"] == 30
    assert d["record_missing"] == rec[:20]


# ---------------------------------------------------------------------------
# (e) user site
# ---------------------------------------------------------------------------


def _make_user_site(tmp_path, python):
    ver = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ub = tmp_path / "userbase"
    us = ub / "lib" / ("python" + ver) / "site-packages"
    us.mkdir(parents=True)
    write_dist(us, "foo", "1.0", installer="pip", requested=True, top_level=["foo"])
    return ub, us


def test_user_site_system_interpreter(tmp_path):
    py = base_python()
    ub, us = _make_user_site(tmp_path, py)
    doc = run_probe(py, env=_clean_env(tmp_path, PYTHONUSERBASE=str(ub)))
    assert doc["paths"]["user_site"] == str(us)
    assert doc["paths"]["user_site_enabled"] is True
    foo = [d for d in doc["distributions"] if d["canonical"] == "foo"]
    assert len(foo) == 1 and foo[0]["location"] == "user"
    assert foo[0]["site_dir"] == str(us) and foo[0]["requested"] is True
    assert doc["distributions"][-1]["location"] == "user"  # env entries come first

    off = run_probe(py, env=_clean_env(tmp_path, PYTHONUSERBASE=str(ub), PYTHONNOUSERSITE="1"))
    assert off["paths"]["user_site_enabled"] is False
    assert [d["location"] for d in off["distributions"] if d["canonical"] == "foo"] == ["user"]


def test_user_site_reported_from_venv(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    ub, us = _make_user_site(tmp_path, vpy)
    doc = run_probe(vpy, env=_clean_env(tmp_path, PYTHONUSERBASE=str(ub)))
    assert doc["paths"]["user_site"] == str(us)
    assert doc["paths"]["user_site_enabled"] is False
    assert [(d["canonical"], d["location"]) for d in doc["distributions"]] == [("foo", "user")]


# ---------------------------------------------------------------------------
# robustness, speed, helpers
# ---------------------------------------------------------------------------


def test_soft_failures_become_warnings(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    di = write_dist(site, "weird", "1.0")
    (di / "RECORD").mkdir()  # unreadable RECORD
    (di / "direct_url.json").write_text("{not json")
    (site / "notadir-1.0.dist-info").write_text("x")
    doc = run_probe(vpy, env=_clean_env(tmp_path))
    assert [d["canonical"] for d in doc["distributions"]] == ["weird"]
    assert doc["distributions"][0]["direct_url"] is None
    w = "\n".join(doc["warnings"])
    assert "RECORD" in w and "direct_url.json" in w and "notadir" in w
    deep = run_probe(vpy, "--deep", "--bogus", env=_clean_env(tmp_path))
    assert deep["distributions"][0]["record_missing"] is None
    assert any("--bogus" in x for x in deep["warnings"])


def test_speed_300_distributions(tmp_path):
    vpy, site = make_venv(tmp_path / "venv")
    body = "Lorem ipsum dolor sit amet.\n" * 400
    for i in range(300):
        name = "pkg%03d" % i
        write_dist(
            site,
            name,
            "1.%d" % i,
            requires=["dep%d>=1" % j for j in range(8)],
            installer="uv",
            body=body,
            record=["%s/m%02d.py" % (name, j) for j in range(60)],
            top_level=[name] if i % 2 else None,
        )
    run_probe(vpy, env=_clean_env(tmp_path))  # warm the page cache
    t0 = time.perf_counter()
    doc = run_probe(vpy, env=_clean_env(tmp_path))
    elapsed = time.perf_counter() - t0
    assert len(doc["distributions"]) == 300
    assert doc["distributions"][1]["top_level"] == ["pkg001"]
    assert doc["distributions"][0]["top_level"] == ["pkg000"]
    # Target is < 1 s including interpreter start; leave slack for loaded CI machines.
    assert elapsed < 3.0, "probe took %.2fs for 300 distributions" % elapsed


def test_helpers_in_process():
    mod = _load_module()
    assert mod.canonicalize("Foo.Bar__baz") == "foo-bar-baz"
    assert mod.top_level_from_paths(
        [
            "pkg/__init__.py",
            "mod.py",
            "ext.abi3.so",
            "../../../bin/tool",
            "bin/tool",
            "pkg-1.0.dist-info/METADATA",
            "pkg-1.0.data/scripts/x",
            "__pycache__/m.pyc",
            "zz.pth",
            "./dotted/x.py",
            "not-ident.py",
        ]
    ) == ["dotted", "ext", "mod", "pkg"]
    assert mod.parse_requires_txt("a\n[x]\nb; python_version<'3'\n") == [
        "a",
        "b; (python_version<'3') and extra == \"x\"",
    ]


def test_no_third_party_or_new_syntax():
    import ast

    tree = ast.parse(PROBE.read_text(encoding="utf-8"))
    stdlib = getattr(sys, "stdlib_module_names", None)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module != "__future__"
            mods = [node.module]
        else:
            mods = []
        for m in mods:
            assert not m.startswith("importlib"), m
            if stdlib is not None:
                assert m.split(".")[0] in stdlib, m
        # f-strings are 3.6+ but keep the file free of them; walrus/match are 3.8+/3.10+
        assert not isinstance(node, ast.JoinedStr)
        assert type(node).__name__ not in ("NamedExpr", "Match")
