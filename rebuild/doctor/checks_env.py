"""Checks of the environment as it is today: its boundaries (what leaks in from outside) and whether the installed
set is consistent (``pip check``); installation debris is :mod:`rebuild.doctor.checks_debris`."""

from __future__ import annotations

import os
import re
import shutil
from typing import Mapping

from packaging.utils import canonicalize_name

from rebuild.doctor.context import Context, contains, q, real, req_text
from rebuild.doctor.findings import Finding
from rebuild.doctor.findings import FindingId as F
from rebuild.knowledge.tf import TF_DISTRIBUTIONS
from rebuild.util import proc
from rebuild.util.versions import minor

_PIP_FROM = re.compile(r"^pip \S+ from (.+?) \(python ([0-9.]+)\)\s*$", re.M)


# ---------------------------------------------------------------------------
# environment boundaries
# ---------------------------------------------------------------------------


def _top_level_names(ctx: Context) -> dict[str, str]:
    """Import name -> owning distribution, for the env's distributions."""
    out: dict[str, str] = {}
    for name, d in ctx.env_dists.items():
        for top in d.get("top_level") or []:
            out.setdefault(top, name)
    return out


def _venv_site(interpreter: str) -> tuple[str, str] | None:
    """(site-packages, Python version) of the venv ``interpreter`` belongs to, read from its ``pyvenv.cfg``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(interpreter)))
    try:
        with open(os.path.join(root, "pyvenv.cfg"), encoding="utf-8") as fh:
            cfg = dict(line.split("=", 1) for line in fh.read().splitlines() if "=" in line)
    except (OSError, ValueError):
        return None
    cfg = {k.strip(): v.strip() for k, v in cfg.items()}
    version = cfg.get("version_info") or cfg.get("version") or ""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        return None
    site = os.path.join(root, "lib", f"python{match.group(1)}.{match.group(2)}", "site-packages")
    return (site, f"{match.group(1)}.{match.group(2)}") if os.path.isdir(site) else None  # as `pip --version`


def _pip_site_from_shebang(exe: str) -> tuple[str, str] | None:
    """(site dir, Python version) for a pip console script whose shebang names a venv's interpreter: no process."""
    try:
        with open(exe, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if len(words) != 1 or "python" not in os.path.basename(words[0]):
        return None  # `#!/bin/sh` trampolines, `env python`, options: ask pip itself
    return _venv_site(words[0])


def _pip_site(exe: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(site dir pip installs into, its Python version): from the script's venv when its shebang names one (no
    process started), else from ``pip --version``."""
    found = _pip_site_from_shebang(exe)
    if found is not None:
        return found
    res = proc.run([exe, "--version"], env=dict(environ), timeout=20)
    match = _PIP_FROM.search(res.stdout or "")
    if not res.ok or not match:
        return None
    return os.path.dirname(match.group(1).rstrip("/")), match.group(2)


def check_boundaries(ctx: Context) -> list[Finding]:
    """What leaks into the env from outside it: no venv, system/user site, PYTHONPATH/PYTHONHOME, a foreign pip."""
    checks = (
        _check_not_a_venv,
        _check_system_site,
        _check_user_site,
        _check_pythonpath,
        _check_pythonhome,
        _check_pip,
        _check_project,
    )
    return [finding for check in checks for finding in check(ctx)]


def _check_project(ctx: Context) -> list[Finding]:
    """A project's tool owns the env: its next run rebuilds the env from the project's files."""
    if ctx.loc.bare:
        return []
    from rebuild.project.detect import detect

    found = detect(ctx.loc.path)
    if found is None:
        return []
    evidence = [f"{found.root / name}" for name in found.files] or [str(found.root)]
    if found.drivable:
        return [
            F.PROJECT_DRIVEN.make(
                f"the env belongs to a {found.label}: `tfrebuild upgrade` changes its files with the env",
                evidence,
                "nothing to do; `tfrebuild rollback` restores the files with the env",
                fixed_by_rebuild=False,
                affects_new_env=False,
            )
        ]
    return [
        F.PROJECT_UNDRIVEN.make(
            f"the env belongs to a {found.label}: {found.reverts}",
            evidence,
            f"{found.fix}",
            fixed_by_rebuild=False,
            affects_new_env=False,
        )
    ]


def _check_not_a_venv(ctx: Context) -> list[Finding]:
    """A system interpreter, not an environment."""
    py = ctx.python
    site = ctx.paths.get("site_packages") or []
    if ctx.env.get("kind", "unknown") != "system":
        return []
    extra = (
        ["the interpreter is marked externally managed (PEP 668): pip refuses to install there"]
        if ctx.env.get("externally_managed")
        else []
    )
    return [
        F.NOT_A_VENV.make(
            f"{py} is not in a virtual environment: installs go to the global site-packages",
            [
                f"interpreter: {ctx.interp.get('executable', py)} (Python {ctx.interp.get('version', '?')})",
                f"site-packages: {', '.join(site) or '?'}",
                *extra,
            ],
            f"create a venv and install there: `uv venv ~/venvs/tf --python {q(ctx.interp.get('executable', py))}` "
            "then `uv pip install --python ~/venvs/tf/bin/python tensorflow`; tfrebuild manages venv, virtualenv, uv "
            "and conda environments",
            fixed_by_rebuild=False,
            affects_new_env=True,
        )
    ]


def _check_system_site(ctx: Context) -> list[Finding]:
    """include-system-site-packages = true."""
    env_path = ctx.loc.path
    if not ctx.env.get("include_system_site_packages"):
        return []
    system = [d for d in ctx.dists if d.get("location") == "system"]
    tf_sys = [
        f"{d['name']} {d['version']} ({d['site_dir']})"
        for d in system
        if d["canonical"] in TF_DISTRIBUTIONS or d["canonical"] == "numpy"
    ]
    return [
        F.SYSTEM_SITE_PACKAGES.make(
            "the env sees the system site-packages (include-system-site-packages = true)",
            [
                f"{env_path / 'pyvenv.cfg'}: include-system-site-packages = true",
                f"{len(system)} distribution(s) visible from {', '.join(ctx.paths.get('system_site_packages') or []) or '?'}",
                *[f"also visible: {t}" for t in tf_sys[:5]],
            ],
            f"install what you use into the env, then set `include-system-site-packages = false` in "
            f"{q(env_path / 'pyvenv.cfg')}; `tfrebuild upgrade` keeps the setting for the new env (with --python, the "
            "new env sees that Python's system site-packages, which may lack what you import from these)",
            dropped_by_rebuild=True,
        )
    ]


def _check_user_site(ctx: Context) -> list[Finding]:
    """Packages in the user site that import instead of, or beside, the env's."""
    out: list[Finding] = []
    user = [d for d in ctx.dists if d.get("location") == "user"]
    if user and ctx.paths.get("user_site_enabled"):
        shadow = [d for d in user if d["canonical"] in ctx.env_dists]
        user_site = ctx.paths.get("user_site") or "the user site"
        base = ctx.interp.get("base_prefix") or ""
        base_py = f"{base}/bin/python{minor(ctx.interp.get('version', '3'))}" if base else "python3"
        names = " ".join(sorted({d["name"] for d in (shadow or user)}))
        fix = (
            f"remove them from the user site: `{q(base_py)} -m pip uninstall -y {names}` run outside any venv "
            f"(or `export PYTHONNOUSERSITE=1`); `tfrebuild upgrade` builds a venv that ignores the user site"
        )
        if shadow:
            out.append(
                F.USER_SITE_SHADOW.make(
                    f"{len(shadow)} package(s) in {user_site} shadow the env's own copies",
                    [
                        f"{d['name']} {d['version']} in {d['dist_info']} is imported instead of "
                        f"{ctx.env_dists[d['canonical']]['version']} in {ctx.env_dists[d['canonical']]['site_dir']}"
                        for d in shadow
                    ],
                    fix,
                    fixed_by_rebuild=True,
                    affects_new_env=False,
                )
            )
        rest = [d for d in user if d["canonical"] not in ctx.env_dists]
        if rest:
            out.append(
                F.USER_SITE_VISIBLE.make(
                    f"{len(rest)} package(s) from {user_site} are importable in this env",
                    [f"{d['name']} {d['version']} ({d['dist_info']})" for d in rest[:10]]
                    + ([f"... and {len(rest) - 10} more"] if len(rest) > 10 else []),
                    fix,
                    fixed_by_rebuild=True,
                    affects_new_env=False,
                )
            )
    return out


def _check_pythonpath(ctx: Context) -> list[Finding]:
    """PYTHONPATH, and what it shadows."""
    out: list[Finding] = []
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
                    shadows.append(
                        f"{os.path.join(entry, n)} shadows {mod} of {owners[mod]} "
                        f"{ctx.env_dists[owners[mod]]['version']}"
                    )
        fix = (
            "unset it: `unset PYTHONPATH` (and remove it from ~/.bashrc or the job script); it also applies "
            "to the upgraded env"
        )
        if shadows:
            out.append(
                F.PYTHONPATH_SHADOW.make(
                    "PYTHONPATH puts other copies of installed packages first on sys.path",
                    [f"PYTHONPATH={pythonpath}", *shadows],
                    fix,
                    fixed_by_rebuild=False,
                    affects_new_env=True,
                )
            )
        else:
            out.append(
                F.PYTHONPATH_SET.make(
                    "PYTHONPATH is set: its folders come before the env's site-packages",
                    [f"PYTHONPATH={pythonpath}"],
                    fix,
                    fixed_by_rebuild=False,
                    affects_new_env=True,
                )
            )
    return out


def _check_pythonhome(ctx: Context) -> list[Finding]:
    """PYTHONHOME."""
    if not ctx.environ.get("PYTHONHOME"):
        return []
    return [
        F.PYTHONHOME_SET.make(
            "PYTHONHOME is set: Python takes its standard library from there",
            [
                f"PYTHONHOME={ctx.environ['PYTHONHOME']}",
                f"the env's base interpreter lives in {ctx.interp.get('base_prefix', '?')}",
            ],
            "`unset PYTHONHOME`; it is almost never needed and breaks every venv made from another Python",
            fixed_by_rebuild=False,
            affects_new_env=True,
        )
    ]


def _env_active(ctx: Context) -> bool:
    """Whether a bare `pip` is meant for this env: it is activated ($VIRTUAL_ENV) or its bin/ is on PATH."""
    root = real(ctx.loc.path)
    if ctx.environ.get("VIRTUAL_ENV") and real(ctx.environ["VIRTUAL_ENV"]) == root:
        return True
    bins = {real(os.path.dirname(os.path.abspath(ctx.python))), real(os.path.join(root, "bin"))}
    return any(e and real(e) in bins for e in ctx.environ.get("PATH", "").split(os.pathsep))


def _check_pip(ctx: Context) -> list[Finding]:
    site = {real(p) for p in ctx.paths.get("site_packages") or []}
    if not site or not _env_active(ctx):  # an env that is not activated is not what a bare `pip` installs into
        return []
    wrong: list[tuple[str, str, str]] = []  # (command, path, "installs into ...")
    seen: set[str] = set()
    for name in ("pip", "pip3"):
        exe = shutil.which(name, path=ctx.environ.get("PATH", os.defpath))
        if not exe or real(exe) in seen:
            continue
        seen.add(real(exe))
        if os.path.dirname(os.path.abspath(exe)) == os.path.dirname(os.path.abspath(ctx.python)):
            continue  # the env's own pip
        found = _pip_site(exe, ctx.environ)
        if found is None:
            continue
        target, version = found
        if real(target) not in site:
            wrong.append((name, exe, f"{target} (Python {version})"))
    if not wrong:
        return []
    names = " and ".join(f"`{n}`" for n, _, _ in wrong)
    return [
        F.PIP_OTHER_INTERPRETER.make(
            f"{names} on PATH install{'s' if len(wrong) == 1 else ''} into another Python, not into this env",
            [f"{exe} installs into {where}" for _, exe, where in wrong]
            + [
                f"this env's site-packages: {', '.join(ctx.paths.get('site_packages') or [])} "
                f"(Python {ctx.interp.get('version', '?')})"
            ],
            f"use the env's own installer: `{q(ctx.python)} -m pip install ...` or "
            f"`uv pip install --python {q(ctx.python)} ...` (or activate it: "
            f"`source {q(ctx.loc.path / 'bin' / 'activate')}`)",
            fixed_by_rebuild=False,
            affects_new_env=True,
        )
    ]


# ---------------------------------------------------------------------------
# consistency today (pip check)
# ---------------------------------------------------------------------------


def check_consistency(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    py = q(ctx.python)
    for name, d in sorted(ctx.env_dists.items()):
        for req in ctx.requirements_of(d):
            dep = canonicalize_name(req.name)
            if dep == name:
                continue
            have = ctx.visible.get(dep)
            spec = str(req.specifier)
            if have is None:
                variant = next((v for v in TF_DISTRIBUTIONS if dep in TF_DISTRIBUTIONS and v in ctx.visible), None)
                if variant and (not spec or contains(req.specifier, ctx.visible[variant]["version"])):
                    out.append(
                        F.TF_VARIANT_REQUIREMENT.make(
                            f"{name} requires {dep}, which is satisfied by {variant} only in spirit",
                            [
                                f"{name} {d['version']} requires {req_text(req)}; {variant} "
                                f"{ctx.visible[variant]['version']} provides the same `tensorflow` package"
                            ],
                            f"nothing to do while it imports; `pip check` will list it, and an install of {name} "
                            f"may pull {dep} in next to {variant}",
                            fixed_by_rebuild=False,
                            affects_new_env=True,
                        )
                    )
                    continue
                out.append(
                    F.MISSING_REQUIREMENT.make(
                        f"{name} {d['version']} requires {dep}, which is not installed",
                        [f"{name} {d['version']} requires {req_text(req)}"],
                        f"`uv pip install --python {py} {q(req_text(req))}`; `tfrebuild upgrade` resolves the full set",
                        fixed_by_rebuild=True,
                        affects_new_env=False,
                    )
                )
            elif spec and not contains(req.specifier, have["version"]):
                where = "" if have.get("location") == "env" else f" (from the {have.get('location')} site)"
                out.append(
                    F.BROKEN_REQUIREMENT.make(
                        f"{name} {d['version']} requires {dep}{spec}, but {dep} {have['version']} is installed",
                        [
                            f"{name} {d['version']} requires {req_text(req)}",
                            f"installed: {dep} {have['version']} ({have['dist_info']}){where}",
                        ],
                        f"put back a version it accepts: `uv pip install --python {py} {q(dep + spec)}` "
                        f"(or upgrade {name}); `tfrebuild upgrade` resolves the full set",
                        fixed_by_rebuild=True,
                        affects_new_env=False,
                    )
                )
    return out
