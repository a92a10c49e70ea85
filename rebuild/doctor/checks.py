"""``tfrebuild doctor``: explain what is wrong with an environment and why its upgrade is blocked.

Everything here *reads*: one deep probe of the environment (run by its own
interpreter), the process environment, ``nvidia-smi`` and a handful of index
look-ups. Nothing is installed or changed.

Each problem becomes a :class:`Finding` with a stable ``id`` (documented in
``docs/doctor.md``), a severity, a one-line title, the evidence and a concrete
fix. Two flags tell ``plan``/``upgrade`` what to do with it:

* ``fixed_by_rebuild``: a fresh environment built by ``tfrebuild upgrade`` does
  not have the problem (debris in the old site-packages, an inconsistent set of
  versions, ``include-system-site-packages`` ...);
* ``affects_new_env``: the problem carries over to (or blocks) the environment
  the upgrade would build (a companion package that excludes the target, an
  interpreter the target has no wheel for, system CUDA libraries ...).

:func:`run` is the command; :func:`preflight` is the subset ``plan`` and
``upgrade`` can call with the probe report they already have.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.env import graph
from rebuild.index import config as indexconf
from rebuild.index import simple as indexinfo
from rebuild.index import http
from rebuild.env import interpreters
from rebuild.env import probe
from rebuild.core import resolve
from rebuild.env import snapshot
from rebuild.core import uvcmd
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation, locate
from rebuild.errors import UserError
from rebuild.env.snapshot import build_profile
from rebuild.knowledge.tf import SEED_PACKAGES, TF_DISTRIBUTIONS

# ---------------------------------------------------------------------------
# release facts (plain module-level data: easy to move into a package data file)
# ---------------------------------------------------------------------------

#: CUDA runtime and cuDNN each TensorFlow minor's Linux GPU build was compiled
#: against. 2.14-2.21 from the ``and-cuda`` extra of the real wheels
#: (shared/tf-facts.md); 2.10-2.13 from TensorFlow's tested build configurations.
TF_BUILD_CUDA: dict[str, dict[str, str]] = {
    "2.10": {"cuda": "11.2", "cudnn": "8.1"},
    "2.11": {"cuda": "11.2", "cudnn": "8.1"},
    "2.12": {"cuda": "11.8", "cudnn": "8.6"},
    "2.13": {"cuda": "11.8", "cudnn": "8.6"},
    "2.14": {"cuda": "11.8", "cudnn": "8.7"},
    "2.15": {"cuda": "12.2", "cudnn": "8.9"},
    "2.16": {"cuda": "12.3", "cudnn": "8.9"},
    "2.17": {"cuda": "12.3", "cudnn": "8.9"},
    "2.18": {"cuda": "12.5", "cudnn": "9.3"},
    "2.19": {"cuda": "12.5", "cudnn": "9.3"},
    "2.20": {"cuda": "12.5", "cudnn": "9.3"},
    "2.21": {"cuda": "12.5", "cudnn": "9.3"},
}

#: Oldest Linux NVIDIA driver for a CUDA version (exact "X.Y" first, then the major "X").
CUDA_MIN_DRIVER_LINUX: dict[str, str] = {
    "11.2": "450.80.02",
    "11.8": "520.61.05",
    "12": "525.60.13",
}

#: Distributions whose Linux build loads CUDA (``tensorflow-cpu`` never does).
GPU_DISTRIBUTIONS = ("tensorflow", "tensorflow-gpu", "tf-nightly", "tf-nightly-gpu")

#: pip-installed CUDA pieces (``tensorflow[and-cuda]``) by library kind.
CUDA_WHEELS = {
    "cudart": ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11"),
    "cudnn": ("nvidia-cudnn-cu12", "nvidia-cudnn-cu11"),
}

SEVERITIES = ("error", "warning", "info")

#: Every finding id and its severity (docs/doctor.md explains each one).
FINDINGS: dict[str, str] = {
    "broken-dist-info": "error",
    "broken-requirement": "error",
    "cuda-libs-mismatch": "error",
    "dependency-conflict": "error",
    "driver-too-old": "error",
    "duplicate-dist-info": "error",
    "missing-requirement": "error",
    "platform-unsupported": "error",
    "python-unsupported": "error",
    "pythonhome-set": "error",
    "pythonpath-shadow": "error",
    "record-missing-files": "error",
    "target-blocked": "error",
    "tensorflow-variants": "error",
    "user-site-shadow": "error",
    "conda-pip-overwrite": "warning",
    "cuda-home-mismatch": "warning",
    "cuda-libs-shadow-pip": "warning",
    "dependency-unverified": "warning",
    "index-unreachable": "warning",
    "not-a-venv": "warning",
    "orphan-package": "warning",
    "pip-other-interpreter": "warning",
    "pythonpath-set": "warning",
    "system-site-packages": "warning",
    "target-metadata-unavailable": "warning",
    "target-unknown": "warning",
    "tilde-folder": "warning",
    "user-site-visible": "warning",
    "capped-dependency": "info",
    "companion-moves": "info",
    "dependency-moves": "info",
    "no-tensorflow": "info",
    "tf-variant-requirement": "info",
}
MAX_LOOKUPS = 12  # index requests beyond the TensorFlow listing and its metadata

_LIBRARY = re.compile(r"^lib(cudart|cudnn)\.so\.(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_PIP_FROM = re.compile(r"^pip \S+ from (.+?) \(python ([0-9.]+)\)\s*$", re.M)
_CAP_OPERATORS = ("<", "<=", "==", "~=", "===")


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


@dataclass
class Finding:
    """One problem, with what shows it and how to fix it."""

    id: str  # stable, documented in docs/doctor.md
    severity: str  # error | warning | info
    title: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    fixed_by_rebuild: bool = False  # a fresh env built by `tfrebuild upgrade` does not have it
    affects_new_env: bool = False  # it carries over to (or blocks) the env the upgrade builds


@dataclass
class DoctorResult:
    env: str
    python: str
    python_version: str
    env_kind: str
    tf_distribution: str
    tf_version: str
    target: str  # --to as given ("" when not asked)
    target_version: str  # the release it means ("" when unknown)
    findings: list[Finding]
    skipped: list[str]  # checks that could not run, and why
    seconds: float

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def exit_code(self) -> int:
        """0 when no errors were found, 1 otherwise (bad input raises UserError: 2)."""
        return 1 if self.errors else 0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _parse_req(text: str) -> Requirement | None:
    return graph.parse(text)


def _req_text(req: Requirement) -> str:
    """``name[extras]specifier`` without the marker (what a user reads)."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def _applies(req: Requirement, markers: Mapping[str, str], extras: Iterable[str] = ()) -> bool:
    if req.marker is None:
        return True
    try:
        for extra in ("", *extras):
            if req.marker.evaluate({**markers, "extra": extra}):
                return True
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False
    return False


def _version(text: str | None) -> Version | None:
    try:
        return Version(str(text))
    except (InvalidVersion, TypeError):
        return None


def _contains(spec: SpecifierSet, version: str | Version) -> bool:
    return spec.contains(str(version), prereleases=True)


def _python_ok(requires_python: str | None, version: str) -> bool:
    """Whether a file's Requires-Python admits ``version`` (an unreadable one does not exclude, like pip)."""
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(version, prereleases=True)
    except InvalidSpecifier:
        return True


def _has_cap(spec: SpecifierSet) -> bool:
    return any(s.operator in _CAP_OPERATORS for s in spec)


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or ""))


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _real(path: str | os.PathLike) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return os.path.abspath(path)


