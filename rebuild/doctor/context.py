"""What every doctor check reads: the probe report, the profile built from it, the process environment
and (cached, budgeted) index look-ups, gathered once in a :class:`Context`."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.doctor import remote
from rebuild.env import graph, probe, snapshot
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.index import config as indexconf
from rebuild.index import simple as indexinfo
from rebuild.index import tags as wheel_tags
from rebuild.index import metadata
from rebuild.knowledge.tf import TF_DISTRIBUTIONS

MAX_LOOKUPS = 12  # index requests beyond the TensorFlow listing and its metadata
_CAP_OPERATORS = ("<", "<=", "==", "~=", "===")


# ---------------------------------------------------------------------------
# small helpers every check uses
# ---------------------------------------------------------------------------


def q(value: object) -> str:
    """Shell-quoted, for the commands a fix shows."""
    return shlex.quote(str(value))


def req_text(req: Requirement) -> str:
    """``name[extras]specifier`` without the marker (what a user reads)."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def applies(req: Requirement, markers: Mapping[str, str], extras: Iterable[str] = ()) -> bool:
    if req.marker is None:
        return True
    try:
        for extra in ("", *extras):
            if req.marker.evaluate({**markers, "extra": extra}):
                return True
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False
    return False


def version_of(text: str | None) -> Version | None:
    try:
        return Version(str(text))
    except (InvalidVersion, TypeError):
        return None


def contains(spec: SpecifierSet, version: str | Version) -> bool:
    return spec.contains(str(version), prereleases=True)


def python_ok(requires_python: str | None, version: str) -> bool:
    """Whether a file's Requires-Python admits ``version`` (an unreadable one does not exclude, like pip)."""
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(version, prereleases=True)
    except InvalidSpecifier:
        return True


def has_cap(spec: SpecifierSet) -> bool:
    return any(s.operator in _CAP_OPERATORS for s in spec)


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or ""))


def real(path: str | os.PathLike) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return os.path.abspath(path)


# ---------------------------------------------------------------------------
# the probe, under the environment doctor was given
# ---------------------------------------------------------------------------


def run_probe(python: Path, environ: Mapping[str, str] | None, deep: bool) -> Probed:
    """The deep probe report; with ``environ`` the probe runs under that environment (user site, PATH ...)."""
    return probe.run(python, deep=deep, environ=environ)


# ---------------------------------------------------------------------------
# the context
# ---------------------------------------------------------------------------


@dataclass
class Target:
    """The TensorFlow release an upgrade would install, and what the index says about it."""

    distribution: str
    version: str
    files: list[indexinfo.FileInfo]
    requires: list[str] | None = None  # None: metadata unknown
    requires_python: str | None = None
    metadata_source: str = ""


def index_sources(index: prof.Index, offline: bool) -> indexinfo.Sources:
    urls = [] if index.no_index else [index.index_url or indexconf.PYPI] + list(index.extra_index_urls)
    return indexinfo.Sources(index_urls=urls, find_links=list(index.find_links), offline=offline)


def _copies(dists: list[dict], where: str) -> dict[str, list[dict]]:
    """canonical name -> its metadata folders in one location (``env``, ``user``, ``system``)."""
    out: dict[str, list[dict]] = {}
    for d in dists:
        if d.get("location") == where:
            out.setdefault(d["canonical"], []).append(d)
    return out


def _effective_by_name(dists: list[dict], order: Iterable[str]) -> dict[str, dict]:
    """canonical name -> the copy taken as installed (as the snapshot takes it), searching the locations in
    ``order``."""
    out: dict[str, dict] = {}
    for where in order:
        for name, same in _copies(dists, where).items():
            out.setdefault(name, snapshot.effective(same))
    return out


