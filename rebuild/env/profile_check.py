"""The grammar of every profile field, checked once by :func:`validate` (run by every load) before any of it reaches
uv, a requirements file or a shell: a value that does not parse as what its field holds is refused with the field,
the value (shortened by :func:`shorten`) and the fix. Split from :mod:`rebuild.env.profile` (same code).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from rebuild.errors import UserError

if TYPE_CHECKING:
    from rebuild.env.profile import Profile, SmokeModel

# A profile may come from anywhere (a colleague, a bundle, a download). Every field is checked here, once,
# before any of it reaches uv, a requirements file or a shell: a value that does not parse as what the field
# holds is refused with the field, the value (shortened) and the fix.

MODEL_LOADERS = ("auto", "keras", "saved_model", "tflite")
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
    _check_imports(
        where,
        f"{at}.imports",
        model.imports,
        "Give the import name of the package that registers the model's custom objects.",
    )


def _check_imports(where: str, at: str, names: list[str], hint: str) -> None:
    """Each of ``names`` (the list at ``at``) is a module name to import."""
    for k, imp in enumerate(names):
        if not _DOTTED.match(imp) or len(imp) > MAX_NAME:
            raise _refuse(where, f"{at}[{k}]", imp, "a module name (dotted identifiers)", hint)


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
    _check_imports(
        where, "smoke.imports", profile.smoke.imports, "Give import names such as tensorflow or tensorflow.keras."
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
