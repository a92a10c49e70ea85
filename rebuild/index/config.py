"""Which package indexes the user has configured, for pip and for uv.

uv ignores pip's configuration, yet a user whose ``pip.conf`` points at a
company mirror expects tfrebuild to use that mirror. :func:`discover` reads
both tools' configuration files and environment variables, merges them with
uv's settings taking precedence over pip's, and returns an
:class:`~rebuild.profile.Index` that :func:`uv_args` turns into explicit uv
flags. Every value is recorded with where it came from; passwords and tokens
in URLs are redacted before anything is written or printed.
"""

from __future__ import annotations

import configparser
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from rebuild.index.settings import Index, IndexSetting
from rebuild.errors import UserError
from rebuild.util import proc

PYPI = "https://pypi.org/simple"


_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=(?=[a-zA-Z][a-zA-Z0-9+.-]*://|/)")


def strip_name(value: str) -> str:
    """uv's named-index form ``name=URL`` → ``URL``."""
    return _NAMED.sub("", value.strip(), count=1)


def named_credentials(value: str, environ: dict[str, str]) -> str:
    """``name=URL`` (or a URL and ``name``) with uv's ``UV_INDEX_<NAME>_USERNAME`` / ``_PASSWORD`` put in the URL.

    uv applies those variables to a named index only; tfrebuild passes uv plain URLs
    (``--index-url``), so the credentials travel in the URL, as with pip's own settings.
    """
    match = _NAMED.match(value.strip())
    if not match:
        return value
    return with_index_credentials(match.group(1), strip_name(value), environ)


def with_index_credentials(name: str, url: str, environ: dict[str, str]) -> str:
    key = re.sub(r"[^A-Z0-9]", "_", name.upper())
    user = environ.get(f"UV_INDEX_{key}_USERNAME", "")
    password = environ.get(f"UV_INDEX_{key}_PASSWORD", "")
    if not (user or password) or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    old_user = unquote(parts.username or "")
    userinfo = quote(user or old_user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def redact(value: str) -> str:
    """Hide the secret part of credentials in a URL (``user:****@host``, a bare token ``****@host``).

    One rule for URLs and free text alike: :func:`rebuild.util.proc.redact_line`.
    """
    return proc.redact_line(value)


@dataclass
class _Layer:
    origin: str
    values: dict[str, object] = field(default_factory=dict)
    implied: dict[str, object] = field(default_factory=dict)  # applied, but not a user setting


_SPLIT = re.compile(r"[\s]+")


def _words(value: str) -> list[str]:
    return [w for w in _SPLIT.split(value.strip()) if w]


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _pip_value(key: str, raw: str):
    """A pip setting (config file or PIP_* variable) as the Index field ``key`` holds it."""
    if key == "no_index":
        return _truthy(raw)
    return raw.strip() if key == "index_url" else _words(raw)


def _env_layer(
    origin: str, environ: dict[str, str], variables: tuple[tuple[str, str], ...], value: Callable[[str, str], object]
) -> _Layer:
    """The ``variables`` ((name, Index field), in order) ``environ`` sets, read by ``value``: a list adds up."""
    layer = _Layer(origin)
    for var, norm in variables:
        parsed = value(norm, environ[var]) if environ.get(var) else None
        if isinstance(parsed, list):
            layer.values.setdefault(norm, []).extend(parsed)
        elif parsed is not None:
            layer.values[norm] = parsed
    return layer


_PIP_KEYS = (  # pip's options that name indexes and constraints, as Index fields (PIP_<OPTION> sets each too)
    ("index-url", "index_url"),
    ("extra-index-url", "extra_index_urls"),
    ("find-links", "find_links"),
    ("no-index", "no_index"),
    ("constraint", "constraints"),
)
_UV_VARIABLES = (
    ("UV_INDEX_URL", "index_url"),
    ("UV_DEFAULT_INDEX", "index_url"),
    ("UV_EXTRA_INDEX_URL", "extra_index_urls"),
    ("UV_INDEX", "extra_index_urls"),
    ("UV_FIND_LINKS", "find_links"),
    ("UV_NO_INDEX", "no_index"),
    ("UV_INDEX_STRATEGY", "index_strategy"),
    ("UV_CONSTRAINT", "constraints"),
)


def _pip_files(environ: dict[str, str], home: Path, prefix: Path | None) -> list[Path]:
    config_file = environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    xdg_home = Path(environ.get("XDG_CONFIG_HOME", home / ".config"))
    files += [home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    if prefix is not None:
        files.append(prefix / "pip.conf")
    if config_file:
        files.append(Path(config_file))
    return files


def _home(home: Path | None) -> Path:
    """``home``, else the user's home folder; ``/`` where there is none (a uid without a passwd entry)."""
    if home is not None:
        return Path(home)
    try:
        return Path.home()
    except (RuntimeError, KeyError, OSError):
        return Path("/")


def _pip_parsed(
    environ: dict[str, str], home: Path, prefix: Path | None
) -> Iterator[tuple[Path, configparser.RawConfigParser]]:
    """Each pip configuration file that exists and parses, in pip's order, with its parser."""
    for path in _pip_files(environ, home, prefix):
        parser = configparser.RawConfigParser()
        try:
            if not os.path.isfile(path):  # Path.is_file raises on a folder it may not enter
                continue
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # unreadable (another user's HOME after `su`): as pip, go on without it
        yield path, parser


def _pip_layers(environ: dict[str, str], home: Path, prefix: Path | None) -> list[_Layer]:
    layers = []
    for path, parser in _pip_parsed(environ, home, prefix):
        layer = _Layer(f"pip config {path}")
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key, norm in _PIP_KEYS:
                if parser.has_option(section, key):
                    layer.values[norm] = _pip_value(norm, parser.get(section, key))
        if layer.values:
            # pip merges every configured index and picks the best version across them.
            layer.implied["index_strategy"] = "unsafe-best-match"
            layers.append(layer)
    variables = tuple(("PIP_" + key.upper().replace("-", "_"), norm) for key, norm in _PIP_KEYS)
    env_layer = _env_layer("environment (PIP_*)", environ, variables, _pip_value)
    if env_layer.values:
        env_layer.implied["index_strategy"] = "unsafe-best-match"
        layers.append(env_layer)
    return layers


#: pip's TLS settings and the variable uv (and tfrebuild's own HTTP client) reads for each.
_PIP_TLS = (("cert", "PIP_CERT", "SSL_CERT_FILE"), ("client-cert", "PIP_CLIENT_CERT", "SSL_CLIENT_CERT"))


def tls_environment(
    environ: dict[str, str] | None = None, home: Path | None = None, prefix: Path | None = None
) -> dict[str, str]:
    """pip's ``cert`` / ``client-cert`` (pip.conf's ``[global]``/``[install]``, ``PIP_CERT``, ``PIP_CLIENT_CERT``)
    as the variables uv reads (``SSL_CERT_FILE``, ``SSL_CLIENT_CERT``), for those not set already.

    A user whose pip trusts a company CA through ``cert = /path/ca.pem`` expects uv to trust it too; uv reads no
    pip configuration, so tfrebuild hands it over, as it does the index URLs. Paths only, never secrets.
    """
    environ = dict(os.environ if environ is None else environ)
    found: dict[str, str] = {}
    for _path, parser in _pip_parsed(environ, _home(home), prefix):
        for key, _pip_var, var in _PIP_TLS:
            for section in ("global", "install"):
                if parser.has_option(section, key) and parser.get(section, key).strip():
                    found[var] = os.path.abspath(os.path.expanduser(parser.get(section, key).strip()))
    for _key, pip_var, var in _PIP_TLS:
        if environ.get(pip_var, "").strip():
            found[var] = os.path.abspath(os.path.expanduser(environ[pip_var].strip()))
    return {var: value for var, value in found.items() if not environ.get(var)}


def _uv_table(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("uv", {})
    merged = dict(data)
    merged.update(data.get("pip", {}) if isinstance(data.get("pip"), dict) else {})
    return merged


def _uv_files(environ: dict[str, str], home: Path, cwd: Path) -> list[Path]:
    """uv's configuration files in force, in uv's order (system, user, then the project's own)."""
    if _truthy(environ.get("UV_NO_CONFIG", "")):
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "uv" / "uv.toml" for d in xdg_dirs] + [Path("/etc/uv/uv.toml")]
    files.append(Path(environ.get("XDG_CONFIG_HOME", home / ".config")) / "uv" / "uv.toml")
    for candidate in (cwd / "uv.toml", cwd / "pyproject.toml"):
        if os.path.isfile(candidate):
            files.append(candidate)
            break
    return [path for path in files if os.path.isfile(path)]  # os.path: False, not an error, where it may not look


def build_constraint_dependencies(
    environ: dict[str, str] | None = None, home: Path | None = None, cwd: Path | None = None
) -> list[str]:
    """uv's ``build-constraint-dependencies`` lines from its configuration files (they add up, as constraints only
    narrow): the build-time caps of sdists uv builds, which tfrebuild passes itself since it runs uv with
    ``--no-config``."""
    environ = dict(os.environ if environ is None else environ)
    lines: list[str] = []
    for path in _uv_files(environ, _home(home), Path(cwd or Path.cwd())):
        value = _uv_table(path).get("build-constraint-dependencies")
        if isinstance(value, list):
            lines += [str(line) for line in value if isinstance(line, str) and line.strip()]
    return list(dict.fromkeys(lines))


def _uv_layers(environ: dict[str, str], home: Path, cwd: Path) -> list[_Layer]:
    def uv_value(norm: str, raw: str) -> object:
        if norm == "index_url":
            return strip_name(named_credentials(raw, environ))
        if norm == "index_strategy":
            return raw.strip()
        if norm == "no_index":
            return _truthy(raw)
        if norm == "find_links":
            return [w for w in re.split(r"[\s,]+", raw) if w]
        return [strip_name(named_credentials(w, environ)) for w in _words(raw)]

    layers = []
    for path in _uv_files(environ, home, cwd):
        table = _uv_table(path)
        layer = _Layer(f"uv config {path}")
        if "index-url" in table:
            layer.values["index_url"] = str(table["index-url"])
        if "extra-index-url" in table:
            layer.values["extra_index_urls"] = [str(u) for u in table["extra-index-url"]]
        for index in table.get("index", []) if isinstance(table.get("index"), list) else []:
            if not isinstance(index, dict) or "url" not in index:
                continue
            url = str(index["url"])
            if isinstance(index.get("name"), str):
                url = with_index_credentials(index["name"], url, environ)
            if index.get("default"):
                layer.values["index_url"] = url
            else:
                layer.values.setdefault("extra_index_urls", []).append(url)
        if "find-links" in table:
            layer.values["find_links"] = [str(u) for u in table["find-links"]]
        if "no-index" in table:
            layer.values["no_index"] = bool(table["no-index"])
        if "index-strategy" in table:
            layer.values["index_strategy"] = str(table["index-strategy"])
        if isinstance(table.get("constraint-dependencies"), list):
            layer.values["constraint_lines"] = [str(c) for c in table["constraint-dependencies"]]
        if layer.values:
            layers.append(layer)
    env_layer = _env_layer("environment (UV_*)", environ, _UV_VARIABLES, uv_value)
    if env_layer.values:
        layers.append(env_layer)
    return layers


def discover(
    prefix: Path | None = None,
    environ: dict[str, str] | None = None,
    home: Path | None = None,
    cwd: Path | None = None,
) -> Index:
    """The index settings in force, with real (unredacted) values.

    ``prefix`` is the environment's folder (pip reads ``<prefix>/pip.conf``).
    Later layers override earlier ones: pip files, ``PIP_*``, uv files, ``UV_*``.
    """
    environ = dict(os.environ if environ is None else environ)
    home = _home(home)
    cwd = Path(cwd or Path.cwd())
    layers = _pip_layers(environ, home, prefix) + _uv_layers(environ, home, cwd)
    index = Index(index_url=PYPI)
    # Constraints only restrict, so every tool's are kept: within pip (or within uv) a later layer
    # replaces an earlier one's, as each tool does; pip's, uv's and uv's constraint-dependencies add up.
    constraints: dict[tuple[str, str], list[str]] = {}
    for layer in layers:
        for key, value in layer.implied.items():
            setattr(index, key, value)
        for key, value in layer.values.items():
            if key == "constraints":
                value = [_absolute(c, cwd) for c in value]
            if key in ("constraints", "constraint_lines"):
                constraints[(_tool(layer.origin), key)] = list(value)
            else:
                setattr(index, key, value)
            shown = (
                value if isinstance(value, str) else " ".join(value) if isinstance(value, list) else str(value).lower()
            )
            index.settings.append(IndexSetting(origin=layer.origin, key=key, value=redact(str(shown))))
    index.constraints = [c for (tool, key), v in sorted(constraints.items()) if key == "constraints" for c in v]
    lines = [line for (tool, key), v in sorted(constraints.items()) if key == "constraint_lines" for line in v]
    index.constraint_lines = list(dict.fromkeys(constraint_file_lines(index.constraints) + lines))
    return index


def _tool(origin: str) -> str:
    return "uv" if origin.startswith("uv ") or origin == "environment (UV_*)" else "pip"


def _absolute(path: str, cwd: Path) -> str:
    """A constraint file as an absolute path (pip and uv read a relative one from the working directory)."""
    return path if "://" in path else str((cwd / Path(path).expanduser()).resolve())


def _requirement_lines(path: Path, seen: set[Path]) -> list[tuple[Path, int, str]]:
    """(file, line number, requirement) of a constraints file, following ``-c``/``-r`` includes."""
    if path in seen:
        return []
    seen.add(path)
    from rebuild.util import fs

    try:
        text = fs.read_document(path).decode("utf-8")  # a FIFO or device is not read (nor waited on)
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include = re.match(r"^(?:-c|-r|--constraint|--requirement)(?:\s+|=)(\S+)$", line)
        if include:
            out += _requirement_lines((path.parent / include.group(1)).resolve(), seen)
        elif not line.startswith("-"):
            out.append((path, number, line))
    return out


def constraint_file_lines(paths: list[str]) -> list[str]:
    """The requirement lines of these constraint files (URLs are left to uv), in order."""
    seen: set[Path] = set()
    return [line for p in paths if "://" not in p for _, _, line in _requirement_lines(Path(p), seen)]


@dataclass(frozen=True)
class Constraint:
    """One configured constraint and where it was set, for messages."""

    text: str  # e.g. "tensorflow-cpu<2.16"
    name: str  # canonical project name
    specifier: str
    where: str  # e.g. "line 2 of /etc/pip-constraints.txt, set by pip config /etc/pip.conf"


def constraints_of(index: Index) -> list[Constraint]:
    """Every constraint of ``index`` (its files' lines and its recorded lines), with its origin."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    origins: dict[str, str] = {}
    for setting in index.settings:
        if setting.key == "constraints":
            for path in setting.value.split():
                origins[path] = setting.origin
        elif setting.key == "constraint_lines":
            origins.setdefault(f"line:{setting.value}", setting.origin)
    found: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for path in index.constraints:
        if "://" in path:
            continue
        for file, number, line in _requirement_lines(Path(path), seen):
            by = origins.get(redact(path)) or origins.get(path)
            found.append((line, f"line {number} of {file}" + (f", set by {by}" if by else "")))
    known = {text for text, _ in found}
    for line in index.constraint_lines:
        if line in known:
            continue
        by = next((o for k, o in origins.items() if k.startswith("line:") and line in k), "")
        found.append((line, f"set by {by}" if by else "recorded in the profile"))
    out = []
    for text, where in found:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        out.append(Constraint(redact_text(text), canonicalize_name(req.name), str(req.specifier), where))
    return out


def redact_text(text: str) -> str:
    """Credentials hidden in every URL of ``text`` (a constraint line may name a URL)."""
    from rebuild.util.proc import redact_line

    return redact_line(text)


def redacted(index: Index) -> Index:
    """A copy of ``index`` that is safe to write down or print."""
    return Index(
        index_url=redact(index.index_url),
        extra_index_urls=[redact(u) for u in index.extra_index_urls],
        find_links=[redact(u) for u in index.find_links],
        no_index=index.no_index,
        index_strategy=index.index_strategy,
        constraints=list(index.constraints),
        constraint_lines=[redact_text(line) for line in index.constraint_lines],
        settings=list(index.settings),
    )


def override(
    index: Index,
    *,
    index_url: str | None = None,
    extra_index_urls: list[str] | None = None,
    find_links: list[str] | None = None,
    offline: bool = False,
    constraints: list[str] | None = None,
) -> Index:
    """Apply command-line flags on top of the discovered settings (``--constraint`` files add to the configured)."""
    out = Index(**{k: getattr(index, k) for k in index.__dataclass_fields__})
    out.settings = list(index.settings)
    out.constraints, out.constraint_lines = list(index.constraints), list(index.constraint_lines)
    if constraints:
        files = [str(Path(c).expanduser().resolve()) for c in constraints]
        for given, path in zip(constraints, files, strict=True):
            if not Path(path).is_file():
                raise UserError(
                    f"The constraint file {given} given with --constraint does not exist or is not a file.",
                    "Check the path; nothing was changed.",
                )
        out.constraints += [f for f in files if f not in out.constraints]
        out.constraint_lines = list(dict.fromkeys(out.constraint_lines + constraint_file_lines(files)))
        out.settings.append(IndexSetting("command line", "constraints", " ".join(files)))
    if index_url:
        out.index_url = index_url
        out.settings.append(IndexSetting("command line", "index_url", redact(index_url)))
    if extra_index_urls:
        out.extra_index_urls = list(extra_index_urls)
        out.settings.append(IndexSetting("command line", "extra_index_urls", " ".join(map(redact, extra_index_urls))))
    if find_links:
        out.find_links = [str(Path(f).resolve()) if "://" not in str(f) else str(f) for f in find_links]
        out.settings.append(IndexSetting("command line", "find_links", " ".join(map(redact, out.find_links))))
    if offline and find_links:
        out.no_index = True
    validate(out)
    return out


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_NOUNS = {"index_url": "package index", "extra_index_urls": "extra package index", "find_links": "find-links location"}


def malformed(value: str, *, path_ok: bool = False) -> str:
    """Why ``value`` is not a usable index URL (or, with ``path_ok``, find-links location); "" when it is.

    An index is an http(s):// or file:// URL or a local path (absolute, ``./``, ``~``); a find-links
    location may also be a relative path.
    """
    value = value.strip()
    if not value:
        return "it is empty"
    scheme = _SCHEME.match(value)
    if scheme:
        if any(c.isspace() for c in value):
            return "a URL cannot contain white space"
        name = scheme.group(1).lower()
        if name == "file":
            return ""
        if name not in ("http", "https"):
            return f"tfrebuild reads http://, https:// and file:// URLs, not {name}://"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            return f"it is not a valid URL ({exc})"
        return "" if parts.hostname else "it names no host"
    if path_ok or value.startswith(("/", "./", "../", "~")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return ""
    return "it is neither a URL (http://, https://, file://) nor a path"


def _origin(index: Index, key: str) -> str:
    origins = [s.origin for s in index.settings if s.key == key]
    return f" (from {origins[-1]})" if origins else ""


def validate(index: Index) -> None:
    """Refuse a malformed index URL (exit 2) or a local index / find-links folder that does not exist (exit 1).

    Run before uv is: uv reads a URL that is not one, or a missing ``file://`` index, as an index that
    lacks the package, and the failure would read as a version problem.
    """
    from rebuild.errors import UserError
    from rebuild.index.http import local_path

    entries = (
        []
        if index.no_index
        else [("index_url", index.index_url)] + [("extra_index_urls", u) for u in index.extra_index_urls]
    )
    entries += [("find_links", f) for f in index.find_links]
    hint = (
        "Fix it on the command line (--index-url, --extra-index-url, --find-links), in the PIP_*/UV_* "
        "variable, or in the pip/uv configuration file named."
    )
    for key, value in entries:
        if not value and key == "index_url":
            continue  # the default index
        where = _origin(index, key)
        problem = malformed(value, path_ok=key == "find_links")
        if problem:
            raise UserError(f"The {_NOUNS[key]} '{redact(value)}'{where} is not usable: {problem}.", hint)
        local = local_path(value.strip())
        if local is not None and not local.exists():
            raise UserError(
                f"The {_NOUNS[key]} {redact(value)}{where} cannot be read: {local} does not exist.",
                hint + " Or create the folder.",
                exit_code=1,
            )


def uv_args(index: Index, offline: bool = False, *, for_install: bool = False) -> list[str]:
    """Explicit uv flags for these settings (uv is run with ``--no-config``).

    Constraints are for resolving: an install of a lock (``for_install``) never takes them, since a
    hashed install refuses any requirement not pinned with ``==`` and a lock needs no narrowing.

    Under ``unsafe-best-match`` (pip's view: every source pooled) the primary index is searched first, then
    the extras in their order, and it stays the default index. uv takes a version's files from the first
    index that lists the version when it checks a preference (an installed pin), so a mirror listed before
    the primary that holds the version with fewer files would hide the primary's wheel for this Python; with
    the primary first, every version the primary has gets all of the primary's files. Find-links folders
    are flat indexes whose files uv adds to a version's files from any index. Under uv's own strategies
    (``first-index``, ``unsafe-first-match``) uv's order is kept: extras first, the default index last.
    See "Index settings" in docs/design.md.
    """
    args: list[str] = []
    if index.no_index:
        args.append("--no-index")
    elif index.index_strategy == "unsafe-best-match":
        primary = index.index_url or PYPI
        args += ["--index", primary]
        for url in index.extra_index_urls:
            if url != primary:
                args += ["--index", url]
        args += ["--default-index", primary]
    else:
        args += ["--index-url", index.index_url or PYPI]
        for url in index.extra_index_urls:
            args += ["--extra-index-url", url]
    for link in index.find_links:
        args += ["--find-links", link]
    if index.index_strategy:
        args += ["--index-strategy", index.index_strategy]
    for constraint in [] if for_install else index.constraints:
        if "://" in constraint or Path(constraint).is_file():  # a profile's files may not exist here
            args += ["--constraint", constraint]
    if offline:
        args.append("--offline")
    return args
