"""``tfrebuild doctor``: probe the env deeply, read the index for the target, report findings.

The checks live in :mod:`rebuild.doctor` (also run as the pre-flight of plan and upgrade); this is the verb.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Mapping

from rebuild.core import resolve
from rebuild.doctor import target_checks
from rebuild.doctor.checks_cuda import check_cuda
from rebuild.doctor.checks_debris import check_debris
from rebuild.doctor.checks_env import check_boundaries, check_consistency
from rebuild.doctor.checks_imports import check_imports
from rebuild.doctor.checks_target import pick_target
from rebuild.doctor.context import Context, index_sources, q, run_probe
from rebuild.doctor.findings import DoctorResult, sort_findings
from rebuild.doctor.findings import FindingId as F
from rebuild.env.locate import locate
from rebuild.index import config as indexconf


def run(
    env: str | os.PathLike | None = None,
    *,
    to: str | None = "latest",
    index_url: str | None = None,
    extra_index_urls: Iterable[str] = (),
    find_links: Iterable[str | os.PathLike] = (),
    offline: bool = False,
    pre: bool = False,
    environ: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> DoctorResult:
    """``tfrebuild doctor``: probe the env deeply, read the index for the target, report findings.

    ``to=None`` skips everything that needs the index (the target checks).
    ``environ`` replaces ``os.environ`` for every check and for the probe.
    Raises :class:`UserError` (exit 2) for bad input: an unknown --to, a missing env.
    """
    start = time.monotonic()
    spec = resolve.parse_target(to) if to else None
    loc = locate(env)
    data = run_probe(loc.python, environ, True)
    sources = None
    if spec is not None:
        env_for_config = dict(os.environ if environ is None else environ)
        index = indexconf.override(
            indexconf.discover(prefix=None if loc.bare else loc.path, environ=env_for_config),
            index_url=index_url,
            extra_index_urls=list(extra_index_urls),
            find_links=[str(f) for f in find_links],
            offline=offline,
        )
        sources = index_sources(index, offline)
    ctx = Context(loc, data, environ, sources=sources, timeout=timeout, pre=pre)
    findings = check_boundaries(ctx) + check_debris(ctx) + check_consistency(ctx) + check_imports(ctx)
    target = None
    if spec is not None:
        if not ctx.tf:
            findings.append(
                F.NO_TENSORFLOW.make(
                    f"{loc.path} has no TensorFlow installed: --to {spec.raw} was not checked",
                    [f"{len(ctx.env_dists)} distribution(s) in {', '.join(ctx.paths.get('site_packages') or [])}"],
                    f"install one: `uv pip install --python {q(loc.python)} tensorflow`",
                )
            )
        else:
            target, notes = pick_target(ctx, spec)
            findings += notes
            if target is not None:
                findings += target_checks(ctx, target)
    if target is None:
        findings += check_cuda(ctx, None)
    return DoctorResult(
        env=str(loc.path),
        python=str(loc.python),
        python_version=ctx.interp.get("version", ""),
        env_kind=ctx.env.get("kind", "unknown"),
        tf_distribution=ctx.tf,
        tf_version=ctx.tf_version,
        target=spec.raw if spec else "",
        target_version=target.version if target else "",
        findings=sort_findings(findings),
        skipped=list(ctx.skipped),
        seconds=time.monotonic() - start,
    )
