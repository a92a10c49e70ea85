"""The TensorFlow ecosystem's companions (``data/companions.toml``): how each binds to TensorFlow.

Data only, with the source of each fact in the file. uv still decides what installs, from the index's metadata;
this table says which installed packages are companions (they move in step with TensorFlow), what pairs with a
TensorFlow minor where the metadata is silent, which need Keras 2, tf-keras or ``pkg_resources``, which ship op
libraries, and which end before a TensorFlow release.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from importlib import resources

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Companion:
    name: str
    source: str
    import_name: str = ""
    binding: str = ""
    pairs: dict[str, str] = field(default_factory=dict)
    tf_below: str = ""
    keras2: bool = False
    keras3: bool = False
    tf_keras_from: str = ""
    pkg_resources: str = ""
    op_library: bool | None = None
    python_below: str = ""

    def pair_for(self, tf_version: str) -> str:
        """The companion versions that work with ``tf_version`` (a specifier), "" when the table says nothing."""
        if not self.pairs:
            return ""
        minor = _minor(tf_version)
        if minor in self.pairs:
            return self.pairs[minor]
        listed = [m for m in self.pairs if m != "*"]
        if "*" in self.pairs and listed and _key(minor) > max(_key(m) for m in listed):
            return self.pairs["*"]
        return ""

    def ends_before(self, tf_version: str) -> bool:
        """End of life: no release of it works with ``tf_version``."""
        return bool(self.tf_below) and _key(_minor(tf_version)) >= _key(self.tf_below)

    def needs_tf_keras(self, tf_version: str) -> bool:
        return bool(self.tf_keras_from) and _key(_minor(tf_version)) >= _key(self.tf_keras_from)

    def imports_pkg_resources(self, version: str) -> bool:
        return _contains(self.pkg_resources, version)


@dataclass(frozen=True)
class PythonBad:
    name: str
    versions: str
    python: str
    source: str


def _minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def _key(minor: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in minor.split("."))
    except ValueError:
        return (0,)


def _contains(spec: str, version: str) -> bool:
    if not spec or not version:
        return False
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


@functools.cache
def _data() -> dict:
    text = resources.files("rebuild").joinpath("knowledge/data/companions.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def table() -> dict[str, Companion]:
    """Canonical name -> :class:`Companion`."""
    out = {}
    for row in _data().get("companion", []):
        row = dict(row)
        row["import_name"] = row.pop("import", "")
        out[row["name"]] = Companion(**row)
    return out


def get(name: str) -> Companion | None:
    return table().get(name)


def installed(pins: dict[str, str]) -> dict[str, Companion]:
    """The companions among installed ``pins`` (canonical name -> version)."""
    return {n: c for n, c in table().items() if n in pins}


def keras2_needed_by(pins: dict[str, str]) -> list[str]:
    """Installed packages the table says need Keras 2 (tf-keras itself excluded: it is the means, not a need)."""
    return sorted(n for n, c in installed(pins).items() if c.keras2 and n != "tf-keras")


def python_bad(pins: dict[str, str], python_version: str) -> dict[str, PythonBad]:
    """Installed versions known not to run on ``python_version`` (or newer)."""
    out = {}
    for row in _data().get("python_bad", []):
        bad = PythonBad(**row)
        if (
            bad.name in pins
            and _contains(bad.versions, pins[bad.name])
            and _key(_minor(python_version)) >= _key(bad.python)
        ):
            out[bad.name] = bad
    return out


def op_library_packages() -> set[str]:
    """Companions known to ship op libraries."""
    return {n for n, c in table().items() if c.op_library}


def not_op_libraries() -> set[str]:
    """Companions whose shared objects link TensorFlow but are not op libraries (filesystem plugins)."""
    return {n for n, c in table().items() if c.op_library is False}
