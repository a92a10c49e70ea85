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
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from rebuild.env.profile import Index, IndexSetting
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


def _pip_layers(environ: dict[str, str], home: Path, prefix: Path | None) -> list[_Layer]:
    layers = []
    for path in _pip_files(environ, home, prefix):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        layer = _Layer(f"pip config {path}")
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key, norm in (("index-url", "index_url"), ("extra-index-url", "extra_index_urls"),
                              ("find-links", "find_links"), ("no-index", "no_index"), ("constraint", "constraints")):
                if parser.has_option(section, key):
                    layer.values[norm] = _pip_value(norm, parser.get(section, key))
        if layer.values:
            # pip merges every configured index and picks the best version across them.
            layer.implied["index_strategy"] = "unsafe-best-match"
            layers.append(layer)
    env_layer = _Layer("environment (PIP_*)")
    for var, norm in (("PIP_INDEX_URL", "index_url"), ("PIP_EXTRA_INDEX_URL", "extra_index_urls"),
                      ("PIP_FIND_LINKS", "find_links"), ("PIP_NO_INDEX", "no_index"), ("PIP_CONSTRAINT", "constraints")):
        if environ.get(var):
            env_layer.values[norm] = _pip_value(norm, environ[var])
    if env_layer.values:
        env_layer.implied["index_strategy"] = "unsafe-best-match"
        layers.append(env_layer)
    return layers


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


def _uv_layers(environ: dict[str, str], home: Path, cwd: Path) -> list[_Layer]:
    layers = []
    if not _truthy(environ.get("UV_NO_CONFIG", "")):
        xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
        files = [Path(d) / "uv" / "uv.toml" for d in xdg_dirs] + [Path("/etc/uv/uv.toml")]
        files.append(Path(environ.get("XDG_CONFIG_HOME", home / ".config")) / "uv" / "uv.toml")
        for candidate in (cwd / "uv.toml", cwd / "pyproject.toml"):
            if candidate.is_file():
                files.append(candidate)
                break
        for path in files:
            if not path.is_file():
                continue
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
            if layer.values:
                layers.append(layer)
    env_layer = _Layer("environment (UV_*)")
    for var, norm in (("UV_INDEX_URL", "index_url"), ("UV_DEFAULT_INDEX", "index_url"),
                      ("UV_EXTRA_INDEX_URL", "extra_index_urls"), ("UV_INDEX", "extra_index_urls"),
                      ("UV_FIND_LINKS", "find_links"), ("UV_NO_INDEX", "no_index"),
                      ("UV_INDEX_STRATEGY", "index_strategy"), ("UV_CONSTRAINT", "constraints")):
        raw = environ.get(var)
        if not raw:
            continue
        if norm == "index_url":
            env_layer.values[norm] = strip_name(named_credentials(raw, environ))
        elif norm == "index_strategy":
            env_layer.values[norm] = raw.strip()
        elif norm == "no_index":
            env_layer.values[norm] = _truthy(raw)
        else:
            items = [w for w in re.split(r"[\s,]+", raw) if w] if norm == "find_links" else [strip_name(named_credentials(w, environ)) for w in _words(raw)]
            env_layer.values.setdefault(norm, []).extend(items)
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
    home = Path(home or Path.home())
    cwd = Path(cwd or Path.cwd())
    layers = _pip_layers(environ, home, prefix) + _uv_layers(environ, home, cwd)
    index = Index(index_url=PYPI)
    for layer in layers:
        for key, value in layer.implied.items():
            setattr(index, key, value)
        for key, value in layer.values.items():
            setattr(index, key, value)
            shown = value if isinstance(value, str) else " ".join(value) if isinstance(value, list) else str(value).lower()
            index.settings.append(IndexSetting(origin=layer.origin, key=key, value=redact(str(shown))))
    return index


def redacted(index: Index) -> Index:
    """A copy of ``index`` that is safe to write down or print."""
    return Index(
        index_url=redact(index.index_url),
        extra_index_urls=[redact(u) for u in index.extra_index_urls],
        find_links=[redact(u) for u in index.find_links],
        no_index=index.no_index,
        index_strategy=index.index_strategy,
        constraints=list(index.constraints),
        settings=list(index.settings),
    )


def override(index: Index, *, index_url: str | None = None, extra_index_urls: list[str] | None = None,
             find_links: list[str] | None = None, offline: bool = False) -> Index:
    """Apply command-line flags on top of the discovered settings."""
    out = Index(**{k: getattr(index, k) for k in index.__dataclass_fields__})
    out.settings = list(index.settings)
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
    return out


def uv_args(index: Index, offline: bool = False) -> list[str]:
    """Explicit uv flags for these settings (uv is run with ``--no-config``)."""
    args: list[str] = []
    if index.no_index:
        args.append("--no-index")
    else:
        args += ["--index-url", index.index_url or PYPI]
        for url in index.extra_index_urls:
            args += ["--extra-index-url", url]
    for link in index.find_links:
        args += ["--find-links", link]
    if index.index_strategy:
        args += ["--index-strategy", index.index_strategy]
    for constraint in index.constraints:
        args += ["--constraint", constraint]
    if offline:
        args.append("--offline")
    return args
