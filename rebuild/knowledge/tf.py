"""What tfrebuild knows about TensorFlow's distributions on PyPI."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources

from rebuild.util import versions

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

# Distributions whose Linux build loads CUDA (``tensorflow-cpu`` never does).
GPU_DISTRIBUTIONS = ("tensorflow", "tensorflow-gpu", "tf-nightly", "tf-nightly-gpu")

# pip-installed CUDA pieces (``tensorflow[and-cuda]``) by library kind. The CUDA/cuDNN each release was built
# with, and the driver that CUDA needs, are columns of the release table (data/releases.toml).
CUDA_WHEELS = {
    "cudart": ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11"),
    "cudnn": ("nvidia-cudnn-cu12", "nvidia-cudnn-cu11"),
}

# Installed packages known to need Keras 2 (tf.keras before 2.16, or tf-keras after).
KERAS2_PACKAGES = (
    "tensorflow-addons",
    "tensorflow-model-optimization",
    "tensorflow-hub",
    "tensorflow-decision-forests",
    "tensorflow-recommenders",
    "tensorflow-ranking",
)

# What happened to packages that left the TensorFlow ecosystem.
DROPPED = {
    "tensorflow-estimator": (
        "2.16",
        "tf.estimator was removed in TensorFlow 2.16; port the model to Keras "
        "(https://www.tensorflow.org/guide/migrate/migrating_estimator)",
    ),
    "tensorflow-addons": (
        "2.16",
        "tensorflow-addons reached end of life (last release supports TF < 2.16); "
        "most layers/optimizers moved to Keras 3 or keras-cv/keras-nlp",
    ),
    "tensorflow-gpu": (
        "2.12",
        "tensorflow-gpu is an empty placeholder since 2.12; GPU support is tensorflow[and-cuda] on Linux",
    ),
    "tensorflow-io-gcs-filesystem": (
        "2.20",
        "no longer a dependency; install tensorflow[gcs-filesystem] if you read gs:// paths",
    ),
    "tensorboard": (
        "2.21",
        "TensorFlow 2.21 no longer pulls in tensorboard; add it to your requested packages if you use it",
    ),
}

LEGACY_KERAS_PTH = "tfrebuild-legacy-keras.pth"
LEGACY_KERAS_LINE = 'import os; os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")\n'

# Packages that seed an environment rather than being asked for by the user.
SEED_PACKAGES = ("pip", "setuptools", "wheel", "distribute")


def bundled_seed(name: str, url: str) -> bool:
    """pip/setuptools installed by ``python -m venv`` from the interpreter's own ``ensurepip`` bundle: a seed
    of the env, not a local source the user chose (a new env gets its own seeds)."""
    return name.lower() in SEED_PACKAGES and "/ensurepip/_bundled/" in url.replace("\\", "/")


def import_name(distribution: str) -> str:
    """The import name of a distribution when it has no ``top_level.txt``."""
    if distribution in TF_DISTRIBUTIONS:
        return "tensorflow"
    return distribution.replace("-", "_").replace(".", "_")


# --- the release table (rebuild/data/releases.toml) ---------------------------


@dataclass(frozen=True)
class Release:
    minor: str
    newest: str
    python: list[str]
    numpy: str
    keras: str
    keras_major: int
    protobuf: str
    cuda: str
    cudnn: str
    cuda_source: str
    min_driver: str
    gpu_route: str
    notes: list[str] = field(default_factory=list)


def releases() -> list[Release]:
    """One row per TensorFlow minor release, oldest first (explanations and pre-checks only)."""
    text = resources.files("rebuild").joinpath("knowledge/data/releases.toml").read_text(encoding="utf-8")
    return [Release(**row) for row in tomllib.loads(text)["release"]]


def release_for(version: str) -> Release | None:
    """The row of the minor release ``version`` belongs to (``2.15.1`` → 2.15)."""
    minor = versions.minor(version)
    return next((r for r in releases() if r.minor == minor), None)
