"""Resolution with uv: pick the TensorFlow target, resolve the new set, lock it.

Nothing here reimplements a resolver. The *minimal* strategy seeds uv's
output file with the installed pins, which uv treats as preferences (it keeps
a pinned version unless a requirement forbids it). Because uv then moves a
package it must move to the newest allowed version, a second pass caps each
package that jumped a major version below its next major and keeps the caps
that still resolve (numpy 1.24 → 1.26 rather than 2.x when that works).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.index import config as indexconf
from rebuild.util import uv as uvcmd
from rebuild.errors import UserError
from rebuild.core.options import Strategy
from rebuild.env.profile import Index
from rebuild.util.versions import TargetSpec as TargetSpec, parse_target as parse_target  # doctor reads them too


@dataclass
class Inputs:
    """Everything a resolution depends on."""

    python: Path  # interpreter the new env will use (uv reads its tags and markers)
    tf_distribution: str
    requested: list[str]  # requirement strings, TensorFlow excluded
    pins: dict[str, str]  # installed versions: preferences for the minimal strategy
    constraints: dict[str, str] = field(default_factory=dict)  # name -> specifier
    index: Index = field(default_factory=Index)
    offline: bool = False
    pre: bool = False
    strategy: Strategy = Strategy.MINIMAL
    extras: list[str] = field(default_factory=list)  # extras of the TensorFlow requirement
    log: Path | None = None
    # name -> requirement line ("-e /path", "name @ file:///...", "name @ git+URL@commit") of each distribution
    # that came from no index: passed as a direct reference, so its name is never looked up on an index.
    direct: dict[str, str] = field(default_factory=dict)
    no_build: bool = False  # uv --only-binary :all:: wheels only, no package code runs (a foreign --profile)
    build_constraints: list[str] = field(default_factory=list)  # files: build dependencies of sdists uv builds
    reuse: Any = field(default=None, repr=False, compare=False)  # a core.reuse.Reuse: plan keeps, upgrade reuses


@dataclass
class Resolved:
    tf_version: str
    pins: dict[str, str]  # canonical name -> version
    via: dict[str, list[str]]  # canonical name -> parents (from uv's annotations)
    pylock: str  # PEP 751 text with hashes where the index has them
    capped: list[str]  # packages kept below their next major by the second pass
    seconds: float


class ResolutionFailed(Exception):
    def __init__(self, explanation: str):
        super().__init__(explanation)
        self.explanation = explanation


def _common_args(inputs: Inputs, constrained: bool = True) -> list[str]:
    args = ["--no-config", "--python", str(inputs.python), "--quiet"]
    args += indexconf.uv_args(inputs.index, offline=inputs.offline, for_install=not constrained)
    args += ["--prerelease", "allow" if inputs.pre else "if-necessary-or-explicit"]
    if inputs.no_build:
        args += ["--only-binary", ":all:"]
    for path in inputs.build_constraints:
        args += ["--build-constraints", path]
    return args


def _explain(stderr: str) -> str:
    lines = [line.rstrip() for line in stderr.strip().splitlines()]
    return "\n".join(line for line in lines if line.strip())


def failed_build(stderr: str, log: Path | None) -> UserError | None:
    """uv's "Failed to build `pkg==v`" as its own error (a build failure is not a version conflict)."""
    from rebuild.util import failtext

    package = failtext.failed_package(stderr)
    if not package or "Failed to build" not in stderr:
        return None
    return UserError(
        f"uv could not build {package} from source while resolving; nothing was changed.",
        (f"uv's full output is in {log}. " if log else "")
        + f"{package} has no wheel for this Python and platform, and building its source failed; "
        "the lines above say why (often a build tool or a system library it needs).",
        exit_code=1,
        details="uv says:\n" + failtext.uv_error(stderr),
    )