class Context:
    """The environment as every check sees it (read once), plus the index look-ups the checks share."""

    def __init__(
        self,
        loc: EnvLocation,
        data: Probed,
        environ: Mapping[str, str] | None,
        *,
        sources: indexinfo.Sources | None,
        timeout: float,
        pre: bool = False,
        python_version: str | None = None,
    ):
        self.loc, self.data = loc, data
        self.environ = dict(os.environ if environ is None else environ)
        self.sources, self.timeout, self.pre = sources, timeout, pre
        self.profile = snapshot.build_profile(loc, data, environ=self.environ)
        self.interp = dict(data.interpreter)
        self.plat = dict(data.platform)
        self.env = dict(data.env)
        self.paths = dict(data.paths)
        self.python = str(loc.python)
        self.markers = graph.marker_environment(self.interp, self.plat)
        self.dists: list[dict] = list(data.distributions)
        self.env_copies = _copies(self.dists, "env")  # more than one: duplicate metadata folders
        self.env_dists = _effective_by_name(self.dists, ["env"])
        # What `import` finds: the user site (when enabled) comes first, then the env, then the system site.
        order = ["user", "env", "system"] if self.paths.get("user_site_enabled") else ["env", "system"]
        if not self.env.get("include_system_site_packages"):
            order = [o for o in order if o != "system"]
        self.visible = _effective_by_name(self.dists, order)
        # Edges through an extra do not count: tensorflow-text's `tensorflow_cpu` extra does not make
        # tensorflow-cpu a dependency the user did not ask for.
        self.required_by: dict[str, list[str]] = {}
        requires = {n: d.get("requires") or [] for n, d in self.env_dists.items()}
        extras = {n: d.get("provides_extra") or [] for n, d in self.env_dists.items()}
        for edge in graph.edges(requires, self.markers, extras):
            if not edge.via_extra:
                self.required_by.setdefault(edge.child, []).append(edge.parent)
        # What was asked for and which TensorFlow is installed: the snapshot's answer (one rule for both).
        self.requested = set(self.profile.requested)
        tf = self.profile.tensorflow.distribution
        self.tf = tf if tf in self.env_dists else next((v for v in TF_DISTRIBUTIONS if v in self.env_dists), "")
        self.tf_version = self.env_dists[self.tf]["version"] if self.tf else ""
        self.new_python = python_version or self.interp.get("version", "")
        self.new_markers = dict(self.markers)
        if python_version:
            self.new_markers["python_version"] = ".".join(map(str, numbers(python_version)[:2]))
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
            return wheel_tags.supported_tags(wheel_tags.Target.from_mapping(merged))
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

    def metadata(
        self, project: str, version: str, files: list[indexinfo.FileInfo], *, budget: bool = True
    ) -> tuple[dict | None, str]:
        """(metadata, where it came from) of one release, or (None, why not)."""
        if budget:
            if self.lookups >= MAX_LOOKUPS:
                return None, "too many index look-ups"
            self.lookups += 1
        want = version_of(version)
        wheels = [f for f in files if f.is_wheel and not f.yanked and f.version == want]
        tags = set(self.target_tags())
        wheels.sort(key=lambda f: (not f.is_local, f.tags.isdisjoint(tags)))
        offline = bool(self.sources and self.sources.offline)
        why = f"no wheel of {project} {version} on the index"
        for f in wheels[:2]:
            try:
                return metadata.read_metadata(f, timeout=self.timeout, offline=offline), (
                    "the wheel" if f.is_local else "the index's metadata file (PEP 658)"
                )
            except metadata.MetadataUnavailable as exc:
                why = str(exc)
            if f.is_local or offline:
                continue
            if not f.has_metadata:
                try:  # many indexes serve <wheel>.metadata without announcing it
                    return metadata.read_metadata(
                        replace(f, has_metadata=True), timeout=self.timeout
                    ), "the metadata file beside the wheel"
                except metadata.MetadataUnavailable:
                    pass
            try:
                return remote.metadata_by_ranges(f, self.timeout), "byte ranges of the wheel"
            except metadata.MetadataUnavailable as exc:
                why = str(exc)
            break
        if not offline and self.sources is not None:
            meta = remote.pypi_json(self.sources.index_urls, project, version, self.timeout)
            if meta is not None:
                return meta, "PyPI's JSON API"
        return None, why

    def requirements_of(self, dist: dict, markers: Mapping[str, str] | None = None) -> list[Requirement]:
        out = []
        for text in dist.get("requires") or []:
            req = graph.parse(text)
            if req is not None and applies(req, markers or self.markers):
                out.append(req)
        return out
