"""Tests of the offline test kit itself (tests/kit + tests/conftest.py).

If these fail, every other integration test is suspect: they check that the
fake wheels are valid, that uv resolves the fake universe like the real one,
and that the fake modules break and switch the way the real ones do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import sys
import zipfile
from pathlib import Path

import pytest

from tests.kit import (
    CATALOG,
    MANYLINUX,
    TF_VERSIONS,
    KitCommandError,
    build_wheel,
    find_python,
    record_rows,
    resolve,
    venv_python,
    versions,
    wheel_filename,
)

IMPORT_CHECK = (
    "import tensorflow as tf; assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0; print(tf.__version__)"
)


# --------------------------------------------------------------------------- wheels


def _sha256_b64(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_built_wheel_record_matches_contents(tmp_path: Path) -> None:
    """Every file is in RECORD with its real sha256 and size; RECORD lists itself without a hash."""
    whl = build_wheel(
        tmp_path,
        "My.Fancy_Pkg",
        "1.2.3",
        requires=["numpy>=1.23", 'six ; python_version < "4"'],
        requires_python=">=3.8",
        extras={"gpu": ["nvidia-cudnn-cu12==9.3.0.75"], "fast": ['absl-py ; os_name == "posix"']},
        modules={"fancy/__init__.py": "__version__ = '1.2.3'\n", "fancy_cli.py": "def main():\n    return 0\n"},
        entry_points={"fancy": "fancy_cli:main"},
    )
    assert whl.name == "my_fancy_pkg-1.2.3-py3-none-any.whl"
    assert whl.name == wheel_filename("My.Fancy_Pkg", "1.2.3")

    rows = {path: (digest, size) for path, digest, size in record_rows(whl)}
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        assert set(names) == set(rows)
        for name in names:
            digest, size = rows[name]
            if name.endswith("/RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(name)
            assert digest == _sha256_b64(data), name
            assert int(size) == len(data), name
        meta = zf.read("my_fancy_pkg-1.2.3.dist-info/METADATA").decode()
        top_level = zf.read("my_fancy_pkg-1.2.3.dist-info/top_level.txt").decode().split()
        entry_points = zf.read("my_fancy_pkg-1.2.3.dist-info/entry_points.txt").decode()

    assert "Metadata-Version: 2.1" in meta and "Name: My.Fancy_Pkg" in meta
    assert "Requires-Python: >=3.8" in meta
    assert "Provides-Extra: gpu" in meta
    assert 'Requires-Dist: nvidia-cudnn-cu12==9.3.0.75 ; extra == "gpu"' in meta
    assert 'Requires-Dist: absl-py ; (os_name == "posix") and extra == "fast"' in meta
    assert top_level == ["fancy", "fancy_cli"]
    assert "fancy = fancy_cli:main" in entry_points


def test_wheels_are_byte_for_byte_deterministic(tmp_path: Path) -> None:
    """Rebuilding gives identical bytes, so hashes (and uv's cache) stay valid."""
    release = next(r for r in CATALOG if r.name == "tensorflow" and r.version == "2.18.0")
    first = [p.read_bytes() for p in release.build(tmp_path / "a")]
    second = [p.read_bytes() for p in release.build(tmp_path / "b")]
    assert len(first) == 4 and first == second


def test_catalog_has_the_promised_releases(kit_index: Path) -> None:
    """Both TF variants at every TF version, and each catalog release is a wheel in the index."""
    assert versions("tensorflow") == list(TF_VERSIONS) == versions("tensorflow_cpu")
    assert versions("numpy") == ["1.23.5", "1.24.3", "1.26.4", "2.0.2", "2.1.3", "2.4.0"]
    for release in CATALOG:
        for name in release.filenames:
            assert (kit_index / name).is_file(), release
    assert list(kit_index.glob("pip-*.whl")), "bundled pip wheels are copied in for --seed / pip envs"
    tf215 = next(r for r in CATALOG if r.name == "tensorflow-cpu" and r.version == "2.15.1")
    assert tf215.filenames == [
        f"tensorflow_cpu-2.15.1-cp3{m}-cp3{m}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" for m in (9, 10, 11)
    ]
    (six,) = [r for r in CATALOG if r.name == "six"]
    assert six.filenames == ["six-1.17.0-py3-none-any.whl"]


@pytest.mark.parametrize(
    ("project", "platform_wheel"),
    [
        ("tensorflow", True),
        ("tensorflow-cpu", True),
        ("numpy", True),
        ("scipy", True),
        ("pandas", True),
        ("h5py", True),
        ("ml-dtypes", True),
        ("tensorflow-text", True),
        ("keras", False),
        ("protobuf", False),
        ("six", False),
        ("absl-py", False),
        ("tf-keras", False),
    ],
)
def test_compiled_projects_are_platform_wheels(kit_index: Path, project: str, platform_wheel: bool) -> None:
    """Binary-on-PyPI projects carry cpXY-cpXY-manylinux tags and Root-Is-Purelib: false; pure ones py3-none-any."""
    for release in (r for r in CATALOG if r.name == project):
        for name, tag in zip(release.filenames, release.tags):
            with zipfile.ZipFile(kit_index / name) as zf:
                wheel = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
            py, abi, plat = tag.split("-")
            if platform_wheel:
                assert py.startswith("cp3") and abi == py and plat == MANYLINUX, name
                assert "Root-Is-Purelib: false" in wheel, name
                assert f"Tag: {py}-{abi}-manylinux_2_17_x86_64\n" in wheel, name
                assert f"Tag: {py}-{abi}-manylinux2014_x86_64\n" in wheel, name
            else:
                assert tag == "py3-none-any", name
                assert "Root-Is-Purelib: true" in wheel and "Tag: py3-none-any\n" in wheel, name


def _glibc() -> tuple[int, int] | None:
    lib, version = platform.libc_ver()
    if lib != "glibc":
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and (_glibc() or (0, 0)) >= (2, 17)),
    reason="needs glibc >= 2.17 on x86_64 Linux",
)
def test_uv_selects_wheels_by_platform_tags(make_venv, venv_run, tmp_path: Path) -> None:
    """uv takes the manylinux_2_17 x86_64 wheel for this interpreter and refuses the ones this machine cannot load."""
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    other = "cp38" if here != "cp38" else "cp39"
    links = tmp_path / "links"
    unusable = {  # version: (tag, what uv finds wrong with it)
        "2.0": (f"{here}-{here}-manylinux_2_99_x86_64", "platform"),  # a glibc newer than this machine's
        "3.0": (f"{here}-{here}-musllinux_1_1_x86_64", "platform"),  # musl, not glibc
        "4.0": (f"{here}-{here}-manylinux_2_17_aarch64.manylinux2014_aarch64", "platform"),  # another CPU
        "5.0": (f"{other}-{other}-{MANYLINUX}", "Python ABI"),  # another CPython
    }
    build_wheel(links, "tagprobe", "1.0", tag=f"{here}-{here}-{MANYLINUX}")
    for version, (tag, _) in unusable.items():
        build_wheel(links, "tagprobe", version, tag=tag)

    venv = make_venv("tags", ["tagprobe"], extra_find_links=[links])
    assert venv_run(venv, "import tagprobe; print(tagprobe.__version__)").stdout.strip() == "1.0"
    for version, (tag, kind) in unusable.items():
        with pytest.raises(KitCommandError) as refused:
            make_venv(f"tags-{version}", [f"tagprobe=={version}"], extra_find_links=[links])
        assert f"tagprobe=={version} has no wheels with a matching {kind} tag" in refused.value.proc.stderr, tag


