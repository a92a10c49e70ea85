"""The tests' one fake ``nvidia-smi``: it replays recorded, real output from ``tests/data/nvidia-smi/``.

Each folder there is one machine (see its README.md for where each text comes from):

* ``query-gpu.csv``: what ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` printed;
* ``nvidia-smi.txt``: what plain ``nvidia-smi`` printed (the summary table);
* ``output.txt`` + ``exit-code``: a failing nvidia-smi, the same message and status for every call.

Any other command line gets exit status 2, nvidia-smi's own "a supplied argument or flag is
invalid", so a change to what tfrebuild asks fails loudly instead of reading a wrong recording.
"""

from __future__ import annotations

import shlex
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "nvidia-smi"
VARIANTS = tuple(sorted(p.name for p in DATA.iterdir() if p.is_dir()))

_SCRIPT = """#!/bin/sh
# fake nvidia-smi replaying {folder}
d={folder}
if [ -f "$d/output.txt" ]; then cat "$d/output.txt"; exit "$(cat "$d/exit-code")"; fi
case "$*" in
  "--query-gpu=name,driver_version --format=csv,noheader") cat "$d/query-gpu.csv" ;;
  "") cat "$d/nvidia-smi.txt" ;;
  *) echo "fake nvidia-smi: nothing recorded for: $*" >&2; exit 2 ;;
esac
"""


def recording(variant: str, name: str) -> str:
    """The text of one recorded file."""
    return (DATA / variant / name).read_text()


def fake_nvidia_smi(bin_dir: Path, variant: str) -> Path:
    """Write ``bin_dir/nvidia-smi`` replaying the recording ``variant``; return its path."""
    if variant not in VARIANTS:
        raise ValueError(f"no nvidia-smi recording {variant!r}; have {', '.join(VARIANTS)}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(_SCRIPT.format(folder=shlex.quote(str(DATA / variant))))
    script.chmod(0o755)
    return script