def _run_probe(python: Path, environ: Mapping[str, str] | None, deep: bool, timeout: float | None) -> dict:
    """The probe report; with ``environ`` the probe runs under that environment (user site, PATH ...)."""
    if environ is None:
        return probe.run(python, deep=deep, timeout=timeout)
    timeout = probe.default_timeout() if timeout is None else timeout
    cmd = [str(python), "-I", "-S", str(probe.PROBE_SCRIPT)] + (["--deep"] if deep else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=dict(environ))
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"The interpreter {python} did not answer within {timeout:.0f} s.",
                        "It may hang at start-up; check that it runs or raise TFREBUILD_PROBE_TIMEOUT.") from exc
    except OSError as exc:
        raise UserError(f"The interpreter {python} cannot be started: {exc.strerror}.",
                        "The environment may be broken or its base Python removed; recreate it.") from exc
    if proc.returncode != 0:
        raise UserError(f"The interpreter {python} failed (exit {proc.returncode}) while being inspected.",
                        "The environment's Python is broken; recreate it.",
                        details="\n".join(proc.stderr.strip().splitlines()[-5:]))
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise UserError(f"The interpreter {python} printed something that is not the probe's report.",
                        "Run it by hand to see what it prints at start-up.", details=proc.stdout[:500]) from exc


# ---------------------------------------------------------------------------
# remote wheel metadata (when the index does not serve PEP 658 files)
# ---------------------------------------------------------------------------


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches byte ranges on demand.

    ``zipfile`` needs only the end of a wheel (its central directory) and the
    METADATA member, so reading a 270 MB TensorFlow wheel's metadata costs about
    three requests and a few hundred KiB. Servers that ignore ``Range`` are
    refused before their body is read.
    """

    CHUNK = 256 * 1024

    def __init__(self, url: str, timeout: float):
        super().__init__()
        self.url, self.timeout = url, timeout
        self.pos = 0
        self.segments: list[tuple[int, bytes]] = []
        self.requests = 0
        start, body, self.size = self._fetch("-65536")
        self.segments.append((start, body))

    def _fetch(self, spec: str) -> tuple[int, bytes, int]:
        clean, auth = http.split_credentials(self.url)
        req = urllib.request.Request(clean, headers={"Range": f"bytes={spec}", "Accept-Encoding": "identity",
                                                     "User-Agent": "tfrebuild-doctor (python urllib)"})
        if auth:
            req.add_unredirected_header("Authorization", auth)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=http.ssl_context()))
        self.requests += 1
        with opener.open(req, timeout=self.timeout) as resp:
            if resp.status != 206:
                raise indexinfo.MetadataUnavailable("the server does not serve byte ranges of the wheel")
            match = re.match(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", ""))
            if not match:
                raise indexinfo.MetadataUnavailable("the server sent no Content-Range")
            return int(match.group(1)), resp.read(), int(match.group(3))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        end = min(self.pos + n, self.size)
        if end <= self.pos:
            return b""
        for start, body in self.segments:
            if start <= self.pos and end <= start + len(body):
                out = body[self.pos - start:end - start]
                self.pos = end
                return out
        if self.requests >= 8:
            raise indexinfo.MetadataUnavailable("too many range requests for one METADATA file")
        stop = min(max(end, self.pos + self.CHUNK), self.size) - 1
        start, body, _ = self._fetch(f"{self.pos}-{stop}")
        self.segments.append((start, body))
        out = body[self.pos - start:end - start]
        self.pos = end
        return out

    def readinto(self, buffer) -> int:  # pragma: no cover - zipfile uses read()
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _metadata_by_ranges(file: indexinfo.FileInfo, timeout: float) -> dict:
    try:
        with zipfile.ZipFile(_RangeFile(file.url, timeout)) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise indexinfo.MetadataUnavailable(f"{file.filename} has no .dist-info/METADATA")
            text = zf.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, urllib.error.URLError, OSError, ValueError, KeyError, EOFError) as exc:
        raise indexinfo.MetadataUnavailable(f"could not read {file.filename} by byte ranges: {exc}") from exc
    return indexinfo._parse_metadata(text)


def _pypi_json(index_urls: list[str], project: str, version: str, timeout: float) -> dict | None:
    """``Requires-Dist`` from PyPI's JSON API, for indexes hosted by PyPI only."""
    for url in index_urls:
        parts = urlsplit(url)
        if parts.hostname not in ("pypi.org", "test.pypi.org"):
            continue
        api = f"{parts.scheme}://{parts.netloc}/pypi/{canonicalize_name(project)}/{version}/json"
        try:
            resp = http.get(api, accept="application/json", timeout=timeout)
            info = json.loads(resp.body.decode("utf-8", errors="replace")).get("info") or {}
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            continue
        if str(info.get("version")) != str(version):
            continue
        return {"name": info.get("name") or project, "version": str(version),
                "requires_dist": list(info.get("requires_dist") or []),
                "requires_python": info.get("requires_python") or None}
    return None


# ---------------------------------------------------------------------------
# the context every check reads
# ---------------------------------------------------------------------------


@dataclass
class _Target:
    distribution: str
    version: str
    files: list[indexinfo.FileInfo]
    requires: list[str] | None = None  # None: metadata unknown
    requires_python: str | None = None
    metadata_source: str = ""


class _Ctx:
    def __init__(self, loc: EnvLocation, data: dict, environ: Mapping[str, str] | None, *,
                 sources: indexinfo.Sources | None, timeout: float, pre: bool = False,
                 python_version: str | None = None):
        self.loc, self.data = loc, data
        self.environ = dict(os.environ if environ is None else environ)
        self.sources, self.timeout, self.pre = sources, timeout, pre
        self.profile = build_profile(loc, data, environ=self.environ)
        self.interp = dict(data.get("interpreter") or {})
        self.plat = dict(data.get("platform") or {})
        self.env = dict(data.get("env") or {})
        self.paths = dict(data.get("paths") or {})
        self.python = str(loc.python)
        self.markers = graph.marker_environment(self.interp, self.plat)
        self.dists: list[dict] = list(data.get("distributions") or [])
        self.env_dists: dict[str, dict] = {}
        for d in self.dists:
            if d.get("location") == "env":
                same = [o for o in self.dists if o.get("location") == "env" and o["canonical"] == d["canonical"]]
                self.env_dists[d["canonical"]] = snapshot.effective(same)  # as the snapshot takes it
        # What `import` finds: the user site (when enabled) comes first, then the env, then the system site.
        order = ["user", "env", "system"] if self.paths.get("user_site_enabled") else ["env", "system"]
        if not self.env.get("include_system_site_packages"):
            order = [o for o in order if o != "system"]
        self.visible: dict[str, dict] = {}
        for where in order:
            for d in self.dists:
                if d.get("location") == where and d["canonical"] not in self.visible:
                    same = [o for o in self.dists if o.get("location") == where and o["canonical"] == d["canonical"]]
                    self.visible[d["canonical"]] = snapshot.effective(same)
        # uv writes REQUESTED into every distribution it installs, so for uv-made envs only the roots of
        # the dependency graph count as asked for.
        # Edges through an extra do not count: tensorflow-text's `tensorflow_cpu` extra does not make
        # tensorflow-cpu a dependency the user did not ask for.
        self.required_by: dict[str, list[str]] = {}
        requires = {n: d.get("requires") or [] for n, d in self.env_dists.items()}
        extras = {n: d.get("provides_extra") or [] for n, d in self.env_dists.items()}
        for edge in graph.edges(requires, self.markers, extras):
            if not edge.via_extra:
                self.required_by.setdefault(edge.child, []).append(edge.parent)
        self.requested = {
            n for n, d in self.env_dists.items() if n not in SEED_PACKAGES and (
                not self.required_by.get(n)
                or (d.get("requested") and (d.get("installer") or "").strip().lower() != "uv"))}
        variants = [n for n in TF_DISTRIBUTIONS if n in self.env_dists]
        self.tf = (next((v for v in variants if v in self.requested), "")
                   or next((v for v in variants if not self.required_by.get(v)), "")
                   or (variants[0] if variants else ""))
        self.tf_version = self.env_dists[self.tf]["version"] if self.tf else ""
        self.new_python = python_version or self.interp.get("version", "")
        self.new_markers = dict(self.markers)
        if python_version:
            nums = _numbers(python_version)
            self.new_markers["python_version"] = ".".join(map(str, nums[:2]))
            self.new_markers["python_full_version"] = python_version
            self.new_markers["implementation_version"] = python_version
        self.lookups = 0
        self.skipped: list[str] = []
        self._files: dict[str, list[indexinfo.FileInfo] | None] = {}

    # -- target interpreter -------------------------------------------------
    def target_tags(self):
        merged = {**self.plat, **self.interp}
        if self.new_python:
            merged["version"] = self.new_python
        try:
            return indexinfo.supported_tags(indexinfo.Target.from_mapping(merged))
        except ValueError:
            return []

    # -- index ----------------------------------------------------------------
    def files(self, project: str, *, budget: bool = True) -> list[indexinfo.FileInfo] | None:
        """Files of ``project`` on the index, None when unknown (no index, over budget, failure)."""
        name = canonicalize_name(project)
        if name in self._files:
            return self._files[name]
        if self.sources is None or (budget and self.lookups >= MAX_LOOKUPS):
            return None
        if budget:
            self.lookups += 1
        try:
            found = indexinfo.list_files(name, self.sources, timeout=self.timeout)
        except (UserError, OSError) as exc:
            self.skipped.append(f"could not list {name} on the index: {getattr(exc, 'message', exc)}")
            found = None
        self._files[name] = found
        return found

    def metadata(self, project: str, version: str, files: list[indexinfo.FileInfo], *,
                 budget: bool = True) -> tuple[dict | None, str]:
        """(metadata, where it came from) of one release, or (None, why not)."""
        if budget:
            if self.lookups >= MAX_LOOKUPS:
                return None, "too many index look-ups"
            self.lookups += 1
        want = _version(version)
        wheels = [f for f in files if f.is_wheel and not f.yanked and f.version == want]
        tags = set(self.target_tags())
        wheels.sort(key=lambda f: (not f.is_local, f.tags.isdisjoint(tags)))
        offline = bool(self.sources and self.sources.offline)
        why = f"no wheel of {project} {version} on the index"
        for f in wheels[:2]:
            try:
                return indexinfo.read_metadata(f, timeout=self.timeout, offline=offline), (
                    "the wheel" if f.is_local else "the index's metadata file (PEP 658)")
            except indexinfo.MetadataUnavailable as exc:
                why = str(exc)
            if f.is_local or offline:
                continue
            if not f.has_metadata:
                try:  # many indexes serve <wheel>.metadata without announcing it
                    return indexinfo.read_metadata(replace(f, has_metadata=True), timeout=self.timeout), \
                        "the metadata file beside the wheel"
                except indexinfo.MetadataUnavailable:
                    pass
            try:
                return _metadata_by_ranges(f, self.timeout), "byte ranges of the wheel"
            except indexinfo.MetadataUnavailable as exc:
                why = str(exc)
            break
        if not offline and self.sources is not None:
            meta = _pypi_json(self.sources.index_urls, project, version, self.timeout)
            if meta is not None:
                return meta, "PyPI's JSON API"
        return None, why

    def requirements_of(self, dist: dict, markers: Mapping[str, str] | None = None) -> list[Requirement]:
        out = []
        for text in dist.get("requires") or []:
            req = _parse_req(text)
            if req is not None and _applies(req, markers or self.markers):
                out.append(req)
        return out


