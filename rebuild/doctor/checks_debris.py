"""Checks of what installs left behind in the environment: leftover and broken metadata, duplicate distributions, files
a RECORD lists that are gone, more than one TensorFlow variant, and conda packages overwritten by pip. Split from
:mod:`rebuild.doctor.checks_env` (same code).
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

from packaging.utils import canonicalize_name

from rebuild.doctor.context import Context, q, req_text
from rebuild.doctor.findings import Finding
from rebuild.doctor.findings import FindingId as F
from rebuild.knowledge.tf import TF_DISTRIBUTIONS
from rebuild.util import distinfo


def check_debris(ctx: Context) -> list[Finding]:
    """Leftovers of installs: broken/duplicate metadata, missing files, TensorFlow variants, conda overwrites."""
    checks = (_check_debris_items, _check_duplicates, _check_record, _check_variants, _check_conda)
    return [finding for check in checks for finding in check(ctx)]


def _check_debris_items(ctx: Context) -> list[Finding]:
    """What the probe listed as debris: ~folders, orphans, unreadable metadata."""
    out: list[Finding] = []
    py = q(ctx.python)
    for item in ctx.data.debris:
        kind, path = item.get("kind"), item.get("path", "")
        if kind == "tilde-folder":
            out.append(
                F.TILDE_FOLDER.make(
                    f"leftover of an interrupted install or uninstall: {os.path.basename(path)}",
                    [
                        f"{path} ({item.get('location', '?')} site-packages)",
                        "pip warns `Ignoring invalid distribution " + os.path.basename(path) + "` because of it",
                    ],
                    f"delete it: `rm -rf {q(path)}`",
                    fixed_by_rebuild=True,
                    affects_new_env=False,
                )
            )
        elif kind == "orphan-top-level":
            out.append(
                F.ORPHAN_PACKAGE.make(
                    f"{item.get('name')} in site-packages belongs to no installed distribution",
                    [f"{path} is not listed in any RECORD or top_level.txt"],
                    f"if nothing imports it, delete it: `rm -rf {q(path)}`; if your code imports it, install the "
                    f"distribution that provides it (`uv pip install --python {py} <project>`); `tfrebuild upgrade` "
                    "copies it into the new env when it is regular files of the env's owner, else the plan says why not",
                    dropped_by_rebuild=True,
                )
            )
        elif kind == "own-pth":
            out.append(
                F.ORPHAN_PACKAGE.make(
                    f"{os.path.basename(path)} in site-packages is a .pth file of your own (no distribution installed it)",
                    [f"{path} runs at every start of the interpreter"],
                    "if you do not need it, delete it; `tfrebuild upgrade` copies it into the new env when it is a "
                    "regular file of the env's owner, else the plan says why not (then copy it yourself after the "
                    "upgrade: the old generation keeps it)",
                    dropped_by_rebuild=True,
                )
            )
        elif kind in ("no-metadata", "bad-metadata"):
            out.append(
                F.BROKEN_DIST_INFO.make(
                    f"metadata folder {os.path.basename(path)} cannot be read",
                    [f"{path}: {item.get('detail') or 'no METADATA file'}"],
                    f"delete the folder (`rm -rf {q(path)}`) and reinstall the project with "
                    f"`uv pip install --python {py} --reinstall <project>`; the upgraded env will not have that project "
                    "(its files may still import here, without a name or version uv can carry over)",
                    dropped_by_rebuild=True,
                )
            )
    return out


def _check_duplicates(ctx: Context) -> list[Finding]:
    """Two metadata folders for one project."""
    py = q(ctx.python)
    return [
        F.DUPLICATE_DIST_INFO.make(
            f"{name} is recorded twice ({', '.join(d['version'] for d in found)}): pip and importlib may report the "
            "wrong version",
            [d["dist_info"] for d in found],
            f"reinstall one version cleanly: delete the stale folders, then `uv pip install --python {py} "
            f"--reinstall {q(name + '==' + ctx.env_dists[name]['version'])}`; `tfrebuild upgrade` builds a clean env",
            fixed_by_rebuild=True,
            affects_new_env=False,
        )
        for name, found in sorted(ctx.env_copies.items())
        if len(found) > 1
    ]


def _check_record(ctx: Context) -> list[Finding]:
    """Files a RECORD lists that are gone."""
    out: list[Finding] = []
    py = q(ctx.python)
    for d in ctx.dists:
        count = d.get("record_missing_count")
        if d.get("location") == "env" and count:
            sample = d.get("record_missing") or []
            out.append(
                F.RECORD_MISSING_FILES.make(
                    f"{d['name']} {d['version']}: {count} installed file(s) are missing",
                    [
                        f"{d['dist_info']}/RECORD lists {count} file(s) that do not exist",
                        *[f"missing: {p}" for p in sample[:5]],
                    ],
                    f"reinstall it: `uv pip install --python {py} --reinstall --no-deps "
                    f"{q(d['name'] + '==' + d['version'])}`",
                    fixed_by_rebuild=True,
                    affects_new_env=False,
                )
            )
    return out


def _check_variants(ctx: Context) -> list[Finding]:
    """Two TensorFlow distributions installed together."""
    out: list[Finding] = []
    py = q(ctx.python)
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
                        why.append(f"{parent} {ctx.env_dists[parent]['version']} requires {req_text(req)}")
            if v != ctx.tf and any(p not in TF_DISTRIBUTIONS for p in by):
                pulled.append((v, [p for p in by if p not in TF_DISTRIBUTIONS]))
            evidence.append(f"{v} {d['version']} ({d['dist_info']})" + (f": {'; '.join(why)}" if why else ""))
        main = ctx.tf or variants[0]
        fix = (
            f"keep one: `uv pip uninstall --python {py} {' '.join(variants)}` then "
            f"`uv pip install --python {py} {q(main + '==' + ctx.env_dists[main]['version'])}`"
        )
        if pulled:
            other, parents = pulled[0]
            fix = (
                f"{', '.join(parents)} require{'s' if len(parents) == 1 else ''} `{other}` while you installed "
                f"`{main}`: use `{other}` alone"
                + (" (it runs on CPU too)" if other == "tensorflow" else "")
                + f": `uv pip uninstall --python {py} {' '.join(variants)}` then `uv pip install --python {py} "
                f"{q(other + '==' + ctx.env_dists[other]['version'])}`"
            )
        out.append(
            F.TENSORFLOW_VARIANTS.make(
                f"{' and '.join(variants)} are installed together and overwrite each other's files",
                evidence,
                fix,
                fixed_by_rebuild=not pulled,
                affects_new_env=bool(pulled),
            )
        )
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
                names.add(distinfo.name_of(m.group(1)))
        if not names:
            names.add(canonicalize_name(str(meta["name"])))
        for n in names:
            owned.setdefault(n, (str(meta["name"]), str(meta.get("version", "")), path))
    return owned


def _check_conda(ctx: Context) -> list[Finding]:
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
        out.append(
            F.CONDA_PIP_OVERWRITE.make(
                f"{name} belongs to conda but was overwritten by {installer}",
                [
                    f"{meta} records conda package {pkg} {version}",
                    f"{d['dist_info']} now holds {d['version']}, INSTALLER = {installer}",
                ],
                f"let one tool own it: `{q(ctx.python)} -m pip uninstall -y {name}` then "
                f"`conda install -p {q(prefix)} --force-reinstall {pkg}`, or `conda remove -p {q(prefix)} --force {pkg}` "
                f"to leave it to pip; `tfrebuild upgrade` builds a plain venv",
                fixed_by_rebuild=True,
                affects_new_env=False,
            )
        )
    return out
