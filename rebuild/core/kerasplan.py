"""The plan's Keras decisions: which Keras a TensorFlow brings, who needs Keras 2, whether the new env keeps it through
tf-keras (``--keras``), and the notes that say so. Split from :mod:`rebuild.core.plan` (same code)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.core import resolve
from rebuild.core.options import Keras
from rebuild.core.plannotes import _parse, requirement_name
from rebuild.env.probed import Probed
from rebuild.knowledge.tf import KERAS2_PACKAGES, LEGACY_KERAS_PTH, TF_DISTRIBUTIONS, release_for


def _keras_major(tf_version: str) -> int | None:
    release = release_for(tf_version) if tf_version else None
    if release is not None:
        return release.keras_major
    try:
        return 3 if Version(tf_version) >= Version("2.16") else 2
    except InvalidVersion:
        return None


def keras2_dependents(requires: dict[str, list[str]]) -> list[str]:
    """Installed packages that need Keras 2: they require tf-keras or keras<3, or are known to."""
    from packaging.specifiers import SpecifierSet

    out = set(n for n in requires if n in KERAS2_PACKAGES)
    for name, reqs in requires.items():
        if name in TF_DISTRIBUTIONS or name in ("keras", "tf-keras"):
            continue  # TensorFlow itself pins its Keras; that is what moves
        for text in reqs:
            req = _parse(text)
            if req is None:
                continue
            dep = canonicalize_name(req.name)
            if dep == "tf-keras" or (
                dep == "keras"
                and req.specifier
                and not req.specifier.contains("3.0.0")
                and SpecifierSet(str(req.specifier)).contains("2.15.0")
            ):
                out.add(name)
    return sorted(out)


def _keras_switch(
    keras: Keras, data: Probed, inputs: resolve.Inputs, tf_new: str, needed_by: Sequence[str] = (), tf_old: str = ""
) -> bool:
    """Whether the new env keeps Keras 2 through tf-keras; if so, the matching tf-keras is requested.

    ``--keras auto`` keeps Keras 2 when the env had it through tf-keras, or when it crosses TensorFlow 2.16 with
    installed packages that need Keras 2 (``needed_by``, from the companion table); ``--keras 3`` never does."""
    site_packages = data.paths.get("site_packages", [])
    had_legacy = any((Path(site) / LEGACY_KERAS_PTH).exists() for site in site_packages)
    needed = bool(needed_by) and _keras_major(tf_old) == 2
    if not (keras == Keras.LEGACY or (keras == Keras.AUTO and (had_legacy or needed))) or _keras_major(tf_new) != 3:
        return False
    major, minor = Version(tf_new).major, Version(tf_new).minor
    inputs.requested = sorted(
        {r for r in inputs.requested if canonicalize_name(requirement_name(r) or r) != "tf-keras"}
        | {f"tf-keras>={major}.{minor},<{major}.{minor + 1}"}
    )
    return True


def _keras_notes(tf_old: str, tf_new: str, keras_legacy: bool, tf_keras: str, dependents: list[str]) -> list[str]:
    if _keras_major(tf_old) == 2 and _keras_major(tf_new) == 3:
        if keras_legacy:
            return [
                f"Keras: tf.keras becomes Keras 3 at TensorFlow 2.16; --keras legacy installs tf-keras "
                f"{tf_keras} and sets TF_USE_LEGACY_KERAS=1 for every interpreter "
                "started from the new env, so tf.keras stays Keras 2"
            ]
        still = f" Installed packages that still expect Keras 2: {', '.join(dependents)}." if dependents else ""
        return [
            "Keras: tf.keras becomes Keras 3 at TensorFlow 2.16; Keras 2 code (and packages built on "
            f"it) may break.{still} To keep Keras 2, plan again with --keras legacy."
        ]
    if keras_legacy:
        return [f"Keras: keeping Keras 2 through tf-keras {tf_keras} (TF_USE_LEGACY_KERAS=1 in the new env)"]
    return []