def _sources(index: prof.Index, offline: bool) -> indexinfo.Sources:
    urls = [] if index.no_index else [index.index_url or indexconf.PYPI] + list(index.extra_index_urls)
    return indexinfo.Sources(index_urls=urls, find_links=list(index.find_links), offline=offline)


# ---------------------------------------------------------------------------
# environment boundaries
# ---------------------------------------------------------------------------


def _top_level_names(ctx: _Ctx) -> dict[str, str]:
    """Import name -> owning distribution, for the env's distributions."""
    out: dict[str, str] = {}
    for name, d in ctx.env_dists.items():
        for top in d.get("top_level") or []:
            out.setdefault(top, name)
    return out


def _pip_site(exe: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(site dir pip installs into, its Python version) from ``pip --version``."""
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20,
                              env=dict(environ), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _PIP_FROM.search(proc.stdout or "")
    if proc.returncode != 0 or not match:
        return None
    return os.path.dirname(match.group(1).rstrip("/")), match.group(2)


def check_boundaries(ctx: _Ctx) -> list[Finding]:
    out: list[Finding] = []
    env_path, py = ctx.loc.path, ctx.python
    site = ctx.paths.get("site_packages") or []
    kind = ctx.env.get("kind", "unknown")
    if kind == "system":
        extra = ["the interpreter is marked externally managed (PEP 668): pip refuses to install there"] \
            if ctx.env.get("externally_managed") else []
        out.append(Finding(
            "not-a-venv", "warning", f"{py} is not in a virtual environment: installs go to the global site-packages",
            [f"interpreter: {ctx.interp.get('executable', py)} (Python {ctx.interp.get('version', '?')})",
             f"site-packages: {', '.join(site) or '?'}", *extra],
            f"create a venv and install there: `uv venv ~/venvs/tf --python {_q(ctx.interp.get('executable', py))}` "
            "then `uv pip install --python ~/venvs/tf/bin/python tensorflow`; tfrebuild manages venv, virtualenv, uv "
            "and conda environments",
            fixed_by_rebuild=False, affects_new_env=True))
    if ctx.env.get("include_system_site_packages"):
        system = [d for d in ctx.dists if d.get("location") == "system"]
        tf_sys = [f"{d['name']} {d['version']} ({d['site_dir']})" for d in system
                  if d["canonical"] in TF_DISTRIBUTIONS or d["canonical"] == "numpy"]
        out.append(Finding(
            "system-site-packages", "warning",
            "the env sees the system site-packages (include-system-site-packages = true)",
            [f"{env_path / 'pyvenv.cfg'}: include-system-site-packages = true",
             f"{len(system)} distribution(s) visible from {', '.join(ctx.paths.get('system_site_packages') or []) or '?'}",
             *[f"also visible: {t}" for t in tf_sys[:5]]],
            f"install what you use into the env, then set `include-system-site-packages = false` in "
            f"{_q(env_path / 'pyvenv.cfg')}; `tfrebuild upgrade` builds the new env without system packages",
            fixed_by_rebuild=True, affects_new_env=False))
    user = [d for d in ctx.dists if d.get("location") == "user"]
    if user and ctx.paths.get("user_site_enabled"):
        shadow = [d for d in user if d["canonical"] in ctx.env_dists]
        user_site = ctx.paths.get("user_site") or "the user site"
        base = ctx.interp.get("base_prefix") or ""
        base_py = f"{base}/bin/python{_minor(ctx.interp.get('version', '3'))}" if base else "python3"
        names = " ".join(sorted({d["name"] for d in (shadow or user)}))
        fix = (f"remove them from the user site: `{_q(base_py)} -m pip uninstall -y {names}` run outside any venv "
               f"(or `export PYTHONNOUSERSITE=1`); `tfrebuild upgrade` builds a venv that ignores the user site")
        if shadow:
            out.append(Finding(
                "user-site-shadow", "error",
                f"{len(shadow)} package(s) in {user_site} shadow the env's own copies",
                [f"{d['name']} {d['version']} in {d['dist_info']} is imported instead of "
                 f"{ctx.env_dists[d['canonical']]['version']} in {ctx.env_dists[d['canonical']]['site_dir']}"
                 for d in shadow],
                fix, fixed_by_rebuild=True, affects_new_env=False))
        rest = [d for d in user if d["canonical"] not in ctx.env_dists]
        if rest:
            out.append(Finding(
                "user-site-visible", "warning",
                f"{len(rest)} package(s) from {user_site} are importable in this env",
                [f"{d['name']} {d['version']} ({d['dist_info']})" for d in rest[:10]]
                + ([f"... and {len(rest) - 10} more"] if len(rest) > 10 else []),
                fix, fixed_by_rebuild=True, affects_new_env=False))
    pythonpath = ctx.environ.get("PYTHONPATH", "")
    if pythonpath:
        owners = _top_level_names(ctx)
        shadows, entries = [], []
        for entry in [e for e in pythonpath.split(os.pathsep) if e]:
            entries.append(entry)
            try:
                names = os.listdir(entry) if os.path.isdir(entry) else []
            except OSError:
                names = []
            for n in sorted(names):
                mod = n[:-3] if n.endswith(".py") else (n if os.path.isdir(os.path.join(entry, n)) else None)
                if mod and mod in owners:
                    shadows.append(f"{os.path.join(entry, n)} shadows {mod} of {owners[mod]} "
                                   f"{ctx.env_dists[owners[mod]]['version']}")
        fix = "unset it: `unset PYTHONPATH` (and remove it from ~/.bashrc or the job script); it also applies " \
              "to the upgraded env"
        if shadows:
            out.append(Finding("pythonpath-shadow", "error", "PYTHONPATH puts other copies of installed packages "
                               "first on sys.path", [f"PYTHONPATH={pythonpath}", *shadows], fix,
                               fixed_by_rebuild=False, affects_new_env=True))
        else:
            out.append(Finding("pythonpath-set", "warning", "PYTHONPATH is set: its folders come before the env's "
                               "site-packages", [f"PYTHONPATH={pythonpath}"], fix,
                               fixed_by_rebuild=False, affects_new_env=True))
    if ctx.environ.get("PYTHONHOME"):
        out.append(Finding(
            "pythonhome-set", "error", "PYTHONHOME is set: Python takes its standard library from there",
            [f"PYTHONHOME={ctx.environ['PYTHONHOME']}",
             f"the env's base interpreter lives in {ctx.interp.get('base_prefix', '?')}"],
            "`unset PYTHONHOME`; it is almost never needed and breaks every venv made from another Python",
            fixed_by_rebuild=False, affects_new_env=True))
    out += _check_pip(ctx)
    return out


def _check_pip(ctx: _Ctx) -> list[Finding]:
    site = {_real(p) for p in ctx.paths.get("site_packages") or []}
    if not site:
        return []
    wrong: list[tuple[str, str, str]] = []  # (command, path, "installs into ...")
    seen: set[str] = set()
    for name in ("pip", "pip3"):
        exe = shutil.which(name, path=ctx.environ.get("PATH", os.defpath))
        if not exe or _real(exe) in seen:
            continue
        seen.add(_real(exe))
        if os.path.dirname(os.path.abspath(exe)) == os.path.dirname(os.path.abspath(ctx.python)):
            continue  # the env's own pip
        found = _pip_site(exe, ctx.environ)
        if found is None:
            continue
        target, version = found
        if _real(target) not in site:
            wrong.append((name, exe, f"{target} (Python {version})"))
    if not wrong:
        return []
    names = " and ".join(f"`{n}`" for n, _, _ in wrong)
    return [Finding(
        "pip-other-interpreter", "warning", f"{names} on PATH install{'s' if len(wrong) == 1 else ''} into another "
        "Python, not into this env",
        [f"{exe} installs into {where}" for _, exe, where in wrong]
        + [f"this env's site-packages: {', '.join(ctx.paths.get('site_packages') or [])} "
           f"(Python {ctx.interp.get('version', '?')})"],
        f"use the env's own installer: `{_q(ctx.python)} -m pip install ...` or "
        f"`uv pip install --python {_q(ctx.python)} ...` (or activate it: "
        f"`source {_q(ctx.loc.path / 'bin' / 'activate')}`)",
        fixed_by_rebuild=False, affects_new_env=True)]


# ---------------------------------------------------------------------------
# installation debris
# ---------------------------------------------------------------------------


def check_debris(ctx: _Ctx) -> list[Finding]:
    out: list[Finding] = []
    py = _q(ctx.python)
    for item in ctx.data.get("debris") or []:
        kind, path = item.get("kind"), item.get("path", "")
        if kind == "tilde-folder":
            out.append(Finding(
                "tilde-folder", "warning", f"leftover of an interrupted install or uninstall: {os.path.basename(path)}",
                [f"{path} ({item.get('location', '?')} site-packages)",
                 "pip warns `Ignoring invalid distribution " + os.path.basename(path) + "` because of it"],
                f"delete it: `rm -rf {_q(path)}`", fixed_by_rebuild=True, affects_new_env=False))
        elif kind == "orphan-top-level":
            out.append(Finding(
                "orphan-package", "warning",
                f"{item.get('name')} in site-packages belongs to no installed distribution",
                [f"{path} is not listed in any RECORD or top_level.txt"],
                f"if nothing imports it, delete it: `rm -rf {_q(path)}`; if your code imports it, install the "
                f"distribution that provides it (`uv pip install --python {py} <project>`), or the upgraded env "
                "will not have it", fixed_by_rebuild=True, affects_new_env=False))
        elif kind in ("no-metadata", "bad-metadata"):
            out.append(Finding(
                "broken-dist-info", "error", f"metadata folder {os.path.basename(path)} cannot be read",
                [f"{path}: {item.get('detail') or 'no METADATA file'}"],
                f"delete the folder (`rm -rf {_q(path)}`) and reinstall the project with "
                f"`uv pip install --python {py} --reinstall <project>`", fixed_by_rebuild=True, affects_new_env=False))
    by_name: dict[str, list[dict]] = {}
    for d in ctx.dists:
        if d.get("location") == "env":
            by_name.setdefault(d["canonical"], []).append(d)
    for name, found in sorted(by_name.items()):
        if len(found) > 1:
            versions = ", ".join(d["version"] for d in found)
            keep = snapshot.effective(found)
            out.append(Finding(
                "duplicate-dist-info", "error",
                f"{name} is recorded twice ({versions}): pip and importlib may report the wrong version",
                [d["dist_info"] for d in found],
                f"reinstall one version cleanly: delete the stale folders, then `uv pip install --python {py} "
                f"--reinstall {_q(name + '==' + keep['version'])}`; `tfrebuild upgrade` builds a clean env",
                fixed_by_rebuild=True, affects_new_env=False))
    for d in ctx.dists:
        count = d.get("record_missing_count")
        if d.get("location") == "env" and count:
            sample = d.get("record_missing") or []
            out.append(Finding(
                "record-missing-files", "error",
                f"{d['name']} {d['version']}: {count} installed file(s) are missing",
                [f"{d['dist_info']}/RECORD lists {count} file(s) that do not exist",
                 *[f"missing: {p}" for p in sample[:5]]],
                f"reinstall it: `uv pip install --python {py} --reinstall --no-deps "
                f"{_q(d['name'] + '==' + d['version'])}`", fixed_by_rebuild=True, affects_new_env=False))
    variants = [n for n in TF_DISTRIBUTIONS if n in ctx.env_dists]
    if len(variants) > 1:
        evidence, pulled = [], []
        for v in variants:
            d = ctx.env_dists[v]
            by = sorted(ctx.required_by.get(v, []))
            why = []
            for parent in by:
                for req in ctx.requirements_of(ctx.env_dists.get(parent, {})):
                    if canonicalize_name(req.name) == v:
                        why.append(f"{parent} {ctx.env_dists[parent]['version']} requires {_req_text(req)}")
            if v != ctx.tf and any(p not in TF_DISTRIBUTIONS for p in by):
                pulled.append((v, [p for p in by if p not in TF_DISTRIBUTIONS]))
            evidence.append(f"{v} {d['version']} ({d['dist_info']})" + (f": {'; '.join(why)}" if why else ""))
        main = ctx.tf or variants[0]
        fix = (f"keep one: `uv pip uninstall --python {py} {' '.join(variants)}` then "
               f"`uv pip install --python {py} {_q(main + '==' + ctx.env_dists[main]['version'])}`")
        if pulled:
            other, parents = pulled[0]
            fix = (f"{', '.join(parents)} require{'s' if len(parents) == 1 else ''} `{other}` while you installed "
                   f"`{main}`: use `{other}` alone" + (" (it runs on CPU too)" if other == "tensorflow" else "")
                   + f": `uv pip uninstall --python {py} {' '.join(variants)}` then `uv pip install --python {py} "
                   f"{_q(other + '==' + ctx.env_dists[other]['version'])}`")
        out.append(Finding(
            "tensorflow-variants", "error",
            f"{' and '.join(variants)} are installed together and overwrite each other's files",
            evidence, fix, fixed_by_rebuild=not pulled, affects_new_env=bool(pulled)))
    out += _check_conda(ctx)
    return out


def _conda_owned(prefix: Path) -> dict[str, tuple[str, str, str]]:
    """canonical dist name -> (conda package, version, conda-meta json) from ``conda-meta/*.json``."""
    owned: dict[str, tuple[str, str, str]] = {}
    for path in sorted(glob.glob(str(prefix / "conda-meta" / "*.json"))):
        try:
            meta = json.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or not meta.get("name"):
            continue
        names = set()
        for f in meta.get("files") or []:
            m = re.search(r"site-packages/([^/]+)\.(?:dist|egg)-info(?:/|$)", str(f))
            if m:
                names.add(canonicalize_name(m.group(1).rsplit("-", 1)[0] if "-" in m.group(1) else m.group(1)))
        if not names:
            names.add(canonicalize_name(str(meta["name"])))
        for n in names:
            owned.setdefault(n, (str(meta["name"]), str(meta.get("version", "")), path))
    return owned


def _check_conda(ctx: _Ctx) -> list[Finding]:
    prefix = Path(ctx.interp.get("prefix") or ctx.loc.path)
    if not (prefix / "conda-meta").is_dir():
        return []
    owned = _conda_owned(prefix)
    out = []
    for name, d in sorted(ctx.env_dists.items()):
        installer = (d.get("installer") or "").strip().lower()
        if name not in owned or not installer or installer == "conda":
            continue
        pkg, version, meta = owned[name]
        out.append(Finding(
            "conda-pip-overwrite", "warning",
            f"{name} belongs to conda but was overwritten by {installer}",
            [f"{meta} records conda package {pkg} {version}",
             f"{d['dist_info']} now holds {d['version']}, INSTALLER = {installer}"],
            f"let one tool own it: `{_q(ctx.python)} -m pip uninstall -y {name}` then "
            f"`conda install -p {_q(prefix)} --force-reinstall {pkg}`, or `conda remove -p {_q(prefix)} --force {pkg}` "
            f"to leave it to pip; `tfrebuild upgrade` builds a plain venv", fixed_by_rebuild=True,
            affects_new_env=False))
    return out


# ---------------------------------------------------------------------------
# consistency today (pip check)
# ---------------------------------------------------------------------------


def check_consistency(ctx: _Ctx) -> list[Finding]:
    out: list[Finding] = []
    py = _q(ctx.python)
    for name, d in sorted(ctx.env_dists.items()):
        for req in ctx.requirements_of(d):
            dep = canonicalize_name(req.name)
            if dep == name:
                continue
            have = ctx.visible.get(dep)
            spec = str(req.specifier)
            if have is None:
                variant = next((v for v in TF_DISTRIBUTIONS if dep in TF_DISTRIBUTIONS and v in ctx.visible), None)
                if variant and (not spec or _contains(req.specifier, ctx.visible[variant]["version"])):
                    out.append(Finding(
                        "tf-variant-requirement", "info",
                        f"{name} requires {dep}, which is satisfied by {variant} only in spirit",
                        [f"{name} {d['version']} requires {_req_text(req)}; {variant} "
                         f"{ctx.visible[variant]['version']} provides the same `tensorflow` package"],
                        f"nothing to do while it imports; `pip check` will list it, and an install of {name} "
                        f"may pull {dep} in next to {variant}", fixed_by_rebuild=False, affects_new_env=True))
                    continue
                out.append(Finding(
                    "missing-requirement", "error", f"{name} {d['version']} requires {dep}, which is not installed",
                    [f"{name} {d['version']} requires {_req_text(req)}"],
                    f"`uv pip install --python {py} {_q(_req_text(req))}`; `tfrebuild upgrade` resolves the full set",
                    fixed_by_rebuild=True, affects_new_env=False))
            elif spec and not _contains(req.specifier, have["version"]):
                where = "" if have.get("location") == "env" else f" (from the {have.get('location')} site)"
                out.append(Finding(
                    "broken-requirement", "error",
                    f"{name} {d['version']} requires {dep}{spec}, but {dep} {have['version']} is installed",
                    [f"{name} {d['version']} requires {_req_text(req)}",
                     f"installed: {dep} {have['version']} ({have['dist_info']}){where}"],
                    f"put back a version it accepts: `uv pip install --python {py} {_q(dep + spec)}` "
                    f"(or upgrade {name}); `tfrebuild upgrade` resolves the full set",
                    fixed_by_rebuild=True, affects_new_env=False))
    return out


# ---------------------------------------------------------------------------
# the target: interpreter, conflicts
# ---------------------------------------------------------------------------


def _pick_target(ctx: _Ctx, spec: resolve.TargetSpec) -> tuple[_Target | None, list[Finding]]:
    files = ctx.files(ctx.tf, budget=False)
    if files is None:
        return None, [Finding(
            "index-unreachable", "warning", f"the package index could not be read: {ctx.tf} --to {spec.raw} was "
            "not checked", list(ctx.skipped[-1:]) or ["no index configured"],
            "check the network or the index settings, or pass --offline --find-links <folder of wheels>",
            fixed_by_rebuild=False, affects_new_env=False)]
    exact_pre = spec.kind == "exact" and bool(_version(spec.raw)) and _version(spec.raw).is_prerelease
    candidates = indexinfo.versions(files, prereleases=ctx.pre or exact_pre)
    if not candidates:
        return None, [Finding(
            "target-unknown", "warning", f"the index lists no release of {ctx.tf}: --to {spec.raw} was not checked",
            [f"sources: {', '.join(ctx.sources.index_urls + ctx.sources.find_links) or 'none'}"
             + (" (offline)" if ctx.sources.offline else "")],
            "check --index-url / --find-links, or run without --offline", fixed_by_rebuild=False,
            affects_new_env=False)]
    if spec.specifier:
        wanted = SpecifierSet(spec.specifier)
        candidates = [v for v in candidates if wanted.contains(v, prereleases=True)]
    if not candidates:
        raise UserError(f"No {ctx.tf} release on the index matches --to {spec.raw}.",
                        f"Use --to latest, or one of: {', '.join(map(str, indexinfo.versions(files)[:8]))}.")
    return _Target(ctx.tf, str(candidates[0]), files), []


def _other_interpreters(ctx: _Ctx, minors: list[str]) -> list[tuple[str, str]]:
    """(version, path) of local interpreters whose minor is in ``minors`` (ours + uv's discovery)."""
    found: dict[str, tuple[str, str]] = {}
    try:
        for i in interpreters.discover():
            found.setdefault(_real(i.path), (i.version, str(i.path)))
    except (OSError, UserError):
        pass
    try:
        res = uvcmd.run(["python", "list", "--only-installed", "--output-format", "json"], check=False,
                        env=ctx.environ, timeout=30)
        for item in json.loads(res.stdout or "[]") if res.returncode == 0 else []:
            path, version = item.get("path"), item.get("version")
            if path and version and item.get("implementation", "cpython") == "cpython":
                found.setdefault(_real(path), (str(version), str(path)))
    except (UserError, ValueError, OSError, AttributeError):
        pass
    out = [(v, p) for v, p in found.values() if _minor(v) in minors]
    out.sort(key=lambda vp: _numbers(vp[0]), reverse=True)
    return out


def check_interpreter(ctx: _Ctx, target: _Target) -> list[Finding]:
    if target.distribution == ctx.tf and target.version == ctx.tf_version and ctx.new_python == ctx.interp.get(
            "version"):
        return []  # it is installed on this very interpreter
    tags = set(ctx.target_tags())
    want = _version(target.version)
    pyver = ctx.new_python
    mine = [f for f in target.files if f.version == want and f.is_wheel and not f.yanked]
    ok = [f for f in mine if not f.tags.isdisjoint(tags) and _python_ok(f.requires_python, pyver)]
    if ok:
        return []
    system, machine = ctx.plat.get("system", ""), ctx.plat.get("machine", "")
    supported = indexinfo.python_versions_with_wheels(target.files, want, system, machine)
    newest = indexinfo.newest_compatible(target.files, tags, pyver, prereleases=ctx.pre)
    what = f"{target.distribution} {target.version}"
    evidence = [f"this env runs Python {pyver} on {system} {machine}"
                + (f" ({ctx.plat.get('libc')} {ctx.plat.get('libc_version')})" if ctx.plat.get("libc") else "")]
    newest_line = (f"newest {target.distribution} for Python {_minor(pyver)} here: {newest}" if newest
                   else f"no release of {target.distribution} installs on Python {_minor(pyver)} here")
    stay = f"`tfrebuild upgrade --env {_q(ctx.loc.path)} --to {newest}`" if newest else ""
    if _minor(pyver) in supported or not supported:
        # The Python is fine (or there is nothing for this platform at all): the platform is the problem.
        plats = sorted({t.platform for f in mine for t in f.tags if t.interpreter == "cp" + "".join(
            map(str, _numbers(pyver)[:2]))})
        evidence += [f"{what} has wheels for: {', '.join(plats[:6]) or 'no ' + system + ' ' + machine + ' wheel'}",
                     newest_line]
        return [Finding(
            "platform-unsupported", "error", f"{what} has no wheel for this platform ({system} {machine})",
            evidence, (f"stay on {stay}" if stay else "use a machine or container the release has wheels for")
            + (" or a newer OS (the wheels need a newer glibc/macOS)" if plats else ""),
            fixed_by_rebuild=False, affects_new_env=True)]
    local = _other_interpreters(ctx, supported)
    evidence.insert(0, f"{what} has wheels for Python {', '.join(supported)} on {system} {machine}")
    evidence.append(f"interpreters here that qualify: {', '.join(f'{v} ({p})' for v, p in local[:5]) or 'none'}")
    evidence.append(newest_line)
    if local:
        fix = f"rebuild the env on Python {_minor(local[0][0])}: `tfrebuild upgrade --env {_q(ctx.loc.path)} " \
              f"--to {target.version} --python {_minor(local[0][0])}`"
    else:
        fix = f"install a Python it supports (`uv python install {supported[-1]}` or `pyenv install {supported[-1]}`), " \
              f"then `tfrebuild upgrade --env {_q(ctx.loc.path)} --to {target.version} --python {supported[-1]}`"
    if stay:
        fix += f"; or stay on Python {_minor(pyver)} with {stay}"
    return [Finding(
        "python-unsupported", "error", f"{what} has no wheel for Python {_minor(pyver)} "
        "(pip says: No matching distribution found)", evidence, fix,
        fixed_by_rebuild=False, affects_new_env=True)]


def _kept(ctx: _Ctx) -> dict[str, dict]:
    """Distributions the upgraded env keeps: requested ones and what they need (not expanded through TensorFlow)."""
    todo = [n for n in ctx.requested if n not in TF_DISTRIBUTIONS and n in ctx.env_dists]
    kept: dict[str, dict] = {}
    while todo:
        name = todo.pop()
        if name in kept or name not in ctx.env_dists:
            continue
        kept[name] = ctx.env_dists[name]
        if name in TF_DISTRIBUTIONS:
            continue  # its own dependencies are replaced by the target's
        extras = ctx.env_dists[name].get("provides_extra") or []
        for text in ctx.env_dists[name].get("requires") or []:
            req = _parse_req(text)
            if req is None:
                continue
            child = canonicalize_name(req.name)
            if child in ctx.env_dists and _applies(req, ctx.markers, extras):
                todo.append(child)
    return kept


def _tf_requirements(ctx: _Ctx, dist: dict, markers: Mapping[str, str]) -> list[Requirement]:
    return [r for r in ctx.requirements_of(dist, markers) if canonicalize_name(r.name) in TF_DISTRIBUTIONS]


def _accepting_release(ctx: _Ctx, project: str, target: _Target) -> tuple[str, str] | None:
    """(version, requirement) of the newest release of ``project`` that accepts the target, if the index has one."""
    files = ctx.files(project)
    if not files:
        return None
    tags = set(ctx.target_tags())
    installable = [f for f in files if f.is_wheel and not f.yanked and not f.tags.isdisjoint(tags)]
    versions = indexinfo.versions(installable or files, prereleases=ctx.pre)
    same = [v for v in versions if _minor(str(v)) == _minor(target.version)]
    for v in (same + [v for v in versions if v not in same])[:3]:
        meta, _ = ctx.metadata(project, str(v), files)
        if meta is None:
            continue
        reqs = [r for r in (_parse_req(t) for t in meta.get("requires_dist") or []) if r is not None
                and canonicalize_name(r.name) in TF_DISTRIBUTIONS and _applies(r, ctx.new_markers)]
        if reqs and all(_contains(r.specifier, target.version) for r in reqs):
            return str(v), "; ".join(_req_text(r) for r in reqs)
    return None


def _newest_allowed(target: _Target, spec: SpecifierSet) -> str | None:
    allowed = [v for v in indexinfo.versions(target.files) if _contains(spec, v)]
    return str(allowed[0]) if allowed else None


def check_conflicts(ctx: _Ctx, target: _Target) -> list[Finding]:
    if target.requires is None:
        return []
    out: list[Finding] = []
    py, env = _q(ctx.python), _q(ctx.loc.path)
    what = f"{target.distribution} {target.version}"
    kept = _kept(ctx)
    # 1. direct: kept packages whose own requirement on TensorFlow excludes the target.
    for name, d in sorted(kept.items()):
        if name in TF_DISTRIBUTIONS:
            continue
        for req in _tf_requirements(ctx, d, ctx.new_markers):
            if not req.specifier or _contains(req.specifier, target.version):
                continue
            dep = canonicalize_name(req.name)
            accepting = _accepting_release(ctx, name, target)
            evidence = [f"{name} {d['version']} requires {_req_text(req)}", f"target: {what}"]
            requested = name in ctx.requested
            if dep != target.distribution:
                evidence.append(f"it names `{dep}`, not `{target.distribution}`: upgrading {target.distribution} "
                                f"alone leaves {dep} {ctx.env_dists.get(dep, {}).get('version', '(not installed)')} "
                                "installed beside it")
            if accepting:
                evidence.append(f"{name} {accepting[0]} accepts it ({accepting[1]})")
            else:
                allowed = _newest_allowed(target, req.specifier)
                evidence.append(f"no release of {name} on the index accepts {target.version}"
                                + (f"; the newest {target.distribution} it allows is {allowed}" if allowed else ""))
            if accepting and not requested:
                out.append(Finding(
                    "companion-moves", "info", f"{name} {d['version']} must move to {accepting[0]} with {what}",
                    evidence, f"`tfrebuild upgrade --env {env} --to {target.version}` moves it"
                    + (f" once {dep} moves too" if dep != target.distribution else "")
                    + f"; an in-place `pip install -U {target.distribution}` leaves it broken",
                    fixed_by_rebuild=dep == target.distribution, affects_new_env=dep != target.distribution))
                continue
            if accepting and dep == target.distribution:
                fix = (f"upgrade both together: `tfrebuild upgrade --env {env} --to {target.version}` takes {name} "
                       f"{accepting[0]}")
                fixed = True
            elif accepting:
                fix = (f"install `{dep}` instead of `{target.distribution}` so both move together: "
                       f"`uv pip uninstall --python {py} {target.distribution} {dep}` then `uv pip install "
                       f"--python {py} {_q(dep + '==' + target.version)} {_q(name + '==' + accepting[0])}`")
                fixed = False
            else:
                allowed = _newest_allowed(target, req.specifier)
                fix = (f"stay within what {name} allows (`tfrebuild upgrade --env {env} --to {allowed}`) "
                       if allowed else "") + f"or drop {name} from the env (`uv pip uninstall --python {py} {name}`)"
                fixed = False
            out.append(Finding(
                "target-blocked", "error", f"{name} {d['version']} does not allow {what}", evidence, fix,
                fixed_by_rebuild=fixed, affects_new_env=not fixed))
    # 2. through a shared dependency: the target's requirement vs what kept packages require of the same project.
    extras = []
    installed_tf = ctx.env_dists.get(target.distribution)
    if installed_tf and any(n in ctx.env_dists for pair in CUDA_WHEELS.values() for n in pair):
        extras = [e for e in installed_tf.get("provides_extra") or [] if "cuda" in e]
    for text in target.requires:
        treq = _parse_req(text)
        if treq is None or not _applies(treq, ctx.new_markers, extras):
            continue
        dep = canonicalize_name(treq.name)
        if dep in TF_DISTRIBUTIONS or dep not in ctx.env_dists:
            continue
        holders = []
        for name, d in sorted(kept.items()):
            if name in TF_DISTRIBUTIONS or name == dep:
                continue
            for req in ctx.requirements_of(d, ctx.new_markers):
                if canonicalize_name(req.name) == dep and req.specifier:
                    holders.append((name, d, req))
        if not holders:
            continue
        installed = ctx.env_dists[dep]["version"]
        specs = [treq.specifier] + [r.specifier for _, _, r in holders]
        both = all(_contains(s, installed) for s in specs)
        capped = [h for h in holders if _has_cap(h[2].specifier)]
        if both and not capped:
            continue
        files = ctx.files(dep)
        tags = set(ctx.target_tags())
        candidates = None
        if files is not None:
            usable = [f for f in files if not f.yanked and f.is_wheel and not f.tags.isdisjoint(tags)
                      and _python_ok(f.requires_python, ctx.new_python)]
            candidates = indexinfo.versions(usable or files, prereleases=ctx.pre)
        shared = [v for v in candidates or [] if all(_contains(s, v) for s in specs)]
        evidence = [f"{what} requires {_req_text(treq)}"] + \
            [f"{n} {d['version']} requires {_req_text(r)}" for n, d, r in holders] + \
            [f"installed: {dep} {installed}"]
        if both:
            matters = bool(candidates and any(_contains(treq.specifier, v) and not all(
                _contains(r.specifier, v) for _, _, r in capped) for v in candidates)) if candidates is not None \
                else not _has_cap(treq.specifier)
            if not matters:
                continue
            names = ", ".join(f"{n} {d['version']}" for n, d, _ in capped)
            out.append(Finding(
                "capped-dependency", "info",
                f"{what} is compatible with {names} via {dep} {installed}: keep {dep} below the cap",
                evidence, f"`tfrebuild upgrade --env {env} --to {target.version}` keeps {dep} {installed}; an in-place "
                f"`pip install -U {target.distribution}` may take a newer {dep} that {names} does not accept",
                fixed_by_rebuild=True, affects_new_env=False))
        elif shared:
            out.append(Finding(
                "dependency-moves", "info", f"{dep} must move {installed} → {shared[0]} for {what}; "
                f"{', '.join(n for n, _, _ in holders)} accept{'s' if len(holders) == 1 else ''} it",
                evidence + [f"newest {dep} every requirement accepts: {shared[0]}"],
                f"`tfrebuild upgrade --env {env} --to {target.version}` moves it",
                fixed_by_rebuild=True, affects_new_env=False))
        elif candidates is not None:
            blockers = [(n, d, r) for n, d, r in holders
                        if not any(_contains(treq.specifier, v) and _contains(r.specifier, v) for v in candidates)]
            blockers = blockers or holders
            names = ", ".join(f"{n} {d['version']}" for n, d, _ in blockers)
            out.append(Finding(
                "dependency-conflict", "error", f"{names} and {what} need incompatible versions of {dep}",
                evidence + [f"no {dep} release on the index satisfies all of them"],
                f"upgrade {', '.join(n for n, _, _ in blockers)} too: `tfrebuild upgrade --env {env} "
                f"--to {target.version} --strategy eager`, or choose an older --to",
                fixed_by_rebuild=False, affects_new_env=True))
        else:
            out.append(Finding(
                "dependency-unverified", "warning", f"{dep} must move for {what}; whether "
                f"{', '.join(n for n, _, _ in holders)} accept{'s' if len(holders) == 1 else ''} it was not checked",
                evidence + [f"could not list {dep} on the index"],
                f"run `tfrebuild plan --env {env} --to {target.version}` to let the resolver decide",
                fixed_by_rebuild=False, affects_new_env=True))
    return out


# ---------------------------------------------------------------------------
# system CUDA
# ---------------------------------------------------------------------------


def _scan_libraries(folders: Iterable[tuple[str, str]]) -> list[dict]:
    """CUDA runtime / cuDNN libraries in ``(folder, source)``: the most specific version per kind and folder."""
    out: list[dict] = []
    for folder, source in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        best: dict[str, tuple[tuple[int, ...], str]] = {}
        for n in names:
            m = _LIBRARY.match(n)
            if not m:
                continue
            nums = tuple(int(g) for g in m.groups()[1:] if g is not None)
            kind = m.group(1)
            if kind not in best or len(nums) > len(best[kind][0]):
                best[kind] = (nums, n)
        for kind, (nums, n) in best.items():
            # libcudart.so.11.0 is the soname of every CUDA 11.x: its minor is known from X.Y.Z names only.
            known = len(nums) >= (3 if kind == "cudart" else 2)
            out.append({"kind": kind, "version": nums, "path": os.path.join(folder, n), "source": source,
                        "minor_known": known})
    return out


def _tf_cuda(version: str) -> dict[str, str] | None:
    return TF_BUILD_CUDA.get(_minor(version or ""))


def min_driver(cuda: str) -> str | None:
    """Oldest Linux driver for CUDA ``cuda`` ("12.5", "11.8"), from :data:`CUDA_MIN_DRIVER_LINUX`."""
    return CUDA_MIN_DRIVER_LINUX.get(_minor(cuda)) or CUDA_MIN_DRIVER_LINUX.get(cuda.split(".")[0])


def check_cuda(ctx: _Ctx, target: _Target | None) -> list[Finding]:
    if ctx.plat.get("system") != "Linux":
        return []
    subjects = []  # (label, version, is_target)
    if ctx.tf in GPU_DISTRIBUTIONS and ctx.tf_version:
        subjects.append((f"{ctx.tf} {ctx.tf_version} (installed)", ctx.tf_version, False))
    if target and target.distribution in GPU_DISTRIBUTIONS and target.version != ctx.tf_version:
        subjects.append((f"{target.distribution} {target.version} (target)", target.version, True))
    subjects = [(label, v, t, _tf_cuda(v)) for label, v, t in subjects if _tf_cuda(v)]
    if not subjects:
        return []
    out: list[Finding] = []
    folders = [(p, "LD_LIBRARY_PATH") for p in ctx.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    home_folders = []
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDNN_PATH"):
        if ctx.environ.get(var):
            home_folders += [(os.path.join(ctx.environ[var], sub), var) for sub in ("lib64", "lib", "")]
    libs = _scan_libraries(folders)
    home_libs = _scan_libraries(home_folders)
    wheels = {kind: [n for n in names if n in ctx.env_dists] for kind, names in CUDA_WHEELS.items()}
    for label, version, is_target, built in subjects:
        need = {"cudart": _numbers(built["cuda"]), "cudnn": _numbers(built["cudnn"])}
        bad, shadow = [], []
        for lib in libs:
            want = need[lib["kind"]]
            have = lib["version"]
            shown = f"{lib['path']} ({lib['kind']} {'.'.join(map(str, have))}, via {lib['source']})"
            expect = f"{label} was built with {'CUDA' if lib['kind'] == 'cudart' else 'cuDNN'} " \
                     f"{'.'.join(map(str, want))}"
            if have[0] == want[0]:
                if lib["minor_known"] and have[:2] < want[:2]:
                    bad.append(f"{shown} is older than {label} needs: {expect}")
                elif wheels[lib["kind"]]:
                    pip_libs = ", ".join(f"{w} {ctx.env_dists[w]['version']}" for w in wheels[lib["kind"]])
                    shadow.append(f"{shown} is loaded before the pip-installed {pip_libs}")
            elif not wheels[lib["kind"]] and not any(o["kind"] == lib["kind"] and o["version"][0] == want[0]
                                                     for o in libs):
                bad.append(f"{shown} does not match: {expect} (TensorFlow looks for "
                           f"lib{lib['kind']}.so.{want[0]} and will not use the GPU)")
        if _numbers(version)[:2] >= (2, 14):
            env_fix = ("remove the CUDA folders from LD_LIBRARY_PATH and let pip bring the right CUDA: "
                       f"`uv pip install --python {_q(ctx.python)} {_q('tensorflow[and-cuda]==' + version)}`, "
                       f"or point LD_LIBRARY_PATH at CUDA {built['cuda']} / cuDNN {built['cudnn']}")
        else:
            env_fix = f"point LD_LIBRARY_PATH at a CUDA {built['cuda']} / cuDNN {built['cudnn']} installation"
        if bad:
            out.append(Finding(
                "cuda-libs-mismatch", "error", f"system CUDA libraries on LD_LIBRARY_PATH do not fit {label}",
                [f"LD_LIBRARY_PATH={ctx.environ.get('LD_LIBRARY_PATH', '')}", *bad], env_fix,
                fixed_by_rebuild=False, affects_new_env=is_target))
        elif shadow:
            out.append(Finding(
                "cuda-libs-shadow-pip", "warning", f"system CUDA libraries shadow the ones tensorflow[and-cuda] "
                f"installed ({label})", [f"LD_LIBRARY_PATH={ctx.environ.get('LD_LIBRARY_PATH', '')}", *shadow],
                env_fix, fixed_by_rebuild=False, affects_new_env=is_target))
        home_cuda = [h for h in home_libs if h["kind"] == "cudart"]
        if home_cuda and (home_cuda[0]["version"][:1] != need["cudart"][:1] or (
                home_cuda[0]["minor_known"] and home_cuda[0]["version"][:2] != need["cudart"][:2])):
            h = home_cuda[0]
            out.append(Finding(
                "cuda-home-mismatch", "warning", f"{h['source']} points at CUDA {'.'.join(map(str, h['version']))}, "
                f"{label} was built with CUDA {built['cuda']}",
                [f"{h['source']}={ctx.environ.get(h['source'])}", f"{h['path']}",
                 "XLA takes ptxas and libdevice from there: kernels may fail to compile or run slowly"],
                f"unset {h['source']} or point it at a CUDA {built['cuda']} toolkit", fixed_by_rebuild=False,
                affects_new_env=is_target))
        driver = ctx.profile.gpu.driver_version
        required = min_driver(built["cuda"])
        if driver and required and _numbers(driver) < _numbers(required):
            out.append(Finding(
                "driver-too-old", "error", f"the NVIDIA driver {driver} is too old for {label}",
                [f"{ctx.profile.gpu.nvidia_smi}: driver {driver}"
                 + (f", CUDA {ctx.profile.gpu.cuda_version}" if ctx.profile.gpu.cuda_version else ""),
                 f"{label} was built with CUDA {built['cuda']}, which needs driver >= {required}"],
                f"upgrade the NVIDIA driver to {required} or newer (e.g. `sudo ubuntu-drivers install`), or stay on "
                f"a TensorFlow built with an older CUDA", fixed_by_rebuild=False, affects_new_env=is_target))
    return out


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------


def _sort(findings: list[Finding]) -> list[Finding]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    unique, seen = [], set()
    for f in findings:
        key = (f.id, f.title, tuple(f.evidence))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return sorted(unique, key=lambda f: (rank.get(f.severity, 9), f.id, f.title))


def _target_checks(ctx: _Ctx, target: _Target) -> list[Finding]:
    out = check_interpreter(ctx, target)
    meta, source = ctx.metadata(target.distribution, target.version, target.files, budget=False)
    if meta is None:
        out.append(Finding(
            "target-metadata-unavailable", "warning",
            f"the requirements of {target.distribution} {target.version} could not be read: conflicts not checked",
            [source], f"run `tfrebuild plan --env {_q(ctx.loc.path)} --to {target.version}` to let the resolver "
            "decide, or pass --find-links with the wheel", fixed_by_rebuild=False, affects_new_env=False))
    else:
        target.requires = list(meta.get("requires_dist") or [])
        target.requires_python = meta.get("requires_python")
        target.metadata_source = source
        out += check_conflicts(ctx, target)
    out += check_cuda(ctx, target)
    return out


def run(env: str | os.PathLike | None = None, *, to: str | None = "latest", index_url: str | None = None,
        extra_index_urls: Iterable[str] = (), find_links: Iterable[str | os.PathLike] = (), offline: bool = False,
        pre: bool = False, environ: Mapping[str, str] | None = None, timeout: float = 20.0) -> DoctorResult:
    """``tfrebuild doctor``: probe the env deeply, read the index for the target, report findings.

    ``to=None`` skips everything that needs the index (the target checks).
    ``environ`` replaces ``os.environ`` for every check and for the probe.
    Raises :class:`UserError` (exit 2) for bad input: an unknown --to, a missing env.
    """
    start = time.monotonic()
    spec = resolve.parse_target(to) if to else None
    loc = locate(env)
    data = _run_probe(loc.python, environ, True, None)
    sources = None
    if spec is not None:
        env_for_config = dict(os.environ if environ is None else environ)
        index = indexconf.override(indexconf.discover(prefix=None if loc.bare else loc.path, environ=env_for_config),
                                   index_url=index_url, extra_index_urls=list(extra_index_urls),
                                   find_links=[str(f) for f in find_links], offline=offline)
        sources = _sources(index, offline)
    ctx = _Ctx(loc, data, environ, sources=sources, timeout=timeout, pre=pre)
    findings = check_boundaries(ctx) + check_debris(ctx) + check_consistency(ctx)
    target = None
    if spec is not None:
        if not ctx.tf:
            findings.append(Finding(
                "no-tensorflow", "info", f"{loc.path} has no TensorFlow installed: --to {spec.raw} was not checked",
                [f"{len(ctx.env_dists)} distribution(s) in {', '.join(ctx.paths.get('site_packages') or [])}"],
                f"install one: `uv pip install --python {_q(loc.python)} tensorflow`", fixed_by_rebuild=False,
                affects_new_env=False))
        else:
            target, notes = _pick_target(ctx, spec)
            findings += notes
            if target is not None:
                findings += _target_checks(ctx, target)
    if target is None:
        findings += check_cuda(ctx, None)
    return DoctorResult(
        env=str(loc.path), python=str(loc.python), python_version=ctx.interp.get("version", ""),
        env_kind=ctx.env.get("kind", "unknown"), tf_distribution=ctx.tf, tf_version=ctx.tf_version,
        target=spec.raw if spec else "", target_version=target.version if target else "",
        findings=_sort(findings), skipped=list(ctx.skipped), seconds=time.monotonic() - start)


def preflight(env_loc: EnvLocation, probe_data: dict, target_version: str, *, tf_distribution: str | None = None,
              python_version: str | None = None, index: prof.Index | None = None, offline: bool = False,
              pre: bool = False, environ: Mapping[str, str] | None = None, timeout: float = 20.0) -> list[Finding]:
    """Findings for an upgrade of ``env_loc`` to ``target_version``, for ``plan`` / ``upgrade``.

    ``probe_data`` is the report plan already has (``probe.run(python)``; a deep
    report adds the RECORD and orphan checks). ``python_version`` is the Python
    the new env will use when it differs (``--python``); ``index`` the settings
    plan resolved with (default: discovered). Returns every finding; callers
    typically act on ``f.affects_new_env`` (warn, or refuse on errors) and list
    ``f.fixed_by_rebuild`` ones as notes.
    """
    if index is None:
        index = indexconf.discover(prefix=None if env_loc.bare else env_loc.path,
                                   environ=dict(os.environ if environ is None else environ))
    ctx = _Ctx(env_loc, probe_data, environ, sources=_sources(index, offline), timeout=timeout, pre=pre,
               python_version=python_version)
    findings = check_boundaries(ctx) + check_debris(ctx) + check_consistency(ctx)
    dist = tf_distribution or ctx.tf
    if dist:
        ctx.tf = dist
        files = ctx.files(dist, budget=False)
        if files is None:
            findings.append(Finding(
                "index-unreachable", "warning", f"the package index could not be read: {dist} {target_version} was "
                "not checked", list(ctx.skipped[-1:]), "check the network or the index settings",
                fixed_by_rebuild=False, affects_new_env=False))
            findings += check_cuda(ctx, _Target(dist, target_version, []))
        else:
            findings += _target_checks(ctx, _Target(dist, target_version, files))
    return _sort(findings)
