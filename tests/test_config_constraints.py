"""Constraints (issue 11, point 1): pip's ``constraint``, ``PIP_CONSTRAINT``, uv's
``constraint-dependencies`` / ``UV_CONSTRAINT`` and ``--constraint`` apply when resolving, are
recorded in the profile, and never reach the install of a lock.

The upgrades run the real CLI offline against a ``file://`` simple index the test writes from
the kit's wheels, with ``#sha256=`` fragments, so the lock is hashed and the new env is installed
with ``uv pip sync --require-hashes`` -- where a constraint line such as ``keras<3.10`` used to
make every build fail ("all requirements must have their versions pinned with ==").
Each test builds its own configuration (pip.conf, uv.toml, variables); the machine's is kept out
(``XDG_CONFIG_DIRS``/``XDG_CONFIG_HOME``/``HOME`` point into the test's folder).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from rebuild.env import profile as prof
from rebuild.index import config as indexconf

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

CLASSIC = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas", "numpy==1.24.3"]
KERAS = "import json, keras; print(json.dumps(keras.__version__))"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def hashed_index(kit_index: Path, tmp_path_factory) -> str:
    """A PEP 503 ``file://`` index of every kit wheel, each link with its sha256."""
    root = tmp_path_factory.mktemp("hashed-simple")
    projects: dict[str, list[Path]] = {}
    for wheel in sorted(kit_index.glob("*.whl")):
        projects.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
    for name, wheels in projects.items():
        folder = root / name
        folder.mkdir()
        links = "".join(
            f'<a href="{w.as_uri()}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a>\n' for w in wheels
        )
        (folder / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return root.as_uri()


def environ(kit_env: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    """kit_env without its find-links/no-index, with HOME and XDG folders of the test's own."""
    env = {k: v for k, v in kit_env.items() if k not in ("UV_FIND_LINKS", "PIP_FIND_LINKS", "PIP_NO_INDEX")}
    (home / "xdg").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_DIRS=str(home / "xdg"), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(extra)
    return env


def tfrebuild(*args, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rebuild", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def keras_in(venv_run, env: Path) -> str:
    proc = venv_run(env, KERAS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def classic(make_venv, tmp_path: Path) -> Path:
    return make_venv(tmp_path / "envs" / "tf", CLASSIC)


def _setup(source: str, tmp_path: Path, kit_env: dict[str, str], line: str) -> tuple[dict[str, str], list[str], str]:
    """(environment, extra CLI args, the file the constraint is in) for one way of configuring it."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir(exist_ok=True)
    cfile = tmp_path / "constraints.txt"
    cfile.write_text(f"# the site's caps\n\n{line}\n")
    extra: dict[str, str] = {}
    args: list[str] = []
    if source == "pip.conf":
        conf = tmp_path / "pip.conf"
        conf.write_text(f"[global]\nconstraint = {cfile}\n")
        extra["PIP_CONFIG_FILE"] = str(conf)
    elif source == "PIP_CONSTRAINT":
        extra["PIP_CONSTRAINT"] = str(cfile)
    elif source == "UV_CONSTRAINT":
        extra["UV_CONSTRAINT"] = str(cfile)
    elif source == "uv.toml":
        (work / "uv.toml").write_text(f"constraint-dependencies = [{json.dumps(line)}]\n")
        cfile = work / "uv.toml"
    elif source == "--constraint":
        args = ["--constraint", str(cfile)]
    env = environ(kit_env, home, **extra)
    if source == "uv.toml":
        env.pop("UV_NO_CONFIG")
    return env, args, str(cfile)


SOURCES = ["pip.conf", "PIP_CONSTRAINT", "UV_CONSTRAINT", "uv.toml", "--constraint"]


# --------------------------------------------------------------------------- discovery and the profile


def test_discover_reads_every_kind_of_constraint(tmp_path: Path) -> None:
    (tmp_path / "xdg").mkdir()
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_text("torch<=2.14.1  # the site's cap\n-c b.txt\n")
    b.write_text("numpy<2\n")
    c.write_text("keras<3.10\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nconstraint = {a}\n")
    (tmp_path / "uv.toml").write_text('constraint-dependencies = ["h5py<3.14"]\n')
    env = {"PIP_CONFIG_FILE": str(conf), "XDG_CONFIG_DIRS": str(tmp_path / "xdg"), "UV_CONSTRAINT": str(c)}
    index = indexconf.discover(environ=env, home=tmp_path, cwd=tmp_path)
    assert index.constraints == [str(a), str(c)]  # pip's and uv's add up
    assert index.constraint_lines == ["torch<=2.14.1", "numpy<2", "keras<3.10", "h5py<3.14"]
    where = {x.text: x.where for x in indexconf.constraints_of(index)}
    assert where["torch<=2.14.1"] == f"line 1 of {a}, set by pip config {conf}"
    assert where["numpy<2"].startswith(f"line 1 of {b}")
    assert where["h5py<3.14"] == f"set by uv config {tmp_path / 'uv.toml'}"
    # PIP_CONSTRAINT replaces pip.conf's constraint, as in pip
    env["PIP_CONSTRAINT"] = str(b)
    assert indexconf.discover(environ=env, home=tmp_path, cwd=tmp_path).constraints == [str(b), str(c)]
    # resolving takes them, installing a lock never does
    assert ["--constraint", str(a)] == indexconf.uv_args(index)[-4:-2]
    assert "--constraint" not in indexconf.uv_args(index, for_install=True)


def test_constraint_lines_round_trip_in_the_profile() -> None:
    p = prof.Profile(
        index=prof.Index(
            index_url="https://pypi.org/simple",
            constraints=["/etc/c.txt"],
            constraint_lines=["torch<=2.14.1", "numpy<2"],
        )
    )
    text = prof.dumps(p)
    assert 'constraint_lines = [\n    "torch<=2.14.1",' in text or 'constraint_lines = ["torch<=2.14.1"' in text
    assert prof.loads(text) == p


def test_redacted_hides_credentials_in_constraint_lines() -> None:
    index = prof.Index(constraint_lines=["pkg @ https://alice:s3cret@example.com/pkg-1.0-py3-none-any.whl"])
    assert "s3cret" not in repr(indexconf.redacted(index))


def test_missing_constraint_file_is_refused(classic: Path, tmp_path: Path, kit_env, hashed_index) -> None:
    env = environ(kit_env, tmp_path / "home")
    for value in (str(tmp_path / "nope.txt"), ""):
        res = tfrebuild(
            "plan",
            "--env",
            classic,
            "--offline",
            "--index-url",
            hashed_index,
            "--to",
            "2.18",
            "--constraint",
            value,
            env=env,
            cwd=tmp_path,
        )
        assert res.returncode != 0 and "does not exist" in res.stderr and "Traceback" not in res.stderr, res.stderr


# --------------------------------------------------------------------------- plan and upgrade, offline


@pytest.mark.parametrize("source", SOURCES)
def test_constraint_holds_a_package_and_the_hashed_build_works(
    source, classic: Path, tmp_path: Path, kit_env, hashed_index, venv_run
) -> None:
    env, args, _ = _setup(source, tmp_path, kit_env, "keras<3.10")
    work = tmp_path / "work"
    common = ["--env", classic, "--offline", "--index-url", hashed_index, "--to", "2.18", *args]

    res = tfrebuild("upgrade", *common, "--yes", "--json", env=env, cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    keras = {c["name"]: c["new"] for c in doc["plan"]["changes"]}["keras"]
    assert keras == "3.5.0", doc["plan"]["changes"]  # 3.10.0 / 3.12.0 are newer; the constraint holds it
    assert keras_in(venv_run, classic) == "3.5.0"
    log = Path(doc["log"]).read_text()
    sync = [line for line in log.splitlines() if line.startswith("$ ") and " pip sync " in line]
    assert sync and all("--require-hashes" in line and "--constraint" not in line for line in sync), sync
    gen2 = tomllib.loads((Path(doc["state_dir"]) / "generations" / "2" / "profile.toml").read_text())
    assert "keras<3.10" in gen2["index"]["constraint_lines"], gen2["index"]


def test_without_a_constraint_keras_moves_to_its_newest(classic: Path, tmp_path: Path, kit_env, hashed_index) -> None:
    """The premise of the test above: unconstrained, the same plan takes a newer Keras."""
    env = environ(kit_env, tmp_path / "home")
    res = tfrebuild(
        "plan",
        "--env",
        classic,
        "--offline",
        "--index-url",
        hashed_index,
        "--to",
        "2.18",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    keras = {c["name"]: c["new"] for c in json.loads(res.stdout)["plan"]["changes"]}["keras"]
    assert keras in ("3.10.0", "3.12.0")


@pytest.mark.parametrize("source", SOURCES)
def test_constraint_on_tensorflow_is_named_in_the_refusal(
    source, classic: Path, tmp_path: Path, kit_env, hashed_index
) -> None:
    env, args, cfile = _setup(source, tmp_path, kit_env, "tensorflow-cpu<2.16")
    work = tmp_path / "work"
    res = tfrebuild(
        "plan", "--env", classic, "--offline", "--index-url", hashed_index, "--to", "2.18", *args, env=env, cwd=work
    )
    assert res.returncode == 1, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "The constraint `tensorflow-cpu<2.16`" in err and "rules out tensorflow-cpu 2.18.0" in err, err
    assert cfile in err.replace("\n", ""), err
    assert "Traceback" not in res.stderr
    # --to latest is held by it, and the plan says so
    res = tfrebuild(
        "plan",
        "--env",
        classic,
        "--offline",
        "--index-url",
        hashed_index,
        "--to",
        "latest",
        "--json",
        *args,
        env=env,
        cwd=work,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)["plan"]
    assert doc["tf_new"] == "2.15.1"
    assert any("holds it at 2.15.1" in n and "tensorflow-cpu<2.16" in n for n in doc["notes"]), doc["notes"]
