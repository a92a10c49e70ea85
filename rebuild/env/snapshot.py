"""Snapshot: probe an environment and turn what it reports into a :class:`Profile`."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from packaging.version import InvalidVersion, Version

from rebuild import __version__
from rebuild.env import gpu
from rebuild.env import graph
from rebuild.index import config as indexconf
from rebuild.env import probe
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation, locate
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.util import fs
from rebuild.knowledge.tf import SEED_PACKAGES, TF_DISTRIBUTIONS, import_name

#: tfrebuild's own distribution: a tool installed apart, never something an env is for (never requested).
from rebuild import SELF  # noqa: E402 - its home is rebuild/__init__.py (project/detect reads it too)

#: What tfrebuild pulls in (its runtime requirements and theirs). Left behind without a REQUESTED marker when
#: tfrebuild is uninstalled from an env, they are its leftovers, not packages the user asked for.
TOOL_DEPENDENCIES = ("uv", "typer", "rich", "tomli-w", "click", "shellingham", "markdown-it-py", "mdurl", "pygments")


def _source(dist: dict) -> dict:
    """Profile fields describing where a distribution came from (``direct_url.json``)."""
    direct = dist.get("direct_url")
    if not isinstance(direct, dict) or not direct.get("url"):
        return {}
    url = indexconf.redact(str(direct["url"]))
    if direct.get("dir_info", {}).get("editable"):
        return {"source": "editable", "url": url}
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        return {
            "source": "vcs",
            "url": url,
            "vcs": vcs.get("vcs", ""),
            "commit": vcs.get("commit_id", ""),
            "requested_revision": vcs.get("requested_revision", ""),
        }
    if url.startswith("file://"):
        return {"source": "path", "url": url}
    return {"source": "url", "url": url}


def _version_key(dist: dict):
    try:
        return (1, Version(dist.get("version", "")))
    except InvalidVersion:
        return (0, Version("0"))


def effective(found: list[dict]) -> dict:
    """Of several metadata folders for one project, the one taken as installed: the highest version."""
    return max(found, key=_version_key)


#: Top-level names that are never a package's import surface (test suites, docs, examples).
_NOT_IMPORTS = frozenset({"tests", "test", "testing", "docs", "doc", "examples", "example", "benchmarks", "scripts"})
#: Top-level modules checked per requested distribution at most (its main one first).
MAX_IMPORTS_PER_DIST = 4


def _import_names(name: str, dist: dict) -> list[str]:
    """The modules to ``import`` for a requested distribution in the smoke checks: its real top-level modules
    (``top_level.txt``, else the RECORD's files), the main one first (``official`` for tf-models-official, which
    also ships ``orbit``), public ones only."""
    guess = import_name(name)
    if name in TF_DISTRIBUTIONS:
        return [guess]
    tops = sorted(
        {
            t
            for t in dist.get("top_level", [])
            if t and t.isidentifier() and not t.startswith("_") and t.lower() not in _NOT_IMPORTS
        }
    )
    if not tops:
        return [guess]
    flat = guess.lower()
    main = (
        next((t for t in tops if t == guess), None)
        or next(
            (
                t
                for t in tops
                if flat.endswith("_" + t.lower())
                or flat.startswith(t.lower() + "_")
                or t.lower() == flat.replace("_", "")
            ),
            None,
        )
        or min(tops, key=lambda t: (len(t), t))
    )
    return [main] + [t for t in tops if t != main][: MAX_IMPORTS_PER_DIST - 1]


_DEBRIS_MESSAGES = {
    "tilde-folder": "leftover of an interrupted uninstall (pip warns 'Ignoring invalid distribution')",
    "no-metadata": "metadata folder without METADATA: the distribution is half installed",
    "bad-metadata": "metadata folder whose METADATA cannot be read",
    "orphan-top-level": "top-level package that no installed distribution owns",
}


def _choose(distributions: list[dict], warnings: list[prof.Warning]) -> dict[str, dict]:
    """The installed distribution of each project (the env's first); duplicates and user-site shadows warned."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for dist in distributions:
        by_name[dist["canonical"]].append(dist)
    chosen: dict[str, dict] = {}
    for name, found in by_name.items():
        in_env = [d for d in found if d["location"] == "env"] or found
        if len(in_env) > 1:
            paths = ", ".join(d["dist_info"] for d in in_env)
            versions = ", ".join(d["version"] for d in in_env)
            warnings.append(
                prof.Warning(
                    "duplicate-dist-info",
                    in_env[0]["dist_info"],
                    f"{name} has {len(in_env)} metadata folders ({versions}): {paths}",
                )
            )
        chosen[name] = effective(in_env)
        shadowed = [d for d in found if d["location"] != in_env[0]["location"]]
        for other in shadowed:
            if other["location"] == "user":
                warnings.append(
                    prof.Warning(
                        "user-site-shadow",
                        other["dist_info"],
                        f"{name} {other['version']} is also installed in the user site",
                    )
                )
    return chosen


def _probe_warnings(data: Probed) -> list[prof.Warning]:
    """The probe's debris and its own warnings, as profile warnings."""
    warnings = []
    for item in data.debris:
        kind, path = item.get("kind", "debris"), item.get("path", "")
        warnings.append(prof.Warning(kind, path, _DEBRIS_MESSAGES.get(kind, kind)))
    for text in data.warnings:
        warnings.append(prof.Warning("probe", "", str(text)))
    return warnings


def _packages(
    chosen: dict[str, dict], markers: dict, warnings: list[prof.Warning] | None = None
) -> tuple[list[prof.Package], list[str], set[str]]:
    """Every chosen distribution as a package, the names requested (what the user asked for, and what nothing
    requested would bring back: :func:`unreached`), and those last ones apart."""
    requires = {n: d.get("requires", []) for n, d in chosen.items()}
    extras = {n: d.get("provides_extra", []) for n, d in chosen.items()}
    required_by: dict[str, set[str]] = defaultdict(set)
    hard_required = set()  # required without an extra: a dependency for sure
    extra_required = set()  # required only through an extra of another installed package
    all_edges = graph.edges(requires, markers, extras)
    hard_edges = {(e.parent, e.child) for e in all_edges if not e.via_extra}
    for edge in all_edges:
        required_by[edge.child].add(edge.parent)
        if (
            chosen.get(edge.parent, {}).get("location", "env") != "env"
            and chosen.get(edge.child, {}).get("location", "env") == "env"
        ):
            continue  # a system (or user-site) package's need keeps nothing in the env: the new env is built from it
        if not edge.via_extra:
            hard_required.add(edge.child)
        elif (edge.child, edge.parent) not in hard_edges:  # not a cycle (tensorflow-cpu <-> io-gcs[tensorflow-cpu])
            extra_required.add(edge.child)

    # uv writes REQUESTED into every distribution it installs, dependencies included
    # (astral-sh/uv#13278); when all uv-installed ones carry it, the markers say nothing.
    by_uv = [d for d in chosen.values() if (d.get("installer") or "") == "uv"]
    uv_markers_meaningless = bool(by_uv) and all(d.get("requested") for d in by_uv)
    # pip writes REQUESTED for every line of `pip install -r requirements.txt`: a fully pinned file marks
    # every dependency too. Then the graph decides: what nothing installed requires is requested.
    # uv's meaningless marks say nothing of pip's: a `uv pip install` into a pip-made env keeps pip's marks
    others = {n: d for n, d in chosen.items() if not (uv_markers_meaningless and (d.get("installer") or "") == "uv")}
    markers_meaningless = markers_mark_dependencies(others, hard_required)
    if markers_meaningless and warnings is not None:
        warnings.append(
            prof.Warning(
                REQUESTED_FROM_GRAPH,
                "",
                "REQUESTED marks (nearly) every dependency (installed from a pinned requirements file?): the requested "
                "packages are taken from the dependency graph (what nothing installed requires); name others under "
                "`requested` in a profile (--profile) to keep them",
            )
        )

    packages: list[prof.Package] = []
    requested: list[str] = []
    for name in sorted(chosen):
        dist = chosen[name]
        marker = bool(dist.get("requested")) and not (
            (uv_markers_meaningless and dist.get("installer") == "uv") or markers_meaningless
        )
        # Installed and named by another installed package's extra (etils[epath] -> fsspec, zipp): a dependency,
        # pulled in with that extra. TensorFlow itself stays what the env is for (tensorflow-io-gcs-filesystem's
        # extra `tensorflow-cpu` names it back).
        via_extra_only = name in extra_required and name not in TF_DISTRIBUTIONS
        is_requested = (
            name not in SEED_PACKAGES
            and name not in SELF
            and (marker or (name not in hard_required and not via_extra_only))
        )
        if is_requested and not marker and name in TOOL_DEPENDENCIES and name not in hard_required:
            is_requested = False  # tfrebuild's leftover (it was installed here, then uninstalled)
        if is_requested and dist["location"] == "env":
            requested.append(name)
        packages.append(
            prof.Package(
                name=name,
                version=dist["version"],
                requested=is_requested,
                location=dist["location"],
                installer=dist.get("installer") or "",
                required_by=sorted(required_by.get(name, ())),
                **_source(dist),
            )
        )
    kept = unreached(chosen, requested, all_edges, markers)
    if kept:  # resolved from, so the new env holds them; not marked requested (the user did not ask for them)
        requested = sorted(set(requested) | kept)
        if warnings is not None:
            warnings.append(
                prof.Warning(
                    KEPT_UNREACHED,
                    "",
                    f"{len(kept)} installed package(s) that no requested package requires (only another's extra or a "
                    "cycle of dependencies names them) are kept as requested, so the new env holds them too: "
                    + ", ".join(sorted(kept)),
                )
            )
    return packages, requested, kept


KEPT_UNREACHED = "kept-unreached"  # the profile warning naming packages kept because nothing requested reaches them


def unreached(
    chosen: dict[str, dict], requested: list[str], edges: list[graph.Edge], markers: dict[str, str] | None = None
) -> set[str]:
    """The env's packages that resolving ``requested`` would not bring back, as the fewest to request as well.

    A new env holds what is requested and what that requires, with the extras those requirements ask for
    (``tensorflow-datasets`` requires ``etils[epath]``, which brings ``fsspec``); a profile names no extras of
    its own. What that does not reach would be dropped without a word: a package named only behind an extra nobody
    reached asks for (installed by ``pip install etils[epath]``), and dependency cycles with no requested member
    (``jupyterlab`` -> ``notebook-shim`` -> ``jupyter-server`` -> … with nothing requested above them, as when the
    REQUESTED marks are overruled). Each round adds the unreached packages that no other unreached one names (else,
    in a cycle, the one that brings most back). TensorFlow's own extras (``and-cuda``) are the plan's (its GPU route).
    """
    env = markers or {}
    candidates = {
        n
        for n, d in chosen.items()
        if d.get("location", "env") == "env" and n not in SEED_PACKAGES and n not in SELF and n not in TOOL_DEPENDENCIES
    }
    out: dict[str, list[graph.Edge]] = defaultdict(list)
    for edge in edges:
        out[edge.parent].append(edge)

    def reach(roots: set[str]) -> set[str]:
        seen = set(roots)
        asked: dict[str, set[str]] = defaultdict(set)  # the extras a reached requirement names
        changed = True
        while changed:
            changed = False
            for parent in list(seen):
                for edge in out.get(parent, ()):
                    req = graph.line(edge.requirement)
                    if edge.via_extra and parent not in TF_DISTRIBUTIONS:
                        if req is None or not asked[parent] or not graph.applies(req, env, frozenset(asked[parent]))[0]:
                            continue
                    extras = set(req.extras) if req is not None else set()
                    if edge.child not in seen or not extras <= asked[edge.child]:
                        seen.add(edge.child)
                        asked[edge.child] |= extras
                        changed = True
        return seen

    candidates -= reach({n for n in chosen if n in SELF})  # tfrebuild's own (installed into the env): never kept
    added: set[str] = set()
    while True:
        left = candidates - reach(set(requested) | added)
        if not left:
            return added
        needed = {e.child for parent in left for e in out.get(parent, ()) if e.child in left}
        # the roots of what is left; else (a cycle) the one that brings most of it back, first by name
        added |= (left - needed) or {min(left, key=lambda n: (-len(reach({n}) & left), n))}


REQUESTED_FROM_GRAPH = "requested-from-graph"  # the profile warning saying REQUESTED markers were overruled

#: Share of the env's dependencies carrying REQUESTED above which the markers say nothing (requirement files).
MARKED_DEPENDENCIES = 0.8


def markers_mark_dependencies(chosen: dict[str, dict], hard_required: set[str]) -> bool:
    """Whether REQUESTED sits on (nearly) every dependency, as after ``pip install -r`` of a pinned file.

    A plain ``pip install tensorflow-cpu scipy`` marks two roots and none of their
    dependencies; a pinned requirements file marks them all.
    """
    deps = [d for n, d in chosen.items() if n in hard_required and n not in SEED_PACKAGES and d["location"] == "env"]
    marked = [d for d in deps if d.get("requested")]
    return len(deps) >= 3 and len(marked) >= MARKED_DEPENDENCIES * len(deps)


def _tensorflow(chosen: dict[str, dict], requested: list[str], warnings: list[prof.Warning]) -> prof.TensorFlow:
    """Which TensorFlow distribution(s) are installed; more than one is warned."""
    variants = [n for n in TF_DISTRIBUTIONS if n in chosen]
    tf = prof.TensorFlow(installed_variants=variants)
    if variants:
        main = next((v for v in variants if v in requested), variants[0])
        tf.distribution, tf.version = main, chosen[main]["version"]
        keras = chosen.get("keras") or chosen.get("tf-keras")
        tf.keras_version = keras["version"] if keras else ""
    if len(variants) > 1:
        warnings.append(
            prof.Warning(
                "tensorflow-variants",
                chosen[variants[0]]["dist_info"],
                f"{' and '.join(variants)} are installed together; they overwrite each other's files",
            )
        )
    return tf


def _interpreter(interp: dict) -> prof.Interpreter:
    return prof.Interpreter(
        version=interp["version"],
        implementation=interp.get("implementation", ""),
        executable=interp["executable"],
        base_prefix=interp.get("base_prefix", ""),
        abiflags=interp.get("abiflags") or "",
        soabi=interp.get("soabi") or "",
        pointer_bits=int(interp.get("pointer_bits") or 64),
    )


def _platform(plat: dict) -> prof.Platform:
    return prof.Platform(
        system=plat.get("system", ""),
        machine=plat.get("machine", ""),
        libc=plat.get("libc") or "",
        libc_version=plat.get("libc_version") or "",
        sysconfig_platform=plat.get("sysconfig_platform", ""),
        mac_ver=plat.get("mac_ver") or "",
    )


def build_profile(loc: EnvLocation, data: Probed, *, environ: dict[str, str] | None = None) -> prof.Profile:
    """Turn the probe's report into a profile (pure apart from GPU and config look-ups)."""
    interp, plat, env = data.interpreter, data.platform, data.env
    warnings: list[prof.Warning] = []
    chosen = _choose(data.distributions, warnings)
    warnings += _probe_warnings(data)
    packages, requested, kept = _packages(chosen, graph.marker_environment(interp, plat), warnings)
    tf = _tensorflow(chosen, requested, warnings)
    # kept only because nothing requested reaches them: resolved and kept, not each import-checked
    imports = sorted({module for name in requested if name not in kept for module in _import_names(name, chosen[name])})

    gpu_facts = gpu.detect(environ)
    gpu_facts.environ.update({k: v for k, v in data.environ.items() if k in gpu.CUDA_ENV_VARS})
    gpu_facts.environ = dict(sorted(gpu_facts.environ.items()))

    return prof.Profile(
        tool=f"tfrebuild {__version__}",
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=str(loc.python if loc.bare else loc.path),
        env_kind=env.get("kind", "unknown"),
        interpreter=_interpreter(interp),
        platform=_platform(plat),
        tensorflow=tf,
        gpu=gpu_facts,
        index=indexconf.redacted(indexconf.discover(prefix=None if loc.bare else loc.path, environ=environ)),
        requested=requested,
        smoke=prof.Smoke(imports=imports),
        project=_project(loc),
        packages=packages,
        warnings=sorted(warnings, key=lambda w: (w.kind, w.path, w.message)),
    )


def _project(loc: EnvLocation) -> prof.Project:
    """The manager that owns the env, as the profile records it (a plain env: an empty table, left out)."""
    if loc.bare:
        return prof.Project()
    from rebuild.project.detect import detect

    found = detect(loc.path)
    if found is None:
        return prof.Project()
    return prof.Project(manager=found.manager, root=str(found.root), files=list(found.files), drivable=found.drivable)


def take(env: str | os.PathLike | None = None, *, timeout: float | None = None) -> prof.Profile:
    """Probe the environment at ``env`` (default: ``$VIRTUAL_ENV`` or ``./.venv``) into a profile."""
    loc = locate(env)
    data = probe.run(loc.python, timeout=timeout)
    return build_profile(loc, data)


def check_output(output: Path, force: bool) -> None:
    """Refuse an output path we could not or should not write, before any work.

    Anything there that is not a regular file (a folder, a FIFO, a socket, a device, a symbolic link) is
    refused, ``--force`` included: -o writes documents, and replaces only a document."""
    try:
        st = os.lstat(output)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{output} is a folder.", f"Pass a file name with -o, e.g. -o {output / 'profile.toml'}.")
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = fs.kind(st.st_mode)
        raise UserError(
            f"{output} is {what}, not a regular file: tfrebuild writes -o only to a new file or over a "
            "regular file, --force included. Nothing was written.",
            "Choose a file name with -o (to read the output, leave -o out: it goes to standard output)"
            + (
                f"; to write where the link points, give its target: {os.path.realpath(output)}."
                if what == "a symbolic link"
                else "."
            ),
        )
    if output.exists() and not force:
        raise UserError(f"{output} already exists.", "Pass --force to overwrite it, or choose another file with -o.")
    parent = output.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"Cannot write {output}: {parent} is a file, not a folder.", "Choose another place with -o.")
    if not os.access(parent, os.W_OK):
        raise UserError(f"Cannot write {output}: {parent} is not writable.", "Choose another place with -o.")


def write(profile: prof.Profile, output: Path) -> None:
    """Write a profile atomically."""
    write_text_atomic(output, prof.dumps(profile))


def write_text_atomic(output: Path, text: str) -> None:
    """Write a user-facing file (profile, export, bundle) atomically; permissions as the umask says."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fs.atomic_write(output, text, durable=False)
    except OSError as exc:
        raise UserError(f"Cannot write {output}: {exc.strerror or exc}.", "Choose another place with -o.") from exc