def _pip_compile(inputs: Inputs, args: list[str], constrained: bool = True) -> str:
    """``uv pip compile <args>`` with the common arguments; its stdout, or :class:`ResolutionFailed` in uv's words.

    ``constrained``: the configured constraints apply (their files, and their recorded lines, which a
    profile carries to machines without the files); locking exact pins takes none.
    """
    with tempfile.TemporaryDirectory(prefix="tfrebuild-constraints-") as tmp:
        extra: list[str] = []
        if constrained and inputs.index.constraint_lines:
            carried = Path(tmp) / "configured-constraints.txt"
            carried.write_text("\n".join(inputs.index.constraint_lines) + "\n", encoding="utf-8")
            extra = ["--constraint", str(carried)]
        # UV_CONSTRAINT is in inputs.index already (indexconf.discover): uv must not add it a second time,
        # so that an index without constraints means none.
        environ = {k: v for k, v in os.environ.items() if k != "UV_CONSTRAINT"}
        result = uvcmd.run(
            ["pip", "compile"] + args + extra + _common_args(inputs, constrained),
            log=inputs.log,
            check=False,
            what="uv pip compile",
            for_install=not constrained,
            env=environ,
            sources=uvcmd.index_sources(inputs.index),
        )
    if result.returncode != 0:
        if (
            "not found in the package registry" in result.stderr
            and not inputs.offline
            and os.environ.get("UV_OFFLINE", "").lower() not in ("1", "true", "yes")
        ):
            check_index_roots(inputs.index)  # a wrong index URL reads as "no such package"
        explanation = _explain(result.stderr)
        built = failed_build(result.stderr, inputs.log)
        if built is not None:  # not a conflict between versions: say which package and why
            raise built
        if inputs.no_build:
            explanation += (
                "\n(tfrebuild let uv use wheels only, since the --profile was not written by tfrebuild "
                "for this env: pass --allow-sources to let uv build sdists, which runs their code)"
            )
        raise ResolutionFailed(explanation)
    return result.stdout


def check_index_roots(index: Index, timeout: float = 15.0) -> None:
    """Raise the network error of the first http(s) index whose root page does not answer 200.

    uv takes a 404 for a project's page to mean "no such project", so an index URL that is wrong
    altogether (404 at its root), or a server that fails, would read as a version problem. Only the
    status is read, not the (possibly large) page.
    """
    from rebuild.index import http

    urls = [] if index.no_index else [index.index_url or indexconf.PYPI, *index.extra_index_urls]
    for url in urls:
        if not http.is_http(url):
            continue
        try:
            with http.open_url(url.rstrip("/") + "/", timeout=timeout):
                pass
        except http.ERRORS as exc:
            raise http.network_error("the package index", url, exc) from None


def _tf_requirement(inputs: Inputs, spec: str) -> str:
    extras = f"[{','.join(inputs.extras)}]" if inputs.extras else ""
    return f"{inputs.tf_distribution}{extras}{spec}"


def find_target(inputs: Inputs, target: TargetSpec) -> str:
    """The TensorFlow version the target means for this interpreter (uv checks wheel tags)."""
    with tempfile.TemporaryDirectory(prefix="tfrebuild-target-") as tmp:
        req = Path(tmp) / "target.in"
        # the profile's [constraints] on TensorFlow hold the target too (--to latest: the newest they allow)
        held = inputs.constraints.get(inputs.tf_distribution, "")
        req.write_text(f"{inputs.tf_distribution}{','.join(s for s in (target.specifier, held) if s)}\n")
        stdout = _pip_compile(
            inputs, [str(req), "--no-deps", "--no-header", "--no-annotate", "--only-binary", inputs.tf_distribution]
        )
    for line in stdout.splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name.strip()) == inputs.tf_distribution:
            return version.strip()
    raise ResolutionFailed(f"uv returned no version of {inputs.tf_distribution}:\n{stdout}")