def test_kit_env_is_scrubbed_and_offline(kit_env: dict[str, str], kit_index: Path, uv_cache: Path) -> None:
    """No inherited uv/pip configuration leaks in; offline switches are set."""
    assert "VIRTUAL_ENV" not in kit_env and "PYTHONPATH" not in kit_env
    assert kit_env["UV_CACHE_DIR"] == str(uv_cache)
    assert kit_env["UV_FIND_LINKS"] == str(kit_index)
    assert kit_env["UV_OFFLINE"] == "1" and kit_env["UV_NO_CONFIG"] == "1"
    assert kit_env["UV_PYTHON_DOWNLOADS"] == "never"
    assert kit_env["PIP_CONFIG_FILE"] == os.devnull
    allowed_pip = {"PIP_CONFIG_FILE", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_INPUT", "PIP_FIND_LINKS", "PIP_NO_INDEX"}
    assert {k for k in kit_env if k.startswith("PIP_")} <= allowed_pip
    assert kit_env["PIP_FIND_LINKS"] == str(kit_index)


# --------------------------------------------------------------------------- resolution (no venv)


def test_resolution_follows_the_real_dependency_shape(kit_index: Path, kit_env: dict[str, str]) -> None:
    """uv meets the same caps and extras it meets on PyPI."""
    old = resolve(["tensorflow-cpu==2.15.1"], find_links=kit_index, python_version="3.11", env=kit_env)
    assert old["keras"] == "2.15.0" and old["numpy"] == "1.26.4" and old["protobuf"] == "4.25.3"
    assert old["tensorflow-estimator"] == "2.15.0"

    new = resolve(["tensorflow-cpu"], find_links=kit_index, python_version="3.11", env=kit_env)
    assert new["tensorflow-cpu"] == "2.21.0" and new["numpy"] == "2.4.0"
    assert "tensorboard" not in new and new["h5py"] == "3.14.0"

    cuda = resolve(["tensorflow[and-cuda]==2.18.0"], find_links=kit_index, python_version="3.11", env=kit_env)
    assert cuda["nvidia-cudnn-cu12"] == "9.3.0.75" and cuda["numpy"] == "2.0.2"

    # Real traps: tf-keras and tensorflow-text[tensorflow_cpu] drag in `tensorflow` next to `tensorflow-cpu`.
    both = resolve(
        ["tensorflow-cpu==2.15.1", "tensorflow-text[tensorflow_cpu]==2.15.0"],
        find_links=kit_index,
        python_version="3.11",
        env=kit_env,
    )
    assert both["tensorflow"] == both["tensorflow-cpu"] == "2.15.1"


def test_resolution_conflicts_are_reported(kit_index: Path, kit_env: dict[str, str]) -> None:
    """scipy 1.11.4 caps numpy below 1.28; TF 2.15.1 does not exist for Python 3.12."""
    with pytest.raises(KitCommandError) as numpy_cap:
        resolve(["scipy==1.11.4", "numpy>=2"], find_links=kit_index, python_version="3.11", env=kit_env)
    assert "numpy" in numpy_cap.value.proc.stderr
    with pytest.raises(KitCommandError) as too_new:
        resolve(["tensorflow-cpu==2.15.1"], find_links=kit_index, python_version="3.12", env=kit_env)
    assert "Python" in too_new.value.proc.stderr


# --------------------------------------------------------------------------- real venvs


def test_uv_venv_tf215_with_scipy_and_pandas(make_venv, venv_run) -> None:
    """The classic TF 2.15 stack installs and imports; tf.keras is Keras 2."""
    venv = make_venv("tf215", ["tensorflow-cpu==2.15.1", "scipy==1.11.4", "pandas"])
    proc = venv_run(
        venv,
        "import scipy, pandas, numpy, tensorflow as tf; "
        "print(tf.__version__, numpy.__version__, scipy.__version__, tf.keras.__version__)",
    )
    assert proc.returncode == 0, proc.stderr
    tf_version, numpy_version, scipy_version, keras_version = proc.stdout.split()
    assert (tf_version, scipy_version, keras_version) == ("2.15.1", "1.11.4", "2.15.0")
    assert numpy_version.startswith("1.")
    assert venv_run(venv, IMPORT_CHECK).stdout.strip() == "2.15.1"
    lazy = venv_run(venv, "import sys, tensorflow; print('numpy' in sys.modules, 'keras' in sys.modules)")
    assert lazy.stdout.split() == ["False", "False"], "import tensorflow must not import its dependencies"


def test_uv_seeded_venv_works_offline(make_venv, venv_run) -> None:
    """seed=True (`uv venv --seed`) finds pip/setuptools/wheel in the kit index."""
    venv = make_venv("seeded", seed=True)
    assert venv_run(venv, "import pip").returncode == 0


def test_forcing_numpy2_under_old_scipy_breaks_import(make_venv, venv_run, uv) -> None:
    """The breakage model: `pip install -U numpy` style (--no-deps) kills `import scipy`."""
    venv = make_venv("broken", ["scipy==1.11.4"])
    assert venv_run(venv, "import scipy").returncode == 0
    uv("pip", "install", "-q", "--python", venv_python(venv), "--no-deps", "numpy==2.1.3")
    proc = venv_run(venv, "import scipy")
    assert proc.returncode != 0
    assert "numpy.core.multiarray failed to import" in proc.stderr
    # scipy 1.14.1 was built against NumPy 2 and survives.
    uv("pip", "install", "-q", "--python", venv_python(venv), "--no-deps", "scipy==1.14.1")
    assert venv_run(venv, "import scipy").returncode == 0


def test_tf_keras_switch_for_tf216(make_venv, venv_run) -> None:
    """TF >= 2.16: tf.keras is Keras 3 unless TF_USE_LEGACY_KERAS=1/true selects tf_keras."""
    venv = make_venv("tf216", ["tensorflow==2.16.1", "tf-keras"])
    # As real TF: tf.keras is resolved lazily; its classes tell which Keras it is (tf_keras's API module
    # has no __version__).
    code = (
        "import importlib, tensorflow as tf; k = tf.keras.layers.Dense.__module__.split('.')[0]; "
        "print(k, importlib.import_module(k).__version__, getattr(tf.keras, '__version__', '?'))"
    )
    assert venv_run(venv, code, TF_USE_LEGACY_KERAS=None).stdout.split() == ["keras", "3.12.0", "3.12.0"]
    assert venv_run(venv, code, TF_USE_LEGACY_KERAS="1").stdout.split() == ["tf_keras", "2.16.0", "?"]
    assert venv_run(venv, code, TF_USE_LEGACY_KERAS="true").stdout.split() == ["tf_keras", "2.16.0", "?"]
    assert venv_run(venv, code, TF_USE_LEGACY_KERAS="0").stdout.split() == ["keras", "3.12.0", "3.12.0"]


def test_fake_gpus_and_tensorflow_text_abi(make_venv, venv_run, uv) -> None:
    """FAKE_TF_GPUS=N gives N GPUs; tensorflow-text refuses a TF of another minor version."""
    venv = make_venv("gpu", ["tensorflow==2.15.1", "tensorflow-text==2.15.0"])
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    assert venv_run(venv, code, FAKE_TF_GPUS=None).stdout.strip() == "0"
    assert venv_run(venv, code, FAKE_TF_GPUS="2").stdout.strip() == "2"
    cpus = venv_run(venv, "import tensorflow as tf; print(len(tf.config.list_physical_devices('CPU')))")
    assert cpus.stdout.strip() == "1"
    assert venv_run(venv, "import tensorflow_text").returncode == 0

    uv("pip", "install", "-q", "--python", venv_python(venv), "--no-deps", "tensorflow==2.16.1")
    proc = venv_run(venv, "import tensorflow_text")
    assert proc.returncode != 0 and "undefined symbol" in proc.stderr


def test_pip_made_venv(make_venv, venv_run) -> None:
    """creator="venv": pip lives inside, packages are pip-installed with absolute shebangs."""
    venv = make_venv("pipmade", ["tensorflow-cpu==2.15.1"], creator="venv")
    assert venv_run(venv, "import pip").returncode == 0
    dist_info = next((venv / "lib").glob("python3.*/site-packages/tensorflow_cpu-2.15.1.dist-info"))
    assert (dist_info / "INSTALLER").read_text().strip() == "pip"
    shebang = (venv / "bin" / "saved_model_cli").read_text().splitlines()[0]
    assert shebang == f"#!{venv / 'bin' / 'python'}"
    assert venv_run(venv, IMPORT_CHECK).stdout.strip() == "2.15.1"


def test_virtualenv_made_venv(make_venv, venv_run) -> None:
    """creator="virtualenv" works (skipped when virtualenv is not importable)."""
    venv = make_venv("venvvirt", ["numpy==1.26.4"], creator="virtualenv")
    assert (venv / "pyvenv.cfg").read_text().count("virtualenv") >= 1
    assert venv_run(venv, "import numpy, pip; print(numpy.__version__)").stdout.strip() == "1.26.4"


@pytest.mark.parametrize(
    ("minor", "expected_tf", "expected_numpy"),
    [("3.9", "2.20.0", "2.0.2"), ("3.12", "2.21.0", "2.4.0")],
)
def test_other_python_versions(make_venv, venv_run, require_python, minor, expected_tf, expected_numpy) -> None:
    """Requires-Python steers the resolution: 3.9 tops out at TF 2.20 / numpy 2.0."""
    python = require_python(minor)
    venv = make_venv(f"py{minor}", ["tensorflow-cpu"], python=python)
    proc = venv_run(
        venv,
        "import sys, numpy, tensorflow as tf; print('%d.%d' % sys.version_info[:2], tf.__version__, numpy.__version__)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [minor, expected_tf, expected_numpy]


def test_find_python_verifies_candidates() -> None:
    """Unknown versions give None rather than a pyenv shim that exits 127."""
    assert find_python("3.99") is None
    here = find_python(f"3.{os.sys.version_info[1]}")
    assert here is not None and here.exists()
