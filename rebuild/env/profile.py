"""The profile: a versioned TOML record of one Python environment.

A profile is plain data (dataclasses) with an exact round trip:
``loads(dumps(p)) == p``. Keys are written in a fixed order and lists are
sorted by the code that builds them, so two snapshots of the same
environment diff cleanly. The schema is documented in ``docs/profile.md``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import tomli_w
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

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


MODEL_LOADERS = ("auto", "keras", "saved_model", "tflite")
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


# --- grammar of every field ---------------------------------------------------
#
# A profile may come from anywhere (a colleague, a bundle, a download). Every field is checked here, once,
# before any of it reaches uv, a requirements file or a shell: a value that does not parse as what the field
# holds is refused with the field, the value (shortened) and the fix.

_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)  # PEP 508 names
_REQUESTED = re.compile(r"^(?P<name>[A-Z0-9][A-Z0-9._-]*)(\[(?P<extras>[A-Z0-9._,\s-]*)\])?$", re.IGNORECASE)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX_OR_REF = re.compile(r"^[A-Za-z0-9._/+@-]*$")
SOURCES = ("index", "url", "vcs", "path", "editable")
PROJECT_MANAGERS = ("", "uv", "poetry", "requirements", "conda")
LOCATIONS = ("env", "user", "system")
VCS = ("", "git", "hg", "svn", "bzr")
INDEX_STRATEGIES = ("", "first-index", "unsafe-first-match", "unsafe-best-match")
MAX_NAME = 200
MAX_TEXT = 8192


def shorten(value, limit: int = 80) -> str:
    """``value`` for a message: at most ``limit`` characters, control characters shown escaped."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")
    return (
        text
        if len(text) <= limit
        else f"{text[:limit]}... ({len(value) if isinstance(value, str) else len(text)} characters)"
    )


def _refuse(where: str, field_name: str, value, what: str, fix: str) -> UserError:
    return UserError(
        f"{where} is not a valid profile: {field_name} = '{shorten(value)}' is not {what}.",
        f"{fix} Fix the field, or take a new profile with `tfrebuild snapshot` (docs/profile.md "
        "describes every field). Nothing was run.",
    )


def _strings(obj, at: str):
    """Every string field of a profile, with its dotted place."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _strings(getattr(obj, f.name), f"{at}.{f.name}" if at else f.name)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            name = getattr(v, "name", None)
            shown = f" ({shorten(name, 40)})" if isinstance(name, str) and name else ""
            yield from _strings(v, f"{at}[{i}]{shown}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k, f"{at} (key)"
            yield from _strings(v, f"{at}.{k}")
    elif isinstance(obj, str):
        yield obj, at


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in schemes or any(c.isspace() for c in value):
        return False
    return parts.scheme.lower() == "file" or bool(parts.hostname)


def _check_version(where: str, at: str, value: str, optional: bool = False) -> None:
    if optional and not value:
        return
    try:
        Version(value)
    except InvalidVersion:
        raise _refuse(where, at, value, "a version (PEP 440)", "Give a version such as 2.18.1.") from None
    if len(value) > MAX_NAME:
        raise _refuse(where, at, value, "a version (PEP 440) of a sane length", "Give a version such as 2.18.1.")


def _check_name(where: str, at: str, value: str, optional: bool = False) -> None:
    if optional and not value:
        return
    if len(value) > MAX_NAME or not _NAME.match(value):
        raise _refuse(
            where,
            at,
            value,
            "a package name (PEP 508)",
            "Give the distribution's name only, e.g. numpy (no versions, URLs or options).",
        )


def _check_requirement(where: str, at: str, text: str) -> None:
    """A constraint line: a requirement with a specifier or marker, never a URL or an option."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        raise _refuse(
            where, at, text, "a requirement (PEP 508)", "Write it as name<specifier>, e.g. numpy<2."
        ) from None
    if req.url or len(req.name) > MAX_NAME:
        raise _refuse(where, at, text, "a requirement without a URL", "Constraints name versions, e.g. numpy<2.")


