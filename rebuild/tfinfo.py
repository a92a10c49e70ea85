"""What tfrebuild knows about TensorFlow's distributions on PyPI."""

from __future__ import annotations

# Distributions that install the ``tensorflow`` import package. Having two of
# them installed means one overwrote the other's files.
TF_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-intel",
    "tensorflow-macos",
    "tensorflow-aarch64",
    "tensorflow-cpu-aws",
    "intel-tensorflow",
    "tf-nightly",
    "tf-nightly-cpu",
    "tf-nightly-gpu",
    "tf-nightly-intel",
    "tf-nightly-macos",
)

# Packages that seed an environment rather than being asked for by the user.
SEED_PACKAGES = ("pip", "setuptools", "wheel", "distribute")


def import_name(distribution: str) -> str:
    """The import name of a distribution when it has no ``top_level.txt``."""
    if distribution in TF_DISTRIBUTIONS:
        return "tensorflow"
    return distribution.replace("-", "_").replace(".", "_")
