"""What the machine says about NVIDIA GPUs, via ``nvidia-smi`` when present."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from rebuild.env.profile import Gpu

CUDA_ENV_VARS = ("CUDA_HOME", "CUDA_PATH", "CUDNN_PATH", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
                 "TF_FORCE_GPU_ALLOW_GROWTH", "XLA_FLAGS")

_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9.]+)")


def _run(cmd: list[str], timeout: float) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def detect(environ: dict[str, str] | None = None, timeout: float = 10.0) -> Gpu:
    """GPU facts: ``nvidia-smi`` path, driver, the CUDA version the driver supports, GPU names.

    Nothing here needs a GPU: without ``nvidia-smi`` the facts are empty.
    """
    environ = dict(os.environ if environ is None else environ)
    gpu = Gpu(environ={k: environ[k] for k in CUDA_ENV_VARS if environ.get(k)})
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if not smi:
        return gpu
    gpu.nvidia_smi = smi
    listing = _run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"], timeout)
    if listing:
        for line in listing.splitlines():
            if "," in line:
                name, driver = (part.strip() for part in line.rsplit(",", 1))
                gpu.gpus.append(name)
                gpu.driver_version = gpu.driver_version or driver
    header = _run([smi], timeout)
    if header:
        match = _CUDA_VERSION.search(header)
        if match:
            gpu.cuda_version = match.group(1)
    return gpu
