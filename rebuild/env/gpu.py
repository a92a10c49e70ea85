"""What the machine says about NVIDIA GPUs, via ``nvidia-smi`` when present.

Two calls, parsed as NVIDIA documents and as real drivers print them (see
``tests/data/nvidia-smi/README.md`` for the recorded outputs the tests replay):

* ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader``: one line
  per GPU, values joined by ``", "``, no quoting; a value nvidia-smi cannot give is
  bracketed (``[N/A]``, ``[Not Supported]``, ...);
* plain ``nvidia-smi``: the summary table whose first row names the driver and the
  highest CUDA version it supports, ``Driver Version: 590.48.01 ... CUDA Version: 13.1``
  (from driver 610 ``KMD Version: 610.57.04 ... CUDA UMD Version: 13.3``).

A failing ``nvidia-smi`` (no driver loaded: exit 9, NVML mismatch: exit 18, ...) prints
its message instead of data; a non-zero exit status means no facts, whatever it printed.
"""

from __future__ import annotations

import os
import re
import shutil

from rebuild.env.profile import Gpu
from rebuild.util import proc

CUDA_ENV_VARS = (
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDNN_PATH",
    "CUDA_VISIBLE_DEVICES",
    "LD_LIBRARY_PATH",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "XLA_FLAGS",
)

QUERY_FIELDS = ("name", "driver_version")
QUERY = [f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader"]

_DRIVER_VERSION = re.compile(r"(?:Driver|KMD) Version:\s*([0-9][0-9.]*)")
_CUDA_VERSION = re.compile(r"CUDA (?:UMD )?Version:\s*([0-9][0-9.]*)")
_UNITS = re.compile(r"\s*\[[^\]]*\]$")  # "memory.total [MiB]" in a header line


def _value(text: str) -> str:
    """One CSV value: stripped; a bracketed "can't tell" (``[N/A]``, ``[Not Supported]``) becomes ``""``."""
    text = text.strip()
    return "" if text.startswith("[") and text.endswith("]") else text


def parse_query(text: str, fields: tuple[str, ...] | None = QUERY_FIELDS) -> list[dict[str, str]]:
    """The rows of ``--query-gpu=<fields> --format=csv[,noheader]`` output, one dict per GPU.

    ``fields=None`` reads them from the header line (``--format=csv``), units dropped.
    Values are split from the right, so only the first field may itself contain ``", "``;
    a line with too few values (an error message, a blank line) is skipped.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if fields is None:
        if not lines:
            return []
        fields = tuple(_UNITS.sub("", name.strip()) for name in lines.pop(0).split(","))
    rows = []
    for line in lines:
        values = line.rsplit(",", len(fields) - 1)
        if len(values) == len(fields):
            rows.append({f: _value(v) for f, v in zip(fields, values, strict=True)})
    return rows


def parse_summary(text: str) -> tuple[str, str]:
    """(driver version, CUDA version) from the first row of the plain ``nvidia-smi`` table; ``""`` if absent."""
    driver, cuda = _DRIVER_VERSION.search(text), _CUDA_VERSION.search(text)
    return (driver.group(1) if driver else "", cuda.group(1) if cuda else "")


def _stdout(cmd: list[str], timeout: float) -> str:
    result = proc.run(cmd, timeout=timeout)
    return result.stdout if result.ok else ""


def detect(environ: dict[str, str] | None = None, timeout: float = 10.0) -> Gpu:
    """GPU facts: ``nvidia-smi`` path, driver, the CUDA version the driver supports, GPU names.

    Nothing here needs a GPU: without ``nvidia-smi`` (or when it fails) the facts are empty.
    """
    environ = dict(os.environ if environ is None else environ)
    gpu = Gpu(environ={k: environ[k] for k in CUDA_ENV_VARS if environ.get(k)})
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if not smi:
        return gpu
    gpu.nvidia_smi = smi
    for row in parse_query(_stdout([smi, *QUERY], timeout)):
        if row["name"]:
            gpu.gpus.append(row["name"])
        gpu.driver_version = gpu.driver_version or row["driver_version"]
    driver, gpu.cuda_version = parse_summary(_stdout([smi], timeout))
    gpu.driver_version = gpu.driver_version or driver
    return gpu