def _parse_requirements_output(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    pins: dict[str, str] = {}
    via: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comment = line.lstrip("#").strip()
            if current and comment.startswith("via"):
                rest = comment[3:].strip()
                parents = [rest] if rest else []
                via.setdefault(current, []).extend(p for p in parents if p)
            elif current and raw.startswith("    #   "):
                via.setdefault(current, []).append(comment)
            continue
        req = line.split(";")[0].strip()
        name, sep, version = req.partition("==")
        if not sep:  # a direct reference ("-e /path", "name @ url"): its pin is the installed one
            current = canonicalize_name(req.partition(" @ ")[0]) if " @ " in req else None
            continue
        current = canonicalize_name(name.split("[")[0])
        pins[current] = version.strip()
    cleaned = {}
    for name, parents in via.items():
        names = set()
        for parent in parents:
            if parent.startswith(("-c", "--constraint")):
                continue  # our own constraints file (the major-version caps), not a parent
            names.add("(requested)" if parent.startswith("-r") else canonicalize_name(parent.split()[0]))
        cleaned[name] = sorted(names)
    return pins, cleaned


def compile_requirements(
    inputs: Inputs, requirements: list[str], extra_constraints: list[str], workdir: Path
) -> tuple[dict[str, str], dict[str, list[str]]]:
    req_file = workdir / "requirements.in"
    req_file.write_text("\n".join(requirements) + "\n")
    out_file = workdir / "resolved.txt"
    if inputs.strategy == Strategy.MINIMAL:
        out_file.write_text("".join(f"{n}=={v}\n" for n, v in sorted(inputs.pins.items()) if n not in inputs.direct))
    elif out_file.exists():
        out_file.unlink()
    constraint_lines = [f"{n}{s}" for n, s in sorted(inputs.constraints.items())] + extra_constraints
    args = [str(req_file), "-o", str(out_file), "--no-header", "--annotation-style", "split"]
    if constraint_lines:
        cfile = workdir / "constraints.txt"
        cfile.write_text("\n".join(constraint_lines) + "\n")
        args += ["--constraint", str(cfile)]
    if inputs.strategy == Strategy.EAGER:
        args.append("--upgrade")
    _pip_compile(inputs, args)
    return _parse_requirements_output(out_file.read_text())


def _major(version: str) -> int | None:
    try:
        return Version(version).major
    except InvalidVersion:
        return None


def ruled_out_caps(caps: dict[str, int], target_requires: list[str] | None) -> set[str]:
    """Names in ``caps`` (name -> installed major) that the target's own requirements put at or above the next
    major (``protobuf>=6.31.1`` against an installed protobuf 4): capping them below it cannot resolve."""
    from packaging.requirements import InvalidRequirement, Requirement

    out: set[str] = set()
    for text in target_requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if name not in caps:
            continue
        for spec in req.specifier:
            if spec.operator not in (">=", ">", "==", "~=", "==="):
                continue
            floor = _major(spec.version.removesuffix(".*"))
            if floor is not None and floor > caps[name]:  # every version it allows is a newer major
                out.add(name)
    return out


def resolve(inputs: Inputs, tf_version: str, target_requires: Callable[[], list[str] | None] | None = None) -> Resolved:
    """Resolve the requested set with TensorFlow pinned to ``tf_version`` and lock it.

    ``target_requires``: a callable giving the target's applicable requirements (or ``None``); a cap they rule
    out is not tried, so a jump the target itself demands costs no extra resolution pass. With ``inputs.reuse``,
    ``plan`` keeps the result and ``upgrade`` reuses the plan's for the same inputs (:mod:`rebuild.core.reuse`)."""
    if inputs.reuse is not None:
        reused: Resolved = inputs.reuse.resolved(
            inputs, tf_version, lambda: _resolve(inputs, tf_version, target_requires), Resolved
        )
        return reused
    return _resolve(inputs, tf_version, target_requires)


def _resolve(
    inputs: Inputs, tf_version: str, target_requires: Callable[[], list[str] | None] | None = None
) -> Resolved:
    start = time.monotonic()
    requirements = (
        [_tf_requirement(inputs, f"=={tf_version}")]
        + list(inputs.requested)
        + [line for _, line in sorted(inputs.direct.items())]
    )
    with tempfile.TemporaryDirectory(prefix="tfrebuild-resolve-") as tmp:
        workdir = Path(tmp)
        pins, via = compile_requirements(inputs, requirements, [], workdir)
        capped: list[str] = []
        if inputs.strategy == Strategy.MINIMAL:
            installed = {n: m for n, v in inputs.pins.items() if (m := _major(v)) is not None}
            jumped = [
                n
                for n, v in pins.items()
                if n in installed and n != inputs.tf_distribution and (m := _major(v)) is not None and m > installed[n]
            ]
            caps = {n: f"{n}<{installed[n] + 1}" for n in jumped}
            if caps and target_requires is not None:
                for name in ruled_out_caps({n: installed[n] for n in caps}, target_requires()):
                    caps.pop(name)
            if caps:
                try:
                    pins, via = compile_requirements(inputs, requirements, list(caps.values()), workdir)
                    capped = sorted(caps)
                except ResolutionFailed:
                    for name in sorted(caps):  # keep each cap that resolves on its own
                        try:
                            trial = compile_requirements(
                                inputs, requirements, [caps[c] for c in capped + [name]], workdir
                            )
                        except ResolutionFailed:
                            continue
                        pins, via = trial
                        capped.append(name)
        for name in inputs.direct:  # locked from their source; the version is the installed one
            pins[name] = inputs.pins.get(name, pins.get(name, ""))
            via.pop(name, None)
        pylock = lock(inputs, pins, workdir, cached=True)
    return Resolved(
        tf_version=tf_version, pins=pins, via=via, pylock=pylock, capped=capped, seconds=time.monotonic() - start
    )


def lock(inputs: Inputs, pins: dict[str, str], workdir: Path, cached: bool = False) -> str:
    """A PEP 751 lock of exactly ``pins`` (with hashes where the index provides them).

    A name in ``inputs.direct`` is locked from its source (a ``directory``, ``archive`` or ``vcs`` entry).
    ``cached``: the resolution that chose ``pins`` has just read every one of their index pages, so the lock is
    first made from uv's cache (``--offline``: no second round of page revalidations, the costliest part of a
    warm lock); when the cache cannot make it, the lock is made again online, as without ``cached``.
    """
    pinned = workdir / "pinned.txt"
    pinned.write_text(
        "".join(f"{inputs.direct[n]}\n" if n in inputs.direct else f"{n}=={v}\n" for n, v in sorted(pins.items()))
    )
    out = workdir / "pylock.toml"
    args = [str(pinned), "--no-deps", "--format", "pylock.toml", "-o", str(out), "--no-header"]
    made = False
    if cached and not inputs.offline:
        try:
            _pip_compile(replace(inputs, offline=True), args, constrained=False)
            made = True
        except (ResolutionFailed, UserError):
            out.unlink(missing_ok=True)  # not all in the cache: the online lock below decides
    if not made:
        _pip_compile(inputs, args, constrained=False)
    text = out.read_text()
    return _with_versions(text, pins) if inputs.direct else text


def _with_versions(text: str, pins: dict[str, str]) -> str:
    """uv locks a source tree without a version; record the installed one (PEP 751 allows it, uv reads it)."""
    import tomllib

    import tomli_w

    data = tomllib.loads(text)
    missing = [p for p in data.get("packages", []) if "version" not in p and pins.get(canonicalize_name(p["name"]))]
    if not missing:
        return text
    for pkg in missing:
        pkg["version"] = pins[canonicalize_name(pkg["name"])]
    data["packages"] = [
        {k: p[k] for k in sorted(p, key=lambda k: (k != "name", k != "version"))} for p in data["packages"]
    ]
    return tomli_w.dumps(data)
