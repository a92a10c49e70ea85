"""The one place that runs uv.

Every uv invocation goes through :func:`run`, which finds the binary that the
``uv`` PyPI package ships, forbids interpreter downloads unless the caller
allows them, runs it through the one subprocess runner (:mod:`rebuild.util.proc`:
``PYTHONPATH``/``PYTHONHOME`` scrubbed, every ``UV_*``/``PIP_*``/proxy/SSL
variable kept), optionally appends the redacted command line and output to a
per-operation log file, and turns a failure into a :class:`UvFailed` carrying
uv's own words -- except a network or index failure, which :func:`network_failure`
turns into a :class:`~rebuild.errors.UserError` of its own (exit 1) naming the source,
so that it is never read as a version problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rebuild.errors import UserError
from rebuild.util import proc
from rebuild.util.proc import redact_line

#: uv's variables that narrow a resolution: an install of a lock must not see them.
RESOLVE_ONLY = ("UV_CONSTRAINT", "UV_BUILD_CONSTRAINT", "UV_OVERRIDE")

#: What :func:`run` returns: the runner's result (``args``, ``returncode``, ``stdout``, ``stderr``, ``seconds``).
UvResult = proc.Result


def uv_bin() -> str:
    """Path of the uv executable shipped by the ``uv`` package."""
    override = os.environ.get("TFREBUILD_UV")
    if override:
        return override
    try:
        import uv  # the PyPI package: a thin shim around the binary
    except ImportError as exc:  # pragma: no cover - uv is a hard dependency
        raise UserError("uv is not installed next to tfrebuild.", "Reinstall with: pip install tfrebuild") from exc
    return uv.find_uv_bin()


@dataclass
class UvFailed(Exception):
    """uv exited non-zero. ``stderr`` holds uv's explanation verbatim."""

    result: UvResult
    log: Path | None = None
    what: str = field(default="uv")

    def __str__(self) -> str:
        return f"{self.what} failed (exit {self.result.returncode}): {proc.redact_line(self.result.stderr.strip())}"


_FETCH = re.compile(r"Failed to fetch: (\S+)")
_FIND_LINKS = re.compile(r"Failed to read `--find-links` (directory|URL): (.+)")
_HTTP_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})[^)]*?\)")
_STATUS_TEXT = re.compile(r"\((\d{3} [^)]+)\)")
_INDEX_HINT = re.compile(r"^hint: An index(?: URL)? \((\S+)\) (.*)$", re.M)
_NETWORK_HINT = (
    "Check the URL (--index-url, --extra-index-url, --find-links, or your pip/uv configuration), "
    "that the server is up, and your network and proxy (HTTPS_PROXY) settings; or work without "
    "the index: --offline with --find-links pointing at a folder of wheels."
)


def _base_of(url: str) -> str:
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url).rstrip("/")


