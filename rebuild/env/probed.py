"""What the probe found: its JSON report (``env/_probe.py``) as one typed value, built once by :func:`probe.run`.

The probe itself stays a stdlib-only script that prints JSON (it runs in the env's own interpreter, Python 3.6 and
up); this is the report's shape on this side. The top level is typed; the entries below it (a distribution, a
debris item, the interpreter's and the platform's facts) keep the probe's own keys, documented in ``_probe.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Probed:
    """The probe's report of one environment."""

    interpreter: dict[str, Any] = field(default_factory=dict)  # version, implementation, executable, abiflags, …
    platform: dict[str, Any] = field(default_factory=dict)  # system, machine, libc, …
    env: dict[str, Any] = field(default_factory=dict)  # kind, pyvenv_cfg, is_venv, conda, externally_managed, …
    paths: dict[str, Any] = field(default_factory=dict)  # site_packages, user_site, system_site_packages, stdlib
    environ: dict[str, str] = field(default_factory=dict)  # the variables a normal start would see
    distributions: list[dict[str, Any]] = field(default_factory=list)  # one per metadata folder found
    debris: list[dict[str, Any]] = field(default_factory=list)  # half-removed installs (``~name`` folders, …)
    sys_path: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the probe could not read, in its words
    probe_version: int = 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Probed:
        """The report from the probe's JSON document (keys it lacks are empty)."""
        return cls(
            interpreter=dict(doc.get("interpreter") or {}),
            platform=dict(doc.get("platform") or {}),
            env=dict(doc.get("env") or {}),
            paths=dict(doc.get("paths") or {}),
            environ=dict(doc.get("environ") or {}),
            distributions=list(doc.get("distributions") or []),
            debris=list(doc.get("debris") or []),
            sys_path=list(doc.get("sys_path") or []),
            warnings=list(doc.get("warnings") or []),
            probe_version=int(doc.get("probe_version") or 0),
        )
