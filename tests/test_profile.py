"""Tests of the profile format (rebuild/env/profile.py, schema in docs/profile.md).

The round trip must be exact (``loads(dumps(p)) == p``) both for a profile
taken from a real environment and for a hand-made one that sets every field;
bad files must be refused with a :class:`UserError`, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from pathlib import Path

import pytest

from rebuild.env import probe
from rebuild.env import profile as prof
from rebuild.env.locate import locate
from rebuild.errors import UserError
from rebuild.env.snapshot import build_profile
from tests.kit.cli import run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

TF_ENV = ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas"]


def _snapshot_in_process(venv: Path, environ: dict[str, str]) -> prof.Profile:
    loc = locate(venv)
    return build_profile(loc, probe.run(loc.python), environ=dict(environ))


@pytest.fixture
def real_profile(make_venv, kit_env) -> prof.Profile:
    venv = make_venv("tf", TF_ENV, creator="uv")
    return _snapshot_in_process(venv, kit_env)


def full_profile() -> prof.Profile:
    """A profile in which every field of every table differs from its default."""
    return prof.Profile(
        schema=prof.SCHEMA_VERSION,
        tool="tfrebuild 9.9.9",
        created="2026-01-02T03:04:05Z",
        source="/work/scratch/tf215",
        env_kind="virtualenv",
        lock="pylock.toml",
        interpreter=prof.Interpreter(
            version="3.11.7",
            implementation="pypy",
            executable="/work/scratch/tf215/bin/python",
            base_prefix="/root/.pyenv/versions/3.11.7",
            abiflags="t",
            soabi="cpython-311-x86_64-linux-gnu",
            pointer_bits=32,
        ),
        platform=prof.Platform(
            system="Linux",
            machine="x86_64",
            libc="glibc",
            libc_version="2.36",
            sysconfig_platform="linux-x86_64",
            mac_ver="14.2.1",
        ),
        tensorflow=prof.TensorFlow(
            distribution="tensorflow-cpu",
            version="2.15.1",
            keras_version="2.15.0",
            installed_variants=["tensorflow", "tensorflow-cpu"],
        ),
        gpu=prof.Gpu(
            nvidia_smi="/usr/bin/nvidia-smi",
            driver_version="550.54.15",
            cuda_version="12.4",
            gpus=["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"],
            environ={"CUDA_VISIBLE_DEVICES": "0,1", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64"},
        ),
        index=prof.Index(
            index_url="https://user:****@mirror.example/simple",
            extra_index_urls=["https://pypi.org/simple", "file:///opt/pypi/simple"],
            find_links=["/opt/wheels"],
            no_index=True,
            index_strategy="unsafe-best-match",
            constraints=["/etc/constraints.txt"],
            constraint_lines=["numpy<2"],
            settings=[
                prof.IndexSetting(
                    "pip config /root/.config/pip/pip.conf", "index_url", "https://user:****@mirror.example/simple"
                ),
                prof.IndexSetting("environment (UV_*)", "no_index", "true"),
            ],
        ),
        requested=["mylib", "pandas", "tensorflow-cpu", "tool"],
        constraints={"numpy": "<2", "protobuf": ">=3.20,!=4.21.0"},
        smoke=prof.Smoke(
            imports=["mylib", "pandas", "tensorflow"],
            commands=["python -c 'import tensorflow'", "pytest -x tests/smoke"],
            models=[
                prof.SmokeModel(
                    "/work/models/m.h5",
                    inputs="/work/models/x.npz",
                    loader="keras",
                    rtol=1e-3,
                    atol=0.0,
                    imports=["mylib.layers"],
                )
            ],
        ),
        project=prof.Project(manager="uv", root="/work/proj", files=["pyproject.toml", "uv.lock"], drivable=True),
        packages=[
            prof.Package(
                name="mylib",
                version="0.1.dev0",
                requested=True,
                location="env",
                installer="uv",
                source="editable",
                url="file:///work/src/mylib",
            ),
            prof.Package(
                name="numpy",
                version="1.26.4",
                requested=False,
                location="user",
                installer="pip",
                required_by=["pandas", "tensorflow-cpu"],
            ),
            prof.Package(name="pandas", version="2.2.3", requested=True, installer="pip"),
            prof.Package(
                name="tool",
                version="1.0",
                requested=True,
                location="system",
                installer="pip",
                source="vcs",
                url="https://user:****@git.example/tool.git",
                vcs="git",
                commit="0123456789abcdef0123456789abcdef01234567",
                requested_revision="v1.0",
            ),
            prof.Package(
                name="wheelhouse-pkg",
                version="3.0",
                source="path",
                url="file:///opt/wheels/x.whl",
                required_by=["tool"],
            ),
            prof.Package(
                name="zipped",
                version="1.0",
                source="url",
                url="https://example.org/zipped-1.0.zip",
                required_by=["tool"],
            ),
        ],
        warnings=[
            prof.Warning("probe", "", 'a message with "quotes", a\nnewline, a tab\t and unicode: café ✓'),
            prof.Warning(
                "tilde-folder",
                "/work/scratch/tf215/lib/python3.11/site-packages/~ensorflow",
                "leftover of an interrupted uninstall",
            ),
        ],
    )


def _differs_from_default_everywhere(obj, where="profile") -> list[str]:
    """Names of fields (recursively) that still hold their default value."""
    same = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            same.append(f"{where}.{f.name}")
        if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            same.append(f"{where}.{f.name}")
        if dataclasses.is_dataclass(value):
            same += _differs_from_default_everywhere(value, f"{where}.{f.name}")
    return same


# --------------------------------------------------------------------------- round trip


def test_round_trip_of_a_real_snapshot(real_profile: prof.Profile) -> None:
    p = real_profile
    # Make sure the snapshot really holds data before claiming a round trip.
    assert p.tensorflow.distribution == "tensorflow-cpu"
    assert len(p.packages) >= 10
    assert p.package("numpy") is not None and p.package("numpy").required_by
    text = prof.dumps(p)
    assert prof.loads(text) == p
    # And the same through a real file.
    assert prof.dumps(prof.loads(text)) == text


def test_round_trip_of_a_profile_that_sets_every_field(tmp_path: Path) -> None:
    p = full_profile()
    # Guard: the hand-made profile must really exercise every field (schema is the exception).
    assert _differs_from_default_everywhere(p) == ["profile.schema"]
    text = prof.dumps(p)
    back = prof.loads(text)
    assert back == p
    assert back.package("tool").commit == "0123456789abcdef0123456789abcdef01234567"
    assert back.package("mylib").source == "editable"
    assert back.package("numpy").location == "user"
    assert back.warnings[0].message.endswith("café ✓")
    assert back.gpu.environ == {"CUDA_VISIBLE_DEVICES": "0,1", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}
    assert back.index.settings[1] == prof.IndexSetting("environment (UV_*)", "no_index", "true")
    # Through load() from disk too.
    path = tmp_path / "full.toml"
    path.write_text(text, encoding="utf-8")
    assert prof.load(path) == p


def test_default_profile_round_trips_and_keeps_editable_tables() -> None:
    p = prof.Profile()
    text = prof.dumps(p)
    assert prof.loads(text) == p
    data = tomllib.loads(text)
    # The user-editable tables are always written, even when empty.
    assert data["constraints"] == {}
    assert data["smoke"] == {"imports": [], "commands": []}
    assert data["schema"] == prof.SCHEMA_VERSION


def test_fields_at_default_are_left_out() -> None:
    p = full_profile()
    p.packages = [prof.Package(name="numpy", version="1.26.4")]
    data = tomllib.loads(prof.dumps(p))
    assert data["packages"] == [{"name": "numpy", "version": "1.26.4"}]
    assert "implementation" in data["interpreter"]  # pypy is not the default
    p.interpreter.implementation = "cpython"
    assert "implementation" not in tomllib.loads(prof.dumps(p))["interpreter"]


def test_dumps_is_deterministic_and_ordered(real_profile: prof.Profile) -> None:
    p = real_profile
    first, second = prof.dumps(p), prof.dumps(p)
    assert first == second
    assert prof.dumps(prof.loads(first)) == first
    # Lists that identify packages are sorted by the snapshot, so diffs stay small.
    assert p.requested == sorted(p.requested)
    names = [pkg.name for pkg in p.packages]
    assert names == sorted(names) and len(names) == len(set(names))
    for pkg in p.packages:
        assert pkg.required_by == sorted(pkg.required_by)
    # Scalars first, then the tables in field order.
    assert first.startswith("# tfrebuild profile")
    top_keys = [m.group(1) for m in re.finditer(r"^(\w+) = ", first, flags=re.M)]
    assert top_keys[:2] == ["schema", "tool"]
    tables = [m.group(1) for m in re.finditer(r"^\[+([\w.]+)\]+$", first, flags=re.M)]
    order = ["interpreter", "platform", "tensorflow", "gpu", "index", "constraints", "smoke", "packages", "warnings"]
    seen = [t for t in dict.fromkeys(tables) if t in order]
    assert seen == [t for t in order if t in seen]
    assert {"interpreter", "platform", "tensorflow", "constraints", "smoke", "packages"} <= set(seen)


def test_two_snapshots_of_one_env_differ_only_in_created(make_venv, kit_env, tmp_path: Path) -> None:
    venv = make_venv("tf", TF_ENV, creator="uv")
    texts = []
    for name in ("a.toml", "b.toml"):
        proc = run_cli(kit_env, "snapshot", "--env", venv, "-o", name, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        texts.append((tmp_path / name).read_text(encoding="utf-8"))

    def strip_created(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("created = ")]

    assert strip_created(texts[0]) == strip_created(texts[1])
    assert len(strip_created(texts[0])) == len(texts[0].splitlines()) - 1


# --------------------------------------------------------------------------- bad profiles


def _valid_text() -> str:
    return prof.dumps(full_profile())


def _expect_user_error(text: str, *fragments: str) -> UserError:
    with pytest.raises(UserError) as info:
        prof.loads(text, where="bad.toml")
    err = info.value
    assert err.hint, "every UserError needs a hint"
    assert "bad.toml" in err.message
    for fragment in fragments:
        assert fragment in err.message, (fragment, err.message)
    return err


@pytest.mark.parametrize("schema_line", ["schema = 2", "schema = 0", 'schema = "1"'])
def test_unknown_schema_version_is_refused(schema_line: str) -> None:
    text = _valid_text().replace("schema = 1\n", schema_line + "\n", 1)
    assert schema_line in text
    _expect_user_error(text, "schema")


def test_missing_schema_is_refused() -> None:
    text = _valid_text().replace("schema = 1\n", "", 1)
    assert "schema =" not in text
    _expect_user_error(text, "schema")


@pytest.mark.parametrize(
    "text",
    [
        "schema = 1\nrequested = [\n",
        'schema = 1\ntool = "unterminated\n',
        "schema = 1\nschema = 1\n",
        "this is not toml at all",
    ],
)
def test_invalid_toml_is_refused(text: str) -> None:
    _expect_user_error(text, "not valid TOML")


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("pointer_bits = 32", 'pointer_bits = "32"', "interpreter.pointer_bits"),
        ('tool = "tfrebuild 9.9.9"', "tool = 9", "tool"),
        ("no_index = true", 'no_index = "yes"', "index.no_index"),
        ('requested = [\n    "mylib",', "requested = [\n    1,", "requested[0]"),
        ('numpy = "<2"', "numpy = 2", "constraints.numpy"),
        ('commit = "0123456789abcdef0123456789abcdef01234567"', "commit = [1, 2]", "commit"),
    ],
)
def test_wrong_type_for_a_field_is_refused(old: str, new: str, where: str) -> None:
    text = _valid_text()
    assert old in text
    _expect_user_error(text.replace(old, new, 1), "not a valid profile", where)


def test_table_where_a_list_is_expected_is_refused() -> None:
    text = "schema = 1\n[requested]\nx = 1\n"
    _expect_user_error(text, "requested")


def test_package_without_required_name_is_refused() -> None:
    text = 'schema = 1\n[[packages]]\nversion = "1.0"\n'
    _expect_user_error(text, "not a valid profile")


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("pointer_bits = 32", "pointer_bits = true", "pointer_bits"),
        ("schema = 1\n", "schema = true\n", "schema"),
    ],
    ids=["pointer_bits", "schema"],
)
def test_boolean_for_an_int_field_is_refused(old: str, new: str, where: str) -> None:
    text = _valid_text()
    assert old in text
    _expect_user_error(text.replace(old, new, 1), where)


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("schema = 1\n", 'schema = 1\ncolour = "blue"\n', "colour"),
        ("[interpreter]\n", '[interpreter]\nflavour = "vanilla"\n', "flavour"),
        ("[[packages]]\n", '[[packages]]\nhomepage = "https://x"\n', "homepage"),
        ("[smoke]\n", '[smoke]\nshell = "bash"\n', "shell"),
    ],
)
def test_unknown_key_is_refused(old: str, new: str, key: str) -> None:
    text = _valid_text()
    assert old in text
    err = _expect_user_error(text.replace(old, new, 1), "unknown key", key)
    assert "docs/profile.md" in err.hint


def test_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "profile.toml"
    with pytest.raises(UserError) as info:
        prof.load(missing)
    assert str(missing) in info.value.message
    assert "does not exist" in info.value.message
    assert info.value.hint


def test_folder_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        prof.load(tmp_path)
    assert "cannot be read" in info.value.message
    assert info.value.hint


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'schema = 1\ntool = "caf\xe9"\n')
    with pytest.raises(UserError) as info:
        prof.load(path)
    assert str(path) in info.value.message


def test_load_reports_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("schema = 7\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        prof.load(path)
    assert str(path) in info.value.message and "schema" in info.value.message
