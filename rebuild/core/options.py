"""The fixed-choice options, as types: each value set, its help and its refusal live here once.

They are :class:`enum.StrEnum` members, so ``Strategy.EAGER == "eager"`` and ``f"{Strategy.EAGER}"`` is
``"eager"``: code that compares or prints the old strings keeps working. The CLI parses every one of them
with :meth:`Choice.parse` before any command runs; a bad value is a :class:`~rebuild.errors.UserError`
(exit 2) and nothing is read or written.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Callable, TypeVar

from rebuild.errors import UserError


C = TypeVar("C")
_NAMES: dict[type, tuple[str, str]] = {}  # choice type -> (its option, what a refusal calls it)


def _named(option: str, noun: str = "") -> Callable[[type[C]], type[C]]:
    """Class decorator: the command-line option a :class:`Choice` is given with."""

    def register(cls: type[C]) -> type[C]:
        _NAMES[cls] = (option, noun or option)
        return cls

    return register


class Choice(StrEnum):
    """A closed set of option values; ``@_named`` says which option takes them."""

    @classmethod
    def option(cls) -> str:
        return _NAMES[cls][0]

    @classmethod
    def unknown(cls, value: str) -> str:
        """The first line of the refusal of ``value``."""
        return f"Unknown {_NAMES[cls][1]} '{value}'."

    @classmethod
    def parse(cls, value: str | Choice) -> Choice:
        """``value`` as a member, or a :class:`UserError` that names the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = [f"{cls.option()} {member.value}" for member in cls]
            raise UserError(cls.unknown(value), f"Use {', '.join(choices[:-1])} or {choices[-1]}.") from None

    @classmethod
    def metavar(cls) -> str:
        return "[" + "|".join(member.value for member in cls) + "]"


@_named("--strategy", "strategy")
class Strategy(Choice):
    """How far the resolution may move what is installed."""

    MINIMAL = "minimal"  # move as little as possible
    EAGER = "eager"  # newest of everything


@_named("--gpu")
class Gpu(Choice):
    """Which TensorFlow variant the new env gets."""

    AUTO = "auto"  # CUDA when nvidia-smi sees a GPU (or the env is on the CUDA wheels), else keep the variant
    CUDA = "cuda"  # tensorflow[and-cuda], Linux x86_64
    CPU = "cpu"  # tensorflow-cpu where PyPI has it


class Route(StrEnum):
    """The GPU route a plan took for ``--gpu`` (not an option: :func:`rebuild.core.gpuroute.gpu_route` decides)."""

    CUDA = "cuda"  # tensorflow[and-cuda]: the checks require a GPU
    CPU = "cpu"  # tensorflow-cpu (or tensorflow where PyPI has no CPU wheels)
    KEEP = "keep"  # the env's current variant


@_named("--keras")
class Keras(Choice):
    """Which Keras ``tf.keras`` is in the new env."""

    AUTO = "auto"  # keep what the env uses
    LEGACY = "legacy"  # Keras 2 through tf-keras (TF_USE_LEGACY_KERAS=1)
    KERAS3 = "3"  # Keras 3


@_named("--check", "check")
class PathCheck(Choice):
    """What runs at the env's path after a swap (upgrade, apply) or a rollback."""

    VERSIONS = "versions"  # the proven tree (inode), its interpreter starts there and reports the checked versions
    IMPORT = "import"  # that, and TensorFlow imports and computes at the path (seconds for a real TensorFlow)


@_named("--format", "format")
class ExportFormat(Choice):
    """What ``tfrebuild export`` writes."""

    PYLOCK = "pylock"  # PEP 751 pylock.toml
    REQUIREMENTS = "requirements"  # requirements.txt with hashes
