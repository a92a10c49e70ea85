"""``tfrebuild doctor``: explain what is wrong with an environment and why its upgrade is blocked.

Everything here *reads*: one deep probe of the environment (run by its own
interpreter), the process environment, ``nvidia-smi`` and a handful of index
look-ups. Nothing is installed or changed.

Each problem becomes a :class:`Finding` with a stable ``id`` (a :class:`FindingId` member,
documented in ``docs/doctor.md``), a severity, a one-line title, the evidence and a concrete
fix. Two flags tell ``plan``/``upgrade`` what to do with it:

* ``fixed_by_rebuild``: a fresh environment built by ``tfrebuild upgrade`` does
  not have the problem (debris in the old site-packages, an inconsistent set of
  versions, ``include-system-site-packages`` ...);
* ``affects_new_env``: the problem carries over to (or blocks) the environment
  the upgrade would build (a companion package that excludes the target, an
  interpreter the target has no wheel for, system CUDA libraries ...).

The command is :func:`rebuild.commands.doctor.run`; :func:`preflight` is the subset ``plan`` and
``upgrade`` can call with the probe report they already have.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from rebuild.doctor.checks_cuda import check_cuda
from rebuild.doctor.checks_debris import check_debris
from rebuild.doctor.checks_env import check_boundaries, check_consistency
from rebuild.doctor.checks_target import check_conflicts, check_interpreter
from rebuild.doctor.context import Context, Target, index_sources, q
from rebuild.doctor.findings import SEVERITIES, DoctorResult, Finding, FindingId, sort_findings
from rebuild.doctor.findings import FindingId as F
from rebuild.env import profile as prof
from rebuild.env.locate import EnvLocation
from rebuild.env.probed import Probed
from rebuild.index import config as indexconf

__all__ = ["SEVERITIES", "DoctorResult", "Finding", "FindingId", "preflight", "target_checks"]


def target_checks(ctx: Context, target: Target) -> list[Finding]:
    """Interpreter, conflicts (once the target's metadata is read) and CUDA checks of one target."""
    out = check_interpreter(ctx, target)
    meta, source = ctx.metadata(target.distribution, target.version, target.files, budget=False)
    if meta is None:
        out.append(
            F.TARGET_METADATA_UNAVAILABLE.make(
                f"the requirements of {target.distribution} {target.version} could not be read: conflicts not checked",
                [source],
                f"run `tfrebuild plan --env {q(ctx.loc.path)} --to {target.version}` to let the resolver "
                "decide, or pass --find-links with the wheel",
                fixed_by_rebuild=False,
                affects_new_env=False,
            )
        )
    else:
        target.requires = list(meta.get("requires_dist") or [])
        target.requires_python = meta.get("requires_python")
        target.metadata_source = source
        out += check_conflicts(ctx, target)
    out += check_cuda(ctx, target)
    return out


def preflight(
    env_loc: EnvLocation,
    probe_data: Probed,
    target_version: str,
    *,
    tf_distribution: str | None = None,
    python_version: str | None = None,
    index: prof.Index | None = None,
    offline: bool = False,
    pre: bool = False,
    environ: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    target_requires: list[str] | None = None,
    extras: Iterable[str] = (),
) -> list[Finding]:
    """Findings for an upgrade of ``env_loc`` to ``target_version``, for ``plan`` / ``upgrade``.

    ``target_requires``, when given, receives the target's requirements that apply to the new env
    (markers evaluated for its interpreter, with ``extras`` of the TensorFlow requirement), as read
    from the index for the checks; plan's resolution uses them to skip caps the target rules out.

    ``probe_data`` is the report plan already has (``probe.run(python)``; a deep
    report adds the RECORD and orphan checks). ``python_version`` is the Python
    the new env will use when it differs (``--python``); ``index`` the settings
    plan resolved with (default: discovered). Returns every finding; callers
    typically act on ``f.affects_new_env`` (warn, or refuse on errors) and list
    ``f.fixed_by_rebuild`` ones as notes.
    """
    if index is None:
        index = indexconf.discover(
            prefix=None if env_loc.bare else env_loc.path, environ=dict(os.environ if environ is None else environ)
        )
    ctx = Context(
        env_loc,
        probe_data,
        environ,
        sources=index_sources(index, offline),
        timeout=timeout,
        pre=pre,
        python_version=python_version,
    )
    findings = check_boundaries(ctx) + check_debris(ctx) + check_consistency(ctx)
    dist = tf_distribution or ctx.tf
    if dist:
        ctx.tf = dist
        files = ctx.files(dist, budget=False)
        if files is None:
            findings.append(
                F.INDEX_UNREACHABLE.make(
                    f"the package index could not be read: {dist} {target_version} was not checked",
                    list(ctx.skipped[-1:]),
                    "check the network or the index settings",
                    fixed_by_rebuild=False,
                    affects_new_env=False,
                )
            )
            findings += check_cuda(ctx, Target(dist, target_version, []))
        else:
            target = Target(dist, target_version, files)
            findings += target_checks(ctx, target)
            if target_requires is not None:
                from rebuild.doctor.context import applies
                from rebuild.env import graph

                parsed = [graph.parse(text) for text in target.requires or []]
                target_requires.extend(str(r) for r in parsed if r is not None and applies(r, ctx.new_markers, extras))
    return sort_findings(findings)
