"""The plan's GPU route (``--gpu auto|cuda|cpu``): which TensorFlow distribution the new env gets, and whether the
NVIDIA driver is new enough for the target's CUDA. Split from :mod:`rebuild.core.plan` (same code)."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from rebuild.core.options import Gpu, Route
from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.knowledge.tf import release_for, releases


def gpu_route(choice: Gpu | str, tf: str, current: prof.Profile) -> tuple[str, list[str], Route]:
    """(distribution, extras, route) for ``--gpu auto|cuda|cpu``.

    auto: an NVIDIA GPU seen by ``nvidia-smi`` (or the env already on the CUDA wheels) → the CUDA route
    on Linux x86_64; otherwise the env's current variant. cpu: ``tensorflow-cpu`` where PyPI has it.
    """
    choice = Gpu.parse(choice)
    system, machine = current.platform.system, current.platform.machine
    cuda_capable = system == "Linux" and machine in ("x86_64", "AMD64")
    on_cuda_wheels = tf == "tensorflow" and any(p.name.startswith("nvidia-cudnn-cu") for p in current.packages)
    if choice == Gpu.AUTO:
        if cuda_capable and (current.gpu.gpus or on_cuda_wheels):
            choice = Gpu.CUDA
        else:
            return tf, [], Route.KEEP
    if choice == Gpu.CUDA:
        if not cuda_capable:
            raise UserError(
                f"--gpu cuda needs Linux x86_64; this env is {system} {machine}.",
                "On macOS use tensorflow-metal; on Windows use WSL2; or drop --gpu.",
            )
        return "tensorflow", ["and-cuda"], Route.CUDA
    has_cpu_wheels = machine in ("x86_64", "AMD64") and system in ("Linux", "Windows")
    return ("tensorflow-cpu" if has_cpu_wheels else "tensorflow"), [], Route.CPU


def check_driver(gpu: prof.Gpu, tf_new: str) -> None:
    """A driver too old for the CUDA the target was built with is a plan error."""
    release = release_for(tf_new)
    if release is None or not gpu.driver_version or not release.min_driver:
        return
    try:
        too_old = Version(gpu.driver_version) < Version(release.min_driver)
    except InvalidVersion:
        return
    if too_old:
        fits = [
            r for r in reversed(releases()) if r.min_driver and Version(r.min_driver) <= Version(gpu.driver_version)
        ]
        alt = f"--to {fits[0].minor} (CUDA {fits[0].cuda}), " if fits else ""
        raise UserError(
            f"The NVIDIA driver {gpu.driver_version} is too old for TensorFlow {tf_new}: it was built with CUDA "
            f"{release.cuda}, which needs driver {release.min_driver} or newer.",
            f"Update the NVIDIA driver, or choose {alt}or --gpu cpu.",
            exit_code=1,
        )