def _check_location(where: str, at: str, value: str, *, path_ok: bool) -> None:
    from rebuild.index import config as indexconf

    problem = indexconf.malformed(value, path_ok=path_ok)
    if problem or value != value.strip():
        raise _refuse(
            where,
            at,
            value,
            f"a usable index location ({problem or 'white space around it'})",
            "Give an https://, http:// or file:// URL or a local folder.",
        )


def _check_model(where: str, at: str, model: SmokeModel) -> None:
    if not model.path.startswith("/"):
        raise _refuse(where, f"{at}.path", model.path, "an absolute path", "Give the saved model's full path.")
    if model.inputs and (not model.inputs.startswith("/") or not model.inputs.endswith((".npy", ".npz"))):
        raise _refuse(
            where,
            f"{at}.inputs",
            model.inputs,
            "the full path of a .npy or .npz file",
            "Give sample inputs saved with numpy.save or numpy.savez, or leave inputs out.",
        )
    if model.loader not in MODEL_LOADERS:
        raise _refuse(where, f"{at}.loader", model.loader, f"one of {', '.join(MODEL_LOADERS)}", "Use auto.")
    for key in ("rtol", "atol"):
        value = getattr(model, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
            raise _refuse(where, f"{at}.{key}", value, "a number of 0 or more", "Write e.g. 1e-4.")
    for k, imp in enumerate(model.imports):
        if not _DOTTED.match(imp) or len(imp) > MAX_NAME:
            raise _refuse(
                where,
                f"{at}.imports[{k}]",
                imp,
                "a module name (dotted identifiers)",
                "Give the import name of the package that registers the model's custom objects.",
            )


def validate(profile: Profile, where: str = "profile") -> None:
    """Check every field against its grammar; raise a :class:`UserError` naming the first bad one."""
    for value, at in _strings(profile, ""):
        if "\x00" in value or (("\n" in value or "\r" in value) and not at.startswith(("warnings", "index.settings"))):
            raise _refuse(
                where,
                at,
                value,
                "one line of text (it holds a line break or a NUL character)",
                "Remove the line break; a profile field is never more than one line.",
            )
        if len(value) > MAX_TEXT and not at.startswith("warnings"):
            raise _refuse(where, at, value, f"text of at most {MAX_TEXT} characters", "Shorten it.")
    _check_version(where, "interpreter.version", profile.interpreter.version, optional=True)
    t = profile.tensorflow
    _check_name(where, "tensorflow.distribution", t.distribution, optional=True)
    _check_version(where, "tensorflow.version", t.version, optional=True)
    _check_version(where, "tensorflow.keras_version", t.keras_version, optional=True)
    for i, name in enumerate(t.installed_variants):
        _check_name(where, f"tensorflow.installed_variants[{i}]", name)
    for key in profile.gpu.environ:
        if not _ENV_NAME.match(key):
            raise _refuse(
                where,
                f"gpu.environ.{shorten(key, 40)}",
                key,
                "an environment variable name",
                "Use letters, digits and underscores.",
            )
    i = profile.index
    for at, url in [("index.index_url", i.index_url)] + [
        (f"index.extra_index_urls[{n}]", u) for n, u in enumerate(i.extra_index_urls)
    ]:
        if url:
            _check_location(where, at, url, path_ok=False)
    for n, url in enumerate(i.find_links):
        _check_location(where, f"index.find_links[{n}]", url, path_ok=True)
    for n, c in enumerate(i.constraints):
        if not c.strip():
            raise _refuse(where, f"index.constraints[{n}]", c, "a constraints file", "Give a path or a URL.")
    if i.index_strategy not in INDEX_STRATEGIES:
        raise _refuse(
            where,
            "index.index_strategy",
            i.index_strategy,
            f"one of {', '.join(INDEX_STRATEGIES[1:])}",
            "Leave it out for uv's default.",
        )
    for n, line in enumerate(i.constraint_lines):
        _check_requirement(where, f"index.constraint_lines[{n}]", line)
    for n, entry in enumerate(profile.requested):
        m = _REQUESTED.match(entry)
        if (
            not m
            or not _NAME.match(m.group("name"))
            or len(entry) > MAX_NAME
            or not all(_NAME.match(e.strip()) for e in (m.group("extras") or "").split(",") if e.strip())
        ):
            raise _refuse(
                where,
                f"requested[{n}]",
                entry,
                "a package name (PEP 508, extras allowed)",
                "List requested packages by name only, e.g. pandas or tensorflow[and-cuda]; where a "
                "package comes from is its [[packages]] source, not part of its name.",
            )
    for name, spec in profile.constraints.items():
        _check_name(where, "constraints key", name)
        _check_requirement(where, f"constraints.{name}", f"{name}{spec}")
        if spec.strip().startswith(("@", "[")):
            raise _refuse(where, f"constraints.{name}", spec, "a version specifier", 'Write it as e.g. "<2".')
    proj = profile.project
    if proj.manager not in PROJECT_MANAGERS:
        raise _refuse(
            where,
            "project.manager",
            proj.manager,
            f"one of {', '.join(PROJECT_MANAGERS[1:])}",
            "Leave the [project] table out for a plain env.",
        )
    if proj.root and not proj.root.startswith("/"):
        raise _refuse(where, "project.root", proj.root, "an absolute path", "Give the project folder's full path.")
    for n, name in enumerate(proj.files):
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise _refuse(
                where,
                f"project.files[{n}]",
                name,
                "a file name in the project folder",
                "List names such as pyproject.toml or uv.lock.",
            )
    for n, imp in enumerate(profile.smoke.imports):
        if not _DOTTED.match(imp) or len(imp) > MAX_NAME:
            raise _refuse(
                where,
                f"smoke.imports[{n}]",
                imp,
                "a module name (dotted identifiers)",
                "Give import names such as tensorflow or tensorflow.keras.",
            )
    for n, model in enumerate(profile.smoke.models):
        _check_model(where, f"smoke.models[{n}]", model)
    for n, pkg in enumerate(profile.packages):
        at = f"packages[{n}] ({shorten(pkg.name, 40)})"
        _check_name(where, f"{at}.name", pkg.name)
        _check_version(where, f"{at}.version", pkg.version)
        for k, parent in enumerate(pkg.required_by):
            _check_name(where, f"{at}.required_by[{k}]", parent)
        if pkg.location not in LOCATIONS:
            raise _refuse(where, f"{at}.location", pkg.location, f"one of {', '.join(LOCATIONS)}", "Use env.")
        if pkg.source not in SOURCES:
            raise _refuse(
                where,
                f"{at}.source",
                pkg.source,
                f"one of {', '.join(SOURCES)}",
                "Use index for packages from a package index.",
            )
        if pkg.vcs not in VCS:
            raise _refuse(where, f"{at}.vcs", pkg.vcs, f"one of {', '.join(VCS[1:])}", "Leave it out.")
        for key in ("commit", "requested_revision"):
            if not _HEX_OR_REF.match(getattr(pkg, key)):
                raise _refuse(where, f"{at}.{key}", getattr(pkg, key), "a commit or revision", "Leave it out.")
        schemes = {
            "index": (),
            "url": ("https", "http", "file"),
            "vcs": ("https", "http", "ssh", "file", "git"),
            "path": ("file",),
            "editable": ("file",),
        }[pkg.source]
        if pkg.source == "index":
            if pkg.url or pkg.vcs or pkg.commit:
                raise _refuse(
                    where,
                    f"{at}.url",
                    pkg.url or pkg.vcs or pkg.commit,
                    "empty for an index package",
                    "An index package has no url, vcs or commit; set source to its kind or drop them.",
                )
        elif not _is_url(
            pkg.url.split("+", 1)[1] if pkg.source == "vcs" and "+" in pkg.url.split("://")[0] else pkg.url, schemes
        ):
            raise _refuse(
                where,
                f"{at}.url",
                pkg.url,
                f"a {'/'.join(schemes)} URL for a {pkg.source} source",
                "Give the URL from the package's direct_url.json.",
            )


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
