"""The profile: a versioned TOML record of one Python environment.

A profile is plain data (dataclasses) with an exact round trip:
``loads(dumps(p)) == p``. Keys are written in a fixed order and lists are
sorted by the code that builds them, so two snapshots of the same
environment diff cleanly. The schema is documented in ``docs/profile.md``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from rebuild.env.profile_check import shorten, validate
from rebuild.errors import UserError
from rebuild.index.settings import Index, IndexSetting  # noqa: F401 - their home is index/; re-exported
from rebuild.util import versions

SCHEMA_VERSION = 1


@dataclass
class Interpreter:
    version: str = ""
    implementation: str = "cpython"
    executable: str = ""
    base_prefix: str = ""
    abiflags: str = ""
    soabi: str = ""
    pointer_bits: int = 64

    @property
    def minor(self) -> str:
        """``"3.11"`` from ``"3.11.7"``."""
        return versions.minor(self.version)


@dataclass
class Platform:
    system: str = ""
    machine: str = ""
    libc: str = ""
    libc_version: str = ""
    sysconfig_platform: str = ""
    mac_ver: str = ""


@dataclass
class TensorFlow:
    distribution: str = ""
    version: str = ""
    keras_version: str = ""
    installed_variants: list[str] = field(default_factory=list)


@dataclass
class Gpu:
    nvidia_smi: str = ""
    driver_version: str = ""
    cuda_version: str = ""
    gpus: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)


@dataclass
class Package:
    """One installed distribution, pinned, with where it came from.

    ``source`` is ``index`` (a registry), ``url`` (an archive URL), ``vcs``
    (with ``commit``), ``path`` (a local file or folder) or ``editable``;
    the last four come from the distribution's ``direct_url.json``.
    """

    name: str
    version: str
    requested: bool = False
    location: str = "env"  # env | user | system
    installer: str = ""
    source: str = "index"
    url: str = ""
    vcs: str = ""
    commit: str = ""
    requested_revision: str = ""
    required_by: list[str] = field(default_factory=list)


@dataclass
class Warning:
    kind: str
    path: str
    message: str


MODEL_RTOL = 1e-4  # float32 on CPU: kernels and their order change between releases
MODEL_ATOL = 1e-5


@dataclass
class SmokeModel:
    """A saved model that must load and answer the same in the new env (``[[smoke.models]]``, docs/profile.md)."""

    path: str
    inputs: str = ""  # a .npy/.npz of sample inputs ("" : seeded inputs from the model's signature)
    loader: str = "auto"  # auto | keras | saved_model | tflite
    rtol: float = MODEL_RTOL
    atol: float = MODEL_ATOL
    imports: list[str] = field(default_factory=list)  # modules that register the model's custom objects


@dataclass
class Smoke:
    imports: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    models: list[SmokeModel] = field(default_factory=list)


@dataclass
class Project:
    """The tool that owns the env (rebuild.project.detect): what would undo an upgrade of the env alone."""

    manager: str = ""  # "" (a plain env) | uv | poetry | requirements | conda
    root: str = ""  # the project folder
    files: list[str] = field(default_factory=list)  # its files that pin the env (pyproject.toml, uv.lock ...)
    drivable: bool = False  # tfrebuild upgrades those files with the env


@dataclass
class Profile:
    schema: int = SCHEMA_VERSION
    tool: str = ""
    created: str = ""
    source: str = ""
    env_kind: str = ""
    lock: str = ""
    interpreter: Interpreter = field(default_factory=Interpreter)
    platform: Platform = field(default_factory=Platform)
    tensorflow: TensorFlow = field(default_factory=TensorFlow)
    gpu: Gpu = field(default_factory=Gpu)
    index: Index = field(default_factory=Index)
    requested: list[str] = field(default_factory=list)
    constraints: dict[str, str] = field(default_factory=dict)
    smoke: Smoke = field(default_factory=Smoke)
    project: Project = field(default_factory=Project)
    packages: list[Package] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)

    def package(self, name: str) -> Package | None:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        return None

    def pins(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}


# --- generic dataclass <-> dict conversion ---------------------------------


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def to_dict(obj) -> dict:
    """A dataclass as a dict in field order, leaving out fields at their default.

    This keeps the TOML short; :func:`from_dict` restores the defaults, so the
    round trip stays exact. ``schema`` is always written.
    """
    out: dict = {}
    for f in dataclasses.fields(obj):
        raw = getattr(obj, f.name)
        if f.name != "schema" and raw == _default(f):
            continue
        out[f.name] = _encode(raw)
    return out


def _encode(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def from_dict(cls, data: dict, where: str = ""):
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs = {k: _decode(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _decode(hint, value, where: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(args[0], value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table")
        _, item = typing.get_args(hint)
        return {k: _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint in (str, int, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    return value


# --- TOML -------------------------------------------------------------------

_HEADER = (
    "# tfrebuild profile: a record of one Python environment.\n"
    "# Edit [constraints] and [smoke] freely; the rest is written by tfrebuild.\n"
    "# Schema: docs/profile.md\n"
)


def dumps(profile: Profile) -> str:
    data = to_dict(profile)
    # Always write the user-editable tables so users see where to edit.
    data.setdefault("constraints", {})
    data.setdefault("smoke", {})
    data["smoke"].setdefault("imports", [])
    data["smoke"].setdefault("commands", [])
    field_order = [f.name for f in dataclasses.fields(Profile)]
    keys = sorted(data, key=field_order.index)
    # Scalars first (TOML needs them before any table), then tables in field order.
    ordered = {k: data[k] for k in keys if not _is_table(data[k])}
    ordered.update((k, data[k]) for k in keys if _is_table(data[k]))
    return _HEADER + tomli_w.dumps(ordered)


def _is_table(value) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and bool(value) and isinstance(value[0], dict))


def loads(text: str, where: str = "profile") -> Profile:
    from rebuild.util import fs

    try:
        data = fs.toml_document(text)  # nesting capped: a hostile profile is one error, not a RecursionError
    except tomllib.TOMLDecodeError as exc:
        raise UserError(
            f"{where} is not valid TOML: {exc}.", "Fix the file or take a new one with `tfrebuild snapshot`."
        ) from exc
    schema = data.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise UserError(
            f"{where} has profile schema {schema!r}; this tfrebuild reads schema {SCHEMA_VERSION}.",
            "Upgrade tfrebuild, or take a new snapshot with this version.",
        )
    try:
        profile = from_dict(Profile, data)
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{where} is not a valid profile: {shorten(str(exc), 200)}.", "See docs/profile.md for the schema."
        ) from exc
    validate(profile, where)
    return profile


def non_index_sources(profile: Profile) -> list[str]:
    """The packages a profile says come from somewhere other than an index, for the user to review."""
    from rebuild.knowledge.tf import bundled_seed

    return [
        f"{p.name} {p.version} ({p.source}: {shorten(p.url, 120)})"
        for p in profile.packages
        if p.source != "index" and not bundled_seed(p.name, p.url or "")
    ]


def load(path: str | Path) -> Profile:
    from rebuild.util import fs

    path = Path(path)
    try:
        data = fs.read_document(path)  # a regular file, no link followed, size capped: a FIFO or device is refused
    except FileNotFoundError as exc:
        raise UserError(
            f"Profile {path} does not exist.", "Check the path, or create one with `tfrebuild snapshot`."
        ) from exc
    except OSError as exc:
        raise UserError(
            f"Profile {path} cannot be read: {exc.strerror or exc}.",
            "Give --profile a profile file (a regular file, not a link, a FIFO or a device).",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"Profile {path} cannot be read: it is not UTF-8 text (byte {exc.start}).",
            "Fix the file or take a new one with `tfrebuild snapshot`.",
        ) from None
    return loads(text, where=str(path))


def as_json_dict(profile: Profile) -> dict:
    """The same data as the TOML, for ``--json``."""
    return dataclasses.asdict(profile)
