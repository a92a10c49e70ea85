"""System CUDA checks (Linux, GPU builds of TensorFlow only): the libraries on LD_LIBRARY_PATH, CUDA_HOME and
the NVIDIA driver, against the CUDA/cuDNN each release was built with (``knowledge/data/releases.toml``)."""

from __future__ import annotations

import os
import re
from typing import Iterable

from rebuild.doctor.context import Context, Target, numbers, q
from rebuild.doctor.findings import Finding
from rebuild.doctor.findings import FindingId as F
from rebuild.knowledge.tf import CUDA_WHEELS, GPU_DISTRIBUTIONS, Release, release_for

_LIBRARY = re.compile(r"^lib(cudart|cudnn)\.so\.(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


def _scan_libraries(folders: Iterable[tuple[str, str]]) -> list[dict]:
    """CUDA runtime / cuDNN libraries in ``(folder, source)``: the most specific version per kind and folder."""
    out: list[dict] = []
    for folder, source in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        best: dict[str, tuple[tuple[int, ...], str]] = {}
        for n in names:
            m = _LIBRARY.match(n)
            if not m:
                continue
            nums = tuple(int(g) for g in m.groups()[1:] if g is not None)
            kind = m.group(1)
            if kind not in best or len(nums) > len(best[kind][0]):
                best[kind] = (nums, n)
        for kind, (nums, n) in best.items():
            # libcudart.so.11.0 is the soname of every CUDA 11.x: its minor is known from X.Y.Z names only.
            known = len(nums) >= (3 if kind == "cudart" else 2)
            out.append(
                {"kind": kind, "version": nums, "path": os.path.join(folder, n), "source": source, "minor_known": known}
            )
    return out


def check_cuda(ctx: Context, target: Target | None) -> list[Finding]:
    """System CUDA (LD_LIBRARY_PATH, CUDA_HOME ..., the driver) against the CUDA the installed and target
    TensorFlow were built with (the release table, :func:`rebuild.knowledge.tf.release_for`)."""
    if ctx.plat.get("system") != "Linux":
        return []
    subjects = []  # (label, version, is_target)
    if ctx.tf in GPU_DISTRIBUTIONS and ctx.tf_version:
        subjects.append((f"{ctx.tf} {ctx.tf_version} (installed)", ctx.tf_version, False))
    if target and target.distribution in GPU_DISTRIBUTIONS and target.version != ctx.tf_version:
        subjects.append((f"{target.distribution} {target.version} (target)", target.version, True))
    subjects = [(label, v, t, built) for label, v, t in subjects if (built := release_for(v or "")) is not None]
    if not subjects:
        return []
    out: list[Finding] = []
    folders = [(p, "LD_LIBRARY_PATH") for p in ctx.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    home_folders = []
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDNN_PATH"):
        if ctx.environ.get(var):
            home_folders += [(os.path.join(ctx.environ[var], sub), var) for sub in ("lib64", "lib", "")]
    libs = _scan_libraries(folders)
    home_libs = _scan_libraries(home_folders)
    for label, version, is_target, built in subjects:
        out += _library_findings(ctx, label, version, is_target, built, libs)
        out += _home_findings(ctx, label, is_target, built, home_libs)
        out += _driver_findings(ctx, label, is_target, built)
    return out


def _library_findings(
    ctx: Context, label: str, version: str, is_target: bool, built: Release, libs: list[dict]
) -> list[Finding]:
    """CUDA runtime / cuDNN on LD_LIBRARY_PATH that do not fit, or that shadow the pip-installed ones."""
    need = {"cudart": numbers(built.cuda), "cudnn": numbers(built.cudnn)}
    wheels = {kind: [n for n in names if n in ctx.env_dists] for kind, names in CUDA_WHEELS.items()}
    bad, shadow = [], []
    for lib in libs:
        want = need[lib["kind"]]
        have = lib["version"]
        shown = f"{lib['path']} ({lib['kind']} {'.'.join(map(str, have))}, via {lib['source']})"
        expect = f"{label} was built with {'CUDA' if lib['kind'] == 'cudart' else 'cuDNN'} {'.'.join(map(str, want))}"
        if have[0] == want[0]:
            if lib["minor_known"] and have[:2] < want[:2]:
                bad.append(f"{shown} is older than {label} needs: {expect}")
            elif wheels[lib["kind"]]:
                pip_libs = ", ".join(f"{w} {ctx.env_dists[w]['version']}" for w in wheels[lib["kind"]])
                shadow.append(f"{shown} is loaded before the pip-installed {pip_libs}")
        elif not wheels[lib["kind"]] and not any(o["kind"] == lib["kind"] and o["version"][0] == want[0] for o in libs):
            bad.append(
                f"{shown} does not match: {expect} (TensorFlow looks for "
                f"lib{lib['kind']}.so.{want[0]} and will not use the GPU)"
            )
    if numbers(version)[:2] >= (2, 14):
        env_fix = (
            "remove the CUDA folders from LD_LIBRARY_PATH and let pip bring the right CUDA: "
            f"`uv pip install --python {q(ctx.python)} {q('tensorflow[and-cuda]==' + version)}`, "
            f"or point LD_LIBRARY_PATH at CUDA {built.cuda} / cuDNN {built.cudnn}"
        )
    else:
        env_fix = f"point LD_LIBRARY_PATH at a CUDA {built.cuda} / cuDNN {built.cudnn} installation"
    evidence = [f"LD_LIBRARY_PATH={ctx.environ.get('LD_LIBRARY_PATH', '')}"]
    if bad:
        return [
            F.CUDA_LIBS_MISMATCH.make(
                f"system CUDA libraries on LD_LIBRARY_PATH do not fit {label}",
                evidence + bad,
                env_fix,
                fixed_by_rebuild=False,
                affects_new_env=is_target,
            )
        ]
    if shadow:
        return [
            F.CUDA_LIBS_SHADOW_PIP.make(
                f"system CUDA libraries shadow the ones tensorflow[and-cuda] installed ({label})",
                evidence + shadow,
                env_fix,
                fixed_by_rebuild=False,
                affects_new_env=is_target,
            )
        ]
    return []


def _home_findings(ctx: Context, label: str, is_target: bool, built: Release, home_libs: list[dict]) -> list[Finding]:
    """CUDA_HOME / CUDA_PATH / CUDNN_PATH pointing at another CUDA than the build's."""
    need = numbers(built.cuda)
    home_cuda = [h for h in home_libs if h["kind"] == "cudart"]
    if not home_cuda or (
        home_cuda[0]["version"][:1] == need[:1]
        and not (home_cuda[0]["minor_known"] and home_cuda[0]["version"][:2] != need[:2])
    ):
        return []
    h = home_cuda[0]
    return [
        F.CUDA_HOME_MISMATCH.make(
            f"{h['source']} points at CUDA {'.'.join(map(str, h['version']))}, {label} was built with CUDA {built.cuda}",
            [
                f"{h['source']}={ctx.environ.get(h['source'])}",
                f"{h['path']}",
                "XLA takes ptxas and libdevice from there: kernels may fail to compile or run slowly",
            ],
            f"unset {h['source']} or point it at a CUDA {built.cuda} toolkit",
            fixed_by_rebuild=False,
            affects_new_env=is_target,
        )
    ]


def _driver_findings(ctx: Context, label: str, is_target: bool, built: Release) -> list[Finding]:
    """An NVIDIA driver older than the build's CUDA needs."""
    driver = ctx.profile.gpu.driver_version
    required = built.min_driver
    if not (driver and required and numbers(driver) < numbers(required)):
        return []
    return [
        F.DRIVER_TOO_OLD.make(
            f"the NVIDIA driver {driver} is too old for {label}",
            [
                f"{ctx.profile.gpu.nvidia_smi}: driver {driver}"
                + (f", CUDA {ctx.profile.gpu.cuda_version}" if ctx.profile.gpu.cuda_version else ""),
                f"{label} was built with CUDA {built.cuda}, which needs driver >= {required}",
            ],
            f"upgrade the NVIDIA driver to {required} or newer (e.g. `sudo ubuntu-drivers install`), or stay on "
            f"a TensorFlow built with an older CUDA",
            fixed_by_rebuild=False,
            affects_new_env=is_target,
        )
    ]
