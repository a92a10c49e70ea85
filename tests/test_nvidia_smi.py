"""rebuild.env.gpu parses nvidia-smi as real drivers print it: every recording in tests/data/nvidia-smi/."""

from __future__ import annotations

import subprocess

import pytest

from rebuild.env import gpu
from tests.kit.nvidia import DATA, VARIANTS, fake_nvidia_smi, recording

# variant -> (GPU names, driver, CUDA version) that detect() must report
EXPECTED = {
    "geforce-470": (["NVIDIA GeForce RTX 2080"], "470.82.01", "11.4"),
    "h100-590": (["NVIDIA H100 80GB HBM3"], "590.48.01", "13.1"),
    "l40s-595": (["NVIDIA L40S"], "595.80", "13.2"),
    "quadro-x2-535": (["Quadro RTX 4000", "Quadro RTX 4000"], "535.129.03", "12.2"),
    "rtx2080super-610": (["NVIDIA GeForce RTX 2080 SUPER"], "610.57.04", "13.3"),  # "KMD" / "CUDA UMD Version"
    "no-driver": ([], "", ""),  # exit 9, "NVIDIA-SMI has failed because it couldn't communicate ..."
    "nvml-mismatch": ([], "", ""),  # exit 18, "Failed to initialize NVML: Driver/library version mismatch"
}


def test_every_recording_is_expected_and_documented():
    assert set(EXPECTED) == set(VARIANTS)
    readme = (DATA / "README.md").read_text()
    assert all(f"`{v}/`" in readme for v in VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_detect_replays_each_recording(variant, tmp_path):
    smi = fake_nvidia_smi(tmp_path / "bin", variant)
    facts = gpu.detect({"PATH": str(smi.parent), "CUDA_VISIBLE_DEVICES": "0"})
    assert facts.nvidia_smi == str(smi)
    assert (facts.gpus, facts.driver_version, facts.cuda_version) == EXPECTED[variant]
    assert facts.environ == {"CUDA_VISIBLE_DEVICES": "0"}


@pytest.mark.parametrize("variant", [v for v in VARIANTS if EXPECTED[v][0]])
def test_parsers_on_the_recorded_text(variant):
    names, driver, cuda = EXPECTED[variant]
    rows = gpu.parse_query(recording(variant, "query-gpu.csv"))
    assert rows == [{"name": n, "driver_version": driver} for n in names]  # one line per GPU
    assert gpu.parse_summary(recording(variant, "nvidia-smi.txt")) == (driver, cuda)


@pytest.mark.parametrize("variant", ["no-driver", "nvml-mismatch"])
def test_failure_text_is_no_data(variant):
    text = recording(variant, "output.txt")
    assert gpu.parse_query(text) == []
    assert gpu.parse_summary(text) == ("", "")


def test_full_csv_with_header_units_and_unavailable_values():
    """The whole recorded ``--query-gpu=... --format=csv`` of the H100: header with units, [N/A] values."""
    text = recording("h100-590", "query-gpu-all.csv")
    (row,) = gpu.parse_query(text, fields=None)
    assert len(row) == len(text.splitlines()[0].split(", "))
    assert (row["name"], row["driver_version"], row["count"]) == ("NVIDIA H100 80GB HBM3", "590.48.01", "1")
    assert (row["memory.total"], row["compute_cap"]) == ("81559 MiB", "9.0")
    assert "[N/A]" in text and row["vgpu_driver_capability.heterogenous_multivGPU"] == ""  # [N/A]
    assert "[Requested functionality has been deprecated]" in text
    assert not any(v.startswith("[") for v in row.values())


def test_a_name_with_a_comma_keeps_it():
    """nvidia-smi does not quote CSV values; the name is the first field, so everything before the last comma."""
    assert gpu.parse_query("Some, GPU, 550.54.15\n") == [{"name": "Some, GPU", "driver_version": "550.54.15"}]


def test_the_fake_refuses_what_was_not_recorded(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "h100-590")
    res = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv"], capture_output=True, text=True)
    assert res.returncode == 2 and "nothing recorded" in res.stderr
    res = subprocess.run([smi, *gpu.QUERY], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == recording("h100-590", "query-gpu.csv")
    with pytest.raises(ValueError, match="no nvidia-smi recording"):
        fake_nvidia_smi(tmp_path, "a100-invented")
