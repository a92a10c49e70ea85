"""Tests of ``rebuild.doctor``: one fixture env per finding, made from the kit plus hand-made damage.

Every test calls the core function (``commands.doctor.run`` / ``doctor.preflight``)
directly, offline against the kit's wheels, with an explicit ``environ`` (so
PATH, PYTHONPATH, LD_LIBRARY_PATH, the user site ... are the test's own; no
monkeypatching). The last test builds a real env from PyPI (marked
``network`` + ``slow``; skipped when PyPI is unreachable).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rebuild import doctor
from rebuild.commands import doctor as doctoring
from rebuild.env import probe
from rebuild.env.locate import locate
from rebuild.errors import UserError
from rebuild.env.profile import Index
from tests.kit import build_wheel, uv_bin, venv_python
from tests.kit.nvidia import fake_nvidia_smi

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

MINOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
BASE = ["tensorflow-cpu==2.15.1", "scipy==1.11.4"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def clean_environ(kit_env, tmp_path) -> dict[str, str]:
    """kit_env without index variables, with a PATH holding only a test-owned (empty) bin folder."""
    env = {k: v for k, v in kit_env.items() if not k.startswith(("PIP_", "UV_"))}
    for key in (
        "PYTHONPATH",
        "PYTHONHOME",
        "LD_LIBRARY_PATH",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDNN_PATH",
        "PYTHONNOUSERSITE",
        "PYTHONUSERBASE",
    ):
        env.pop(key, None)
    bin_dir = tmp_path / "path-bin"
    bin_dir.mkdir(exist_ok=True)
    env["PATH"] = str(bin_dir)
    env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def diagnose(kit_index, clean_environ):
    """``diagnose(venv, to=None, extra_links=(), **environ_overrides)`` -> DoctorResult (offline, kit index)."""

    def _diagnose(venv, to=None, *, extra_links=(), find_links=None, **overrides):
        environ = dict(clean_environ)
        for key, value in overrides.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = str(value)
        links = [kit_index, *extra_links] if find_links is None else find_links
        return doctoring.run(venv, to=to, find_links=links, offline=True, environ=environ)

    return _diagnose


def ids(result) -> list[str]:
    return [f.id for f in result.findings]


def one(result, finding_id: str) -> doctor.Finding:
    found = [f for f in result.findings if f.id == finding_id]
    assert found, f"no {finding_id} among {[(f.id, f.title) for f in result.findings]}"
    return found[0]


def text(finding: doctor.Finding) -> str:
    return "\n".join([finding.title, *finding.evidence, finding.fix])


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def errors(result) -> list[tuple[str, str]]:
    return [(f.id, f.title) for f in result.findings if f.severity == "error"]


# --------------------------------------------------------------------------- clean env, the common case


def test_clean_env_has_no_errors_or_warnings(make_venv, diagnose):
    venv = make_venv("clean", BASE)
    result = diagnose(venv)
    assert result.findings == [], [(f.id, f.title, f.evidence) for f in result.findings]
    assert result.exit_code == 0
    assert (result.tf_distribution, result.tf_version) == ("tensorflow-cpu", "2.15.1")
    assert result.env_kind == "uv" and result.target == "" and result.target_version == ""


def test_common_case_numpy_capped_by_scipy_is_compatible_via_numpy_1_26(make_venv, diagnose):
    """tensorflow-cpu 2.15 + scipy 1.11.4 (numpy<1.28) → 2.21.0 (numpy>=1.26): compatible through numpy 1.26.4."""
    venv = make_venv("common", BASE)
    result = diagnose(venv, to="2.21.0")
    assert result.target_version == "2.21.0"
    assert errors(result) == []
    assert result.exit_code == 0
    f = one(result, "capped-dependency")
    assert f.severity == "info"
    assert "via numpy 1.26.4" in f.title and "scipy 1.11.4" in f.title
    assert "tensorflow-cpu 2.21.0 requires numpy>=1.26.0" in f.evidence
    assert "scipy 1.11.4 requires numpy<1.28.0,>=1.21.6" in f.evidence
    assert f.fixed_by_rebuild and not f.affects_new_env


def test_latest_means_the_newest_release_on_the_index(make_venv, diagnose):
    venv = make_venv("latest", BASE)
    result = diagnose(venv, to="latest")
    assert result.target_version == "2.21.0" and result.target == "latest"
    assert errors(result) == []
    assert diagnose(venv, to="2.18").target_version == "2.18.0"


# --------------------------------------------------------------------------- 2. conflicts with the target


def test_target_blocked_by_companion_naming_another_variant(make_venv, diagnose):
    venv = make_venv("text", BASE + ["tensorflow-text==2.15.0"])
    result = diagnose(venv, to="2.21.0")
    f = one(result, "target-blocked")
    assert f.severity == "error"
    assert f.title == "tensorflow-text 2.15.0 does not allow tensorflow-cpu 2.21.0"
    assert "tensorflow-text 2.15.0 requires tensorflow<2.16,>=2.15.0" in f.evidence
    assert "tensorflow-text 2.21.1 accepts it (tensorflow<2.22,>=2.21.0)" in f.evidence
    assert any("names `tensorflow`, not `tensorflow-cpu`" in e for e in f.evidence)
    assert "tensorflow==2.21.0" in f.fix and "tensorflow-text==2.21.1" in f.fix
    assert not f.fixed_by_rebuild and f.affects_new_env  # the resolver would keep both variants
    assert result.exit_code == 1
    # tensorflow-text pulled `tensorflow` in next to tensorflow-cpu
    v = one(result, "tensorflow-variants")
    assert v.severity == "error" and "tensorflow and tensorflow-cpu" in v.title
    assert any("tensorflow-text 2.15.0 requires tensorflow<2.16,>=2.15.0" in e for e in v.evidence)
    assert "use `tensorflow` alone" in v.fix and v.affects_new_env


def test_target_blocked_same_variant_is_fixed_by_rebuild(make_venv, diagnose):
    venv = make_venv("text-tf", ["tensorflow==2.15.1", "tensorflow-text==2.15.0"])
    result = diagnose(venv, to="2.21.0")
    f = one(result, "target-blocked")
    assert f.title == "tensorflow-text 2.15.0 does not allow tensorflow 2.21.0"
    assert "tfrebuild upgrade" in f.fix and "tensorflow-text 2.21.1" in f.fix
    assert f.fixed_by_rebuild and not f.affects_new_env
    assert "tensorflow-variants" not in ids(result)


def test_target_blocked_without_any_accepting_release(make_venv, diagnose):
    venv = make_venv("text-none", ["tensorflow==2.15.1", "tensorflow-text==2.15.0"])
    result = diagnose(venv, to="2.20.0")  # the kit has tensorflow-text for 2.15, 2.18 and 2.21 only
    f = one(result, "target-blocked")
    # every release of tensorflow-text is searched: 2.18.1 goes with tensorflow 2.18.0 (never the installed 2.15.1)
    assert any(
        "no release of tensorflow-text on the index accepts 2.20.0" in e
        and "the newest tensorflow a release of it accepts is 2.18.0: tensorflow-text 2.18.1" in e
        for e in f.evidence
    ), f.evidence
    assert "--to 2.18.0" in f.fix and "takes tensorflow-text 2.18.1" in f.fix and not f.fixed_by_rebuild
    assert "2.15.1" not in f.fix


def test_dependency_conflict_through_numpy(make_venv, diagnose, tmp_path):
    extra = tmp_path / "extra-wheels"
    build_wheel(extra, "capnum", "1.0", requires=["numpy<1.25"], requires_python=">=3.8")
    venv = make_venv("capnum", ["tensorflow-cpu==2.15.1", "capnum==1.0"], extra_find_links=[extra])
    result = diagnose(venv, to="2.21.0", extra_links=[extra])
    f = one(result, "dependency-conflict")
    assert f.severity == "error"
    assert "capnum 1.0" in f.title and "numpy" in f.title
    assert "capnum 1.0 requires numpy<1.25" in f.evidence
    assert "tensorflow-cpu 2.21.0 requires numpy>=1.26.0" in f.evidence
    assert "installed: numpy 1.24.3" in f.evidence
    assert "--strategy eager" in f.fix and f.affects_new_env
    # the same env is fine for 2.15.1 itself
    assert "dependency-conflict" not in ids(diagnose(venv, to="2.15.1", extra_links=[extra]))


def test_dependency_moves_when_installed_version_is_too_old(make_venv, diagnose):
    venv = make_venv("moves", BASE + ["numpy==1.24.3"])
    result = diagnose(venv, to="2.21.0")
    f = one(result, "dependency-moves")
    assert f.severity == "info"
    assert f.title.startswith("numpy must move 1.24.3 → 1.26.4 for tensorflow-cpu 2.21.0")
    assert "scipy 1.11.4 requires numpy<1.28.0,>=1.21.6" in f.evidence
    assert f.fixed_by_rebuild
    assert errors(result) == []


def test_broken_requirement_is_reported_like_pip_check(make_venv, diagnose):
    venv = make_venv("broken", ["scipy==1.11.4", "numpy==2.0.2"], install_args=["--no-deps"])
    result = diagnose(venv)
    f = one(result, "broken-requirement")
    assert f.severity == "error"
    assert f.title == "scipy 1.11.4 requires numpy<1.28.0,>=1.21.6, but numpy 2.0.2 is installed"
    assert "scipy 1.11.4 requires numpy<1.28.0,>=1.21.6" in f.evidence
    assert "'numpy<1.28.0,>=1.21.6'" in f.fix
    assert result.exit_code == 1


def test_requirement_on_another_tensorflow_variant_is_info(make_venv, diagnose):
    venv = make_venv(
        "tfkeras", ["tensorflow-cpu==2.15.1", "tf-keras==2.15.1", "numpy==1.26.4"], install_args=["--no-deps"]
    )
    result = diagnose(venv)
    f = one(result, "tf-variant-requirement")
    assert f.severity == "info"
    assert (
        "tf-keras 2.15.1 requires tensorflow<2.16,>=2.15; tensorflow-cpu 2.15.1 provides the same `tensorflow` "
        "package" in f.evidence
    )
    assert not any(f.id == "missing-requirement" and "tf-keras" in f.title for f in result.findings)


def test_missing_requirement(make_venv, diagnose):
    venv = make_venv("missing", ["scipy==1.11.4"], install_args=["--no-deps"])
    result = diagnose(venv)
    f = one(result, "missing-requirement")
    assert f.severity == "error"
    assert f.title == "scipy 1.11.4 requires numpy, which is not installed"
    assert f.evidence == ["scipy 1.11.4 requires numpy<1.28.0,>=1.21.6"]


# --------------------------------------------------------------------------- 3. interpreter


def test_python_unsupported_names_supported_versions_and_newest_release(make_venv, diagnose):
    venv = make_venv("py39", ["tensorflow-cpu==2.15.1"], python="3.9")
    result = diagnose(venv, to="2.21.0")
    f = one(result, "python-unsupported")
    assert f.severity == "error"
    assert f.title.startswith("tensorflow-cpu 2.21.0 has no wheel for Python 3.9")
    assert any(e.startswith("tensorflow-cpu 2.21.0 has wheels for Python 3.10, 3.11, 3.12, 3.13") for e in f.evidence)
    assert "newest tensorflow-cpu for Python 3.9 here: 2.20.0" in f.evidence
    qualify = next(e for e in f.evidence if e.startswith("interpreters here that qualify"))
    assert f"{sys.version_info[0]}.{sys.version_info[1]}." in qualify  # the interpreter running the tests
    assert "--python 3.1" in f.fix and "--to 2.20.0" in f.fix
    assert f.affects_new_env and not f.fixed_by_rebuild


def test_platform_unsupported(make_venv, diagnose, tmp_path):
    extra = tmp_path / "mac-only"
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}-cp{sys.version_info[0]}{sys.version_info[1]}-macosx_11_0_arm64"
    build_wheel(extra, "tensorflow-cpu", "2.99.0", tag=tag)
    venv = make_venv("plat", BASE)
    result = diagnose(venv, to="2.99.0", extra_links=[extra])
    f = one(result, "platform-unsupported")
    assert f.severity == "error"
    assert "no wheel for this platform" in f.title
    assert "newest tensorflow-cpu for Python " + MINOR + " here: 2.21.0" in f.evidence


# --------------------------------------------------------------------------- 4. environment boundaries


def test_not_a_venv(python_versions, diagnose):
    other = [p for m, p in python_versions.items() if m != MINOR and m not in ("3.8",)]
    if not other:
        pytest.skip("needs a second plain interpreter")
    result = diagnose(other[0])  # a bare interpreter: its global site-packages
    f = one(result, "not-a-venv")
    assert f.severity == "warning"
    assert result.env_kind == "system"
    assert any(e.startswith("site-packages: ") for e in f.evidence)


def _enable_system_site(venv: Path) -> None:
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(
        cfg.read_text().replace("include-system-site-packages = false", "include-system-site-packages = true")
    )


def test_system_site_packages(make_venv, diagnose):
    venv = make_venv("sys", BASE)
    _enable_system_site(venv)
    result = diagnose(venv)
    f = one(result, "system-site-packages")
    assert f.severity == "warning" and f.dropped_by_rebuild and not f.fixed_by_rebuild  # issue 23: named, not "fixed"
    assert f"{venv / 'pyvenv.cfg'}: include-system-site-packages = true" in f.evidence


def test_user_site_shadows_the_env(make_venv, diagnose, kit_index, kit_env, tmp_path):
    venv = make_venv("user", BASE)
    _enable_system_site(venv)  # a venv only sees the user site together with the system site
    base = tmp_path / "userbase"
    user_site = base / "lib" / f"python{MINOR}" / "site-packages"
    subprocess.run(
        [
            uv_bin(),
            "pip",
            "install",
            "--no-config",
            "--no-index",
            "--find-links",
            str(kit_index),
            "--target",
            str(user_site),
            "--no-deps",
            "-q",
            "numpy==2.0.2",
            "six==1.17.0",
        ],
        env=kit_env,
        check=True,
        capture_output=True,
    )
    result = diagnose(venv, PYTHONUSERBASE=base)
    f = one(result, "user-site-shadow")
    assert f.severity == "error"
    assert any(e.startswith("numpy 2.0.2 in ") and "is imported instead of 1.26.4" in e for e in f.evidence)
    assert "numpy" in f.fix and f.fixed_by_rebuild
    v = one(result, "user-site-visible")
    assert v.severity == "warning" and any(e.startswith("six 1.17.0") for e in v.evidence)
    # the user site as seen by `import`: scipy now meets numpy 2.0.2 → inconsistent today
    assert "broken-requirement" in ids(result)
    # with PYTHONNOUSERSITE the user site is off: no user-site finding
    quiet = diagnose(venv, PYTHONUSERBASE=base, PYTHONNOUSERSITE="1")
    assert not {"user-site-shadow", "user-site-visible"} & set(ids(quiet))


def test_pythonpath_shadow_and_set(make_venv, diagnose, tmp_path):
    venv = make_venv("pp", BASE)
    shadow = tmp_path / "pp"
    (shadow / "numpy").mkdir(parents=True)
    (shadow / "numpy" / "__init__.py").write_text("__version__ = '0.0'\n")
    f = one(diagnose(venv, PYTHONPATH=shadow), "pythonpath-shadow")
    assert f.severity == "error" and f.affects_new_env
    assert f"PYTHONPATH={shadow}" in f.evidence
    assert any(e.startswith(f"{shadow / 'numpy'} shadows numpy of numpy 1.26.4") for e in f.evidence)
    empty = tmp_path / "empty"
    empty.mkdir()
    g = one(diagnose(venv, PYTHONPATH=empty), "pythonpath-set")
    assert g.severity == "warning"


def test_pythonhome_set(make_venv, diagnose, tmp_path):
    venv = make_venv("ph", BASE)
    result = diagnose(venv, PYTHONHOME=tmp_path / "elsewhere")
    f = one(result, "pythonhome-set")
    assert f.severity == "error" and f"PYTHONHOME={tmp_path / 'elsewhere'}" in f.evidence


def test_pip_on_path_belongs_to_another_interpreter(make_venv, diagnose, clean_environ):
    venv = make_venv("pip", BASE)
    fake = Path(clean_environ["PATH"]) / "pip"
    fake.write_text("#!/bin/sh\necho 'pip 24.0 from /usr/lib/python3/dist-packages/pip (python 3.12)'\n")
    fake.chmod(0o755)
    f = one(diagnose(venv, VIRTUAL_ENV=venv), "pip-other-interpreter")  # activated: a bare `pip` is meant for it
    assert f.severity == "warning"
    assert f"{fake} installs into /usr/lib/python3/dist-packages (Python 3.12)" in f.evidence
    assert f"{venv_python(venv)} -m pip install" in f.fix


@pytest.mark.slow
def test_the_envs_own_pip_is_fine(make_venv, diagnose):
    venv = make_venv("ownpip", ["six"], creator="venv")
    result = diagnose(venv, PATH=f"{venv / 'bin'}")
    assert "pip-other-interpreter" not in ids(result)


# --------------------------------------------------------------------------- 5. system CUDA


def _fake_cuda(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"\x7fELF fake")
    return folder


def test_cuda_libs_mismatch_for_installed_tensorflow(make_venv, diagnose, tmp_path):
    venv = make_venv("gpu", ["tensorflow==2.15.1"])
    lib = _fake_cuda(
        tmp_path / "cuda-11.8" / "lib64",
        "libcudart.so.11.0",
        "libcudart.so.11.8.89",
        "libcudnn.so.8",
        "libcudnn.so.8.6.0",
    )
    result = diagnose(venv, LD_LIBRARY_PATH=lib)
    f = one(result, "cuda-libs-mismatch")
    assert f.severity == "error" and not f.affects_new_env
    assert "tensorflow 2.15.1 (installed)" in f.title
    joined = "\n".join(f.evidence)
    assert f"{lib / 'libcudart.so.11.8.89'} (cudart 11.8.89, via LD_LIBRARY_PATH)" in joined
    assert "libcudart.so.12" in joined  # what TF looks for instead
    assert f"{lib / 'libcudnn.so.8.6.0'} (cudnn 8.6.0, via LD_LIBRARY_PATH) is older" in joined
    assert "cuDNN 8.9" in joined


def test_cuda_libs_mismatch_for_the_target(make_venv, diagnose, tmp_path):
    venv = make_venv("gpu-target", ["tensorflow==2.15.1"])
    lib = _fake_cuda(tmp_path / "cuda" / "lib64", "libcudart.so.12.2.140", "libcudnn.so.8.9.7")
    result = diagnose(venv, to="2.18.0", LD_LIBRARY_PATH=lib)
    found = [f for f in result.findings if f.id == "cuda-libs-mismatch"]
    assert [f.affects_new_env for f in found] == [True]  # fine for 2.15.1, not for 2.18.0 (cuDNN 9.3)
    assert "tensorflow 2.18.0 (target)" in found[0].title
    assert any("cuDNN 9.3" in e for e in found[0].evidence)


def test_and_cuda_wheels_shadowed_by_system_libraries(make_venv, diagnose, tmp_path):
    venv = make_venv("and-cuda", ["tensorflow[and-cuda]==2.15.1"])
    lib = _fake_cuda(tmp_path / "cuda" / "lib64", "libcudart.so.12.2.140", "libcudnn.so.8.9.4")
    result = diagnose(venv, LD_LIBRARY_PATH=lib)
    f = one(result, "cuda-libs-shadow-pip")
    assert f.severity == "warning"
    assert any("is loaded before the pip-installed nvidia-cuda-runtime-cu12 12.2.140" in e for e in f.evidence)
    assert any("nvidia-cudnn-cu12 8.9.4.25" in e for e in f.evidence)
    assert "cuda-libs-mismatch" not in ids(result)


def test_cuda_home_of_another_version(make_venv, diagnose, tmp_path):
    venv = make_venv("cuda-home", ["tensorflow==2.15.1"])
    home = tmp_path / "cuda-11.8"
    _fake_cuda(home / "lib64", "libcudart.so.11.8.89")
    f = one(diagnose(venv, CUDA_HOME=home), "cuda-home-mismatch")
    assert f.severity == "warning" and "CUDA 11.8" in f.title and "CUDA 12.2" in f.title


def test_driver_too_old(make_venv, diagnose, clean_environ):
    venv = make_venv("driver", ["tensorflow==2.15.1"])
    smi = fake_nvidia_smi(Path(clean_environ["PATH"]), "geforce-470")
    result = diagnose(venv, to="2.21.0")
    found = {f.title: f for f in result.findings if f.id == "driver-too-old"}
    assert set(found) == {
        "the NVIDIA driver 470.82.01 is too old for tensorflow 2.15.1 (installed)",
        "the NVIDIA driver 470.82.01 is too old for tensorflow 2.21.0 (target)",
    }
    target = found["the NVIDIA driver 470.82.01 is too old for tensorflow 2.21.0 (target)"]
    assert target.severity == "error" and target.affects_new_env
    assert f"{smi}: driver 470.82.01, CUDA 11.4" in target.evidence
    assert "tensorflow 2.21.0 (target) was built with CUDA 12.5, which needs driver >= 525.60.13" in target.evidence


def test_new_enough_driver_and_cpu_variant_are_quiet(make_venv, diagnose, clean_environ, tmp_path):
    fake_nvidia_smi(Path(clean_environ["PATH"]), "h100-590")
    gpu = make_venv("driver-ok", ["tensorflow==2.15.1"])
    assert diagnose(gpu).findings == []
    lib = _fake_cuda(tmp_path / "old" / "lib64", "libcudart.so.11.8.89", "libcudnn.so.8.6.0")
    cpu = make_venv("cpu", BASE)  # tensorflow-cpu never loads CUDA
    assert diagnose(cpu, LD_LIBRARY_PATH=lib).findings == []


# --------------------------------------------------------------------------- 6. installation debris


def test_tilde_folder(make_venv, diagnose):
    venv = make_venv("tilde", BASE)
    debris = site_packages(venv) / "~ensorflow"
    debris.mkdir()
    f = one(diagnose(venv), "tilde-folder")
    assert f.severity == "warning" and f.fixed_by_rebuild
    assert f"{debris} (env site-packages)" in f.evidence
    assert any("Ignoring invalid distribution ~ensorflow" in e for e in f.evidence)
    assert f"rm -rf {shlex.quote(str(debris))}" in f.fix


def test_duplicate_dist_info(make_venv, diagnose):
    venv = make_venv("dup", BASE)
    site = site_packages(venv)
    old = site / "numpy-1.24.3.dist-info"
    shutil.copytree(site / "numpy-1.26.4.dist-info", old)
    meta = old / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 1.26.4", "Version: 1.24.3"))
    result = diagnose(venv)
    f = one(result, "duplicate-dist-info")
    assert f.severity == "error"
    assert "numpy is recorded twice" in f.title
    assert str(old) in f.evidence and str(site / "numpy-1.26.4.dist-info") in f.evidence


def test_record_missing_files(make_venv, diagnose):
    venv = make_venv("record", BASE)
    (site_packages(venv) / "scipy" / "__init__.py").unlink()
    f = one(diagnose(venv), "record-missing-files")
    assert f.severity == "error"
    assert f.title == "scipy 1.11.4: 1 installed file(s) are missing"
    assert "missing: scipy/__init__.py" in f.evidence
    assert "--reinstall" in f.fix and "scipy==1.11.4" in f.fix


def test_orphan_package(make_venv, diagnose):
    venv = make_venv("orphan", BASE)
    pkg = site_packages(venv) / "mystery"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    f = one(diagnose(venv), "orphan-package")
    assert f.severity == "warning"
    assert f.title == "mystery in site-packages belongs to no installed distribution"
    assert f"{pkg} is not listed in any RECORD or top_level.txt" in f.evidence


def test_broken_dist_info(make_venv, diagnose):
    venv = make_venv("nometa", BASE)
    half = site_packages(venv) / "halfgone-1.0.dist-info"
    half.mkdir()
    f = one(diagnose(venv), "broken-dist-info")
    assert f.severity == "error" and str(half) in f.evidence[0]


def test_tensorflow_variants_installed_by_hand(make_venv, diagnose):
    venv = make_venv("variants", ["tensorflow-cpu==2.15.1", "tensorflow==2.15.1"])
    f = one(diagnose(venv), "tensorflow-variants")
    assert f.severity == "error"
    assert f.title == "tensorflow and tensorflow-cpu are installed together and overwrite each other's files"
    assert f.fixed_by_rebuild and not f.affects_new_env  # nothing else pulls the second one in


def test_conda_package_overwritten_by_pip(make_venv, diagnose):
    venv = make_venv("conda", BASE)
    site = site_packages(venv)
    meta = venv / "conda-meta"
    meta.mkdir()
    rel = f"lib/python{MINOR}/site-packages/numpy-1.26.4.dist-info/METADATA"
    (meta / "numpy-1.26.4-py311h64a7726_0.json").write_text(
        json.dumps(
            {"name": "numpy", "version": "1.26.4", "files": [rel, f"lib/python{MINOR}/site-packages/numpy/__init__.py"]}
        )
    )
    (site / "numpy-1.26.4.dist-info" / "INSTALLER").write_text("pip\n")
    result = diagnose(venv)
    f = one(result, "conda-pip-overwrite")
    assert f.severity == "warning"
    assert f.title == "numpy belongs to conda but was overwritten by pip"
    assert any(e.endswith("records conda package numpy 1.26.4") for e in f.evidence)
    assert any("INSTALLER = pip" in e for e in f.evidence)
    assert "conda install" in f.fix
    assert result.env_kind == "conda"


# --------------------------------------------------------------------------- target look-up problems, bad input


def test_bad_to_and_unknown_release_are_bad_input(make_venv, diagnose):
    venv = make_venv("bad", BASE)
    with pytest.raises(UserError) as exc:
        diagnose(venv, to="2.x")
    assert exc.value.exit_code == 2
    with pytest.raises(UserError) as exc:
        diagnose(venv, to="2.99")
    assert exc.value.exit_code == 2 and "2.99" in exc.value.message
    with pytest.raises(UserError) as exc:
        diagnose(venv.parent / "no-such-env")
    assert exc.value.exit_code == 2


def test_index_unreachable_is_a_warning(make_venv, clean_environ):
    venv = make_venv("unreach", BASE)
    result = doctoring.run(venv, to="2.21.0", index_url="http://127.0.0.1:9/simple", environ=clean_environ, timeout=5)
    f = one(result, "index-unreachable")
    assert f.severity == "warning"
    assert result.exit_code == 0 and result.target_version == ""


def test_target_unknown_when_the_index_has_no_release(make_venv, diagnose, tmp_path):
    venv = make_venv("empty-index", BASE)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    f = one(diagnose(venv, to="latest", find_links=[empty]), "target-unknown")
    assert f.severity == "warning"


def test_target_metadata_unavailable_offline(make_venv, diagnose, tmp_path):
    venv = make_venv("nometa-target", BASE)
    page = tmp_path / "links.html"
    name = f"tensorflow_cpu-2.21.0-cp{sys.version_info[0]}{sys.version_info[1]}-none-any.whl"
    page.write_text(f'<a href="https://files.example.invalid/{name}">{name}</a>\n')
    result = diagnose(venv, to="2.21.0", find_links=[page])
    f = one(result, "target-metadata-unavailable")
    assert f.severity == "warning" and "tfrebuild plan" in f.fix
    assert "python-unsupported" not in ids(result)


def test_no_tensorflow(make_venv, diagnose):
    venv = make_venv("notf", ["scipy==1.11.4"])
    result = diagnose(venv, to="latest")
    assert ids(result) == ["no-tensorflow"] and result.exit_code == 0


# --------------------------------------------------------------------------- preflight (for plan / upgrade)


def test_preflight_flags_what_affects_the_new_env(make_venv, kit_index, clean_environ):
    venv = make_venv("pre", BASE + ["tensorflow-text==2.15.0"])
    loc = locate(venv)
    data = probe.run(loc.python)  # what plan already has: the plain probe
    index = Index(no_index=True, find_links=[str(kit_index)])
    found = doctor.preflight(loc, data, "2.21.0", index=index, offline=True, environ=clean_environ)
    blocking = {f.id for f in found if f.affects_new_env and f.severity == "error"}
    assert blocking == {"target-blocked", "tensorflow-variants"}
    assert {f.id for f in found if f.fixed_by_rebuild} >= {"capped-dependency"}
    # plan moving the env to another Python: the target is checked for that Python
    moved = doctor.preflight(
        loc, data, "2.21.0", python_version="3.9.18", index=index, offline=True, environ=clean_environ
    )
    assert "python-unsupported" in {f.id for f in moved}


# --------------------------------------------------------------------------- ids and docs


def test_every_finding_id_is_registered_and_documented():
    import re

    root = Path(__file__).resolve().parent.parent
    source = "\n".join(p.read_text() for p in sorted((root / "rebuild").rglob("*.py")))
    # Every finding is built from the registry (FindingId.X.make / F.X.make), never from a free string id.
    assert not re.findall(r'Finding\(\s*(?:id\s*=\s*)?["\']', source)
    used = set(re.findall(r"\bF(?:indingId)?\.([A-Z_]+)\.make\(", source))
    assert used == {m.name for m in doctor.FindingId}
    assert all(m.severity in doctor.SEVERITIES for m in doctor.FindingId)
    docs = (root / "docs" / "doctor.md").read_text()
    documented = re.findall(r"^#### `([a-z-]+)` \(([a-z]+)\)$", docs, re.M)
    assert len(documented) == len(set(documented))
    assert dict(documented) == {m.value: m.severity for m in doctor.FindingId}
    for member in doctor.FindingId:
        assert member.heading in docs, member


def test_findings_are_made_from_the_registry():
    found = doctor.FindingId.PREFLIGHT_SKIPPED.make("pre-flight checks skipped: boom")
    assert found.id == "preflight-skipped" and found.id is doctor.FindingId.PREFLIGHT_SKIPPED
    assert found.severity == "info" and found.evidence == [] and found.fix == ""
    assert not found.fixed_by_rebuild and not found.affects_new_env
    assert json.loads(json.dumps({"id": found.id})) == {"id": "preflight-skipped"}
    assert doctor.FindingId("target-blocked").severity == "error"
    assert doctor.FindingId.TARGET_BLOCKED.anchor == "docs/doctor.md#target-blocked-error"


# --------------------------------------------------------------------------- real PyPI


@pytest.mark.network
@pytest.mark.slow
def test_real_env_tensorflow_cpu_2_15_with_scipy_and_tensorflow_text(tmp_path):
    """A real env from PyPI: tensorflow-cpu 2.15.1 + scipy 1.11.4 (numpy<1.28) + tensorflow-text 2.15.0."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_"))
        and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "CUDA_HOME")
    }
    environ["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    venv = tmp_path / "real"
    uv = [uv_bin(), "--no-python-downloads"]
    for cmd in (
        [*uv, "venv", "-q", "--no-config", "--python", sys.executable, str(venv)],
        [
            *uv,
            "pip",
            "install",
            "-q",
            "--no-config",
            "--python",
            str(venv_python(venv)),
            "tensorflow-cpu==2.15.1",
            "scipy==1.11.4",
        ],
    ):
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.skip(f"could not build the real env: {proc.stderr.strip()[-300:]}")
    environ["PATH"] = str(tmp_path)  # no pip/nvidia-smi from the machine

    common = doctoring.run(venv, to="2.21.0", index_url="https://pypi.org/simple", environ=environ, timeout=60)
    assert common.target_version == "2.21.0"
    assert errors(common) == [], common.findings
    capped = one(common, "capped-dependency")
    assert "scipy 1.11.4" in capped.title and "via numpy 1.26.4" in capped.title
    assert "tensorflow-cpu 2.21.0 requires numpy>=1.26.0" in capped.evidence
    assert "target-metadata-unavailable" not in ids(common)

    proc = subprocess.run(
        [*uv, "pip", "install", "-q", "--no-config", "--python", str(venv_python(venv)), "tensorflow-text==2.15.0"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.skip(f"could not install tensorflow-text: {proc.stderr.strip()[-300:]}")
    blocked = doctoring.run(venv, to="2.21.0", index_url="https://pypi.org/simple", environ=environ, timeout=60)
    f = one(blocked, "target-blocked")
    assert f.title == "tensorflow-text 2.15.0 does not allow tensorflow-cpu 2.21.0"
    assert "tensorflow-text 2.15.0 requires tensorflow<2.16,>=2.15.0" in f.evidence
    assert any(e.startswith("tensorflow-text 2.21.") and "accepts it" in e for e in f.evidence)
    assert "tensorflow-variants" in ids(blocked)
    assert blocked.exit_code == 1


# --------------------------------------------------------------------------- remote metadata (one HTTP client)


def _serve(directory: Path, *, ranges: bool):
    """A local HTTP server for ``directory`` that honours ``Range: bytes=`` when ``ranges`` (else sends 200)."""
    import http.server
    import re
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        requests: list[str] = []

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            body = (directory / self.path.lstrip("/")).read_bytes()
            spec = self.headers.get("Range", "")
            Handler.requests.append(spec)
            match = re.match(r"bytes=(\d*)-(\d*)$", spec)
            if not ranges or not match:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            first, last = match.groups()
            start = max(0, len(body) - int(last)) if not first else int(first)
            stop = len(body) - 1 if not first or not last else min(int(last), len(body) - 1)
            part = body[start : stop + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop}/{len(body)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, Handler.requests


def _remote_wheel(tmp_path: Path):
    import zipfile

    from packaging.version import Version

    from rebuild.index import simple as indexinfo

    name = "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name, "w") as zf:
        zf.writestr("demo/__init__.py", "x = 1\n" * 40000)  # a body worth not downloading
        zf.writestr(
            "demo-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
            "Requires-Python: >=3.9\nRequires-Dist: numpy<2\nRequires-Dist: scipy; extra == 'sci'\n",
        )
    return name, lambda url: indexinfo.FileInfo(
        filename=name,
        url=url,
        version=Version("1.0"),
        requires_python=None,
        yanked=False,
        is_wheel=True,
        tags=frozenset(),
    )


def test_wheel_metadata_by_byte_ranges_through_the_http_client(tmp_path):
    from rebuild.doctor import remote

    name, file_at = _remote_wheel(tmp_path)
    server, requests = _serve(tmp_path, ranges=True)
    try:
        meta = remote.metadata_by_ranges(file_at(f"http://127.0.0.1:{server.server_port}/{name}"), timeout=10)
    finally:
        server.shutdown()
    assert meta["name"] == "demo" and meta["version"] == "1.0" and meta["requires_python"] == ">=3.9"
    assert meta["requires_dist"] == ["numpy<2", "scipy; extra == 'sci'"]
    assert requests and all(r.startswith("bytes=") for r in requests) and len(requests) <= remote.MAX_RANGE_REQUESTS


def test_wheel_metadata_by_ranges_refuses_a_server_without_ranges(tmp_path):
    from rebuild.doctor import remote
    from rebuild.index import metadata

    name, file_at = _remote_wheel(tmp_path)
    server, _ = _serve(tmp_path, ranges=False)
    try:
        with pytest.raises(metadata.MetadataUnavailable, match="byte ranges"):
            remote.metadata_by_ranges(file_at(f"http://127.0.0.1:{server.server_port}/{name}"), timeout=10)
    finally:
        server.shutdown()