def _source(url: str, sources: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(noun, shown URL): the configured source ``url`` belongs to, credentials redacted."""
    redact = proc.redact_line

    for kind, configured in sources:
        base = _base_of(configured)
        if base and (_base_of(url) == base or _base_of(url).startswith(base + "/")):
            return kind, redact(configured)
    return "", redact_line(url)


def _reason(causes: list[str]) -> tuple[str, str]:
    """(what failed, extra hint) from uv's ``cause:`` lines."""
    text = "\n".join(causes).lower()
    for line in causes:
        status = _HTTP_STATUS.search(line)
        if status:
            shown = _STATUS_TEXT.search(line)
            code = int(status.group(1))
            extra = "The server refused access: check the credentials. " if code in (401, 403) else ""
            return f"it answered HTTP {shown.group(1) if shown else code}", extra
    if "dns error" in text or "lookup address" in text or "name or service not known" in text:
        return "its host name could not be resolved (DNS)", ""
    if "certificate" in text or "tls" in text or "ssl" in text or "corrupt message" in text or "handshake" in text:
        last = causes[-1] if causes else ""
        return (
            f"the TLS connection failed ({last})",
            "If the server speaks plain http, use an http:// URL; if a proxy re-signs TLS traffic, set "
            "SSL_CERT_FILE to its CA bundle (uv also needs UV_NATIVE_TLS=1 or --native-tls for the system "
            "store). ",
        )
    if "connection refused" in text:
        return "the connection was refused (nothing listens at that address)", ""
    if "timed out" in text or "timeout" in text:
        return "the connection timed out", ""
    if "connection reset" in text or "connection closed" in text or "unexpected eof" in text:
        return f"the connection was dropped ({causes[-1]})", ""
    return (causes[-1] if causes else "the request failed"), ""


def network_failure(stderr: str, sources: Sequence[tuple[str, str]] = ()) -> UserError | None:
    """uv's stderr as a network or index error (exit 1) naming the source, or ``None`` when it is something else.

    ``sources`` are the configured ``(noun, url)`` pairs ("the package index", URL): a failing URL under one of
    them is reported as that source. Matches uv 0.13's wording: ``Failed to fetch: URL`` with ``cause:``
    lines (status, DNS, TLS, refused), ``Failed to read `--find-links` directory|URL``, and the
    ``hint: An index URL (...) ... (401 Unauthorized)`` / ``returned a 403 Forbidden`` lines it adds to a
    resolution failure.
    """
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    causes = [line.split("cause:", 1)[1].strip() for line in lines if line.startswith("cause:")]
    details = "uv says:\n" + redact_line((stderr or "").strip())[-3000:]
    sources = list(sources)
    links = next((m for m in map(_FIND_LINKS.search, lines) if m), None)
    if links:
        kind, location = links.groups()
        location = location.strip()
        if kind == "directory":
            why = causes[0] if causes else "it cannot be read"
            why = re.sub(r"\s*\(os error \d+\)$", "", why)
            return UserError(
                f"The --find-links folder {redact_line(location)} cannot be read: {why}.",
                "Fix the path in --find-links, PIP_FIND_LINKS/UV_FIND_LINKS or the find-links setting "
                "of your pip/uv configuration, or create the folder.",
                exit_code=1,
                details=details,
            )
        reason, extra = _reason([c for c in causes if not c.startswith("Failed to fetch")])
        return UserError(
            f"The --find-links page {redact_line(location)} could not be read: {reason}.",
            extra + _NETWORK_HINT,
            exit_code=1,
            details=details,
        )
    fetch = next((m for m in map(_FETCH.search, lines) if m), None)
    if fetch:
        url = fetch.group(1).rstrip(".,:")
        noun, shown = _source(url, sources)
        reason, extra = _reason([c for c in causes if not c.startswith(("Failed to fetch", "error sending request"))])
        where = f"{noun} {shown}" if noun else shown
        page = f" (while reading {redact_line(url)})" if noun and _base_of(url) != _base_of(shown) else ""
        return UserError(
            f"uv could not read {where}: {reason}{page}.", extra + _NETWORK_HINT, exit_code=1, details=details
        )
    index_hint = _INDEX_HINT.search(stderr or "")
    if index_hint:
        url, rest = index_hint.groups()
        noun, shown = _source(url, sources)
        status = _STATUS_TEXT.search(rest) or re.search(r"(\d{3} [A-Z][A-Za-z ]+?) error", rest)
        reason = f"it answered HTTP {status.group(1)}" if status else rest.rstrip(".")
        return UserError(
            f"The {noun.removeprefix('the ') or 'package index'} {shown} refused access: {reason}.",
            "Check the credentials: in the URL (https://user:password@host/...), in ~/.netrc, or in "
            "uv's UV_INDEX_<NAME>_USERNAME / _PASSWORD variables.",
            exit_code=1,
            details=details,
        )
    return None


def index_sources(index: Any) -> list[tuple[str, str]]:  # an env.profile.Index (util imports no layer above)
    """The ``(noun, url)`` pairs of an :class:`~rebuild.env.profile.Index`, for :func:`network_failure`."""
    out = [] if index.no_index else [("the package index", u) for u in [index.index_url, *index.extra_index_urls] if u]
    return out + [("the --find-links location", f) for f in index.find_links if f]


#: uv's index options and the variable uv reads for each when the option is absent (with its separator:
#: ``UV_INDEX`` and ``UV_EXTRA_INDEX_URL`` take a space-separated list, ``UV_FIND_LINKS`` a comma-separated one).
_INDEX_OPTIONS = {
    "--index": ("UV_INDEX", " "),
    "--default-index": ("UV_DEFAULT_INDEX", ""),
    "--index-url": ("UV_INDEX_URL", ""),
    "-i": ("UV_INDEX_URL", ""),
    "--extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "--find-links": ("UV_FIND_LINKS", ","),
    "-f": ("UV_FIND_LINKS", ","),
    # a requirement file may be a URL too (pip.conf's `constraint = https://user:pw@host/c.txt`)
    "--constraint": ("UV_CONSTRAINT", " "),
    "-c": ("UV_CONSTRAINT", " "),
    "--build-constraint": ("UV_BUILD_CONSTRAINT", " "),
    "-b": ("UV_BUILD_CONSTRAINT", " "),
}
_USERINFO = re.compile(r"://[^/@\s]*@")


def secrets_to_environment(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``args`` without any index or find-links URL that carries credentials, and the variables that give uv
    those options instead.

    A process's command line is readable by every user (``/proc/PID/cmdline``), its environment only by its
    owner. So every value of an option one of whose values holds ``user:password@`` (or a token) leaves the
    command line for uv's own variable for that option (all its values, in their order: uv reads the variable
    only when the option is absent); options without credentials stay where they are.
    """
    pairs: list[tuple[str, str, int]] = []  # (option, value, index of the option in args)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg in _INDEX_OPTIONS and i + 1 < len(args):
            pairs.append((arg, args[i + 1], i))
            i += 2
            continue
        if eq and name in _INDEX_OPTIONS and name.startswith("--"):
            pairs.append((name, value, i))
        i += 1
    secret_vars = {_INDEX_OPTIONS[opt][0] for opt, value, _ in pairs if _USERINFO.search(value)}
    if not secret_vars:
        return list(args), {}
    drop: set[int] = set()
    values: dict[str, list[str]] = {}
    for opt, value, at in pairs:
        var, sep = _INDEX_OPTIONS[opt]
        if var not in secret_vars:
            continue
        drop.add(at)
        if args[at] == opt:
            drop.add(at + 1)
        values.setdefault(var, []).append(value)
    seps = dict(_INDEX_OPTIONS.values())
    env = {var: (seps[var].join(vals) if seps[var] else vals[-1]) for var, vals in values.items()}
    return [a for n, a in enumerate(args) if n not in drop], env


def run(
    args: list[str],
    *,
    allow_python_downloads: bool = False,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    cwd: Path | None = None,
    what: str = "uv",
    sources: Sequence[tuple[str, str]] = (),
    for_install: bool = False,
) -> UvResult:
    """Run ``uv <args>`` and return its output.

    ``--no-python-downloads`` is always passed unless the user allowed
    downloads: on machines where an interpreter cannot be found uv would
    otherwise spend many seconds trying to fetch one. ``env`` (default: this
    process's environment) is scrubbed by :func:`proc.clean_environ`. A
    network or index failure raises :func:`network_failure`'s error even with
    ``check=False``; ``sources`` (``(noun, url)`` pairs) name the configured ones. ``for_install``
    (installing or locking exact pins) also drops :data:`RESOLVE_ONLY`, which uv reads even with ``--no-config``.
    """
    cmd = [uv_bin()]
    if not allow_python_downloads:
        cmd.append("--no-python-downloads")
    args, secret_env = secrets_to_environment([str(a) for a in args])  # no password in any argv
    cmd += args
    run_env = proc.clean_environ(env)
    run_env.update(secret_env)
    if for_install:
        for name in RESOLVE_ONLY:
            run_env.pop(name, None)
    run_env.setdefault("NO_COLOR", "1")
    result = proc.run(cmd, env=run_env, timeout=timeout, cwd=cwd, log=log)
    if result.timed_out:
        raise UserError(
            f"{what} did not finish within {timeout:.0f} s.",
            "Check the network or the index settings, or try again with --offline and a --find-links folder.",
        )
    if result.error:
        raise UserError(
            f"{what} cannot be started ({cmd[0]}): {result.error}.",
            "Reinstall tfrebuild (pip install tfrebuild), or point TFREBUILD_UV at a working uv.",
        )
    if result.returncode != 0:
        failure = network_failure(result.stderr, sources)
        if failure is not None:
            raise failure
    if check and result.returncode != 0:
        raise UvFailed(result, log, what)
    return result


def version() -> str:
    return run(["--version"]).stdout.strip()
