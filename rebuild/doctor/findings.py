"""What doctor reports: the registry of finding ids, one :class:`Finding` per problem, the :class:`DoctorResult`.

Every finding is built from a :class:`FindingId` member (``FindingId.TILDE_FOLDER.make(...)``), which carries
the id's severity and its section in ``docs/doctor.md``; no finding is made from a free string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SEVERITIES = ("error", "warning", "info")
DOCS = "docs/doctor.md"


class FindingId(StrEnum):
    """Every finding id, with its severity (``docs/doctor.md`` explains each one under ``#### `id` (severity)``)."""

    severity: str

    def __new__(cls, value: str, severity: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member

    # why the upgrade is blocked
    TARGET_BLOCKED = "target-blocked", "error"
    COMPANION_MOVES = "companion-moves", "info"
    DEPENDENCY_CONFLICT = "dependency-conflict", "error"
    DEPENDENCY_MOVES = "dependency-moves", "info"
    CAPPED_DEPENDENCY = "capped-dependency", "info"
    DEPENDENCY_UNVERIFIED = "dependency-unverified", "warning"
    NUMPY_ABI_MISMATCH = "numpy-abi-mismatch", "error"  # made by plan: a NumPy-1 build beside the numpy 2 it takes
    # interpreter and platform
    PYTHON_UNSUPPORTED = "python-unsupported", "error"
    PLATFORM_UNSUPPORTED = "platform-unsupported", "error"
    # environment boundaries
    NOT_A_VENV = "not-a-venv", "warning"
    SYSTEM_SITE_PACKAGES = "system-site-packages", "warning"
    USER_SITE_SHADOW = "user-site-shadow", "error"
    USER_SITE_VISIBLE = "user-site-visible", "warning"
    PYTHONPATH_SHADOW = "pythonpath-shadow", "error"
    PYTHONPATH_SET = "pythonpath-set", "warning"
    PYTHONHOME_SET = "pythonhome-set", "error"
    PIP_OTHER_INTERPRETER = "pip-other-interpreter", "warning"
    PROJECT_DRIVEN = "project-driven", "info"
    PROJECT_UNDRIVEN = "project-undriven", "warning"
    # system CUDA
    CUDA_LIBS_MISMATCH = "cuda-libs-mismatch", "error"
    CUDA_LIBS_SHADOW_PIP = "cuda-libs-shadow-pip", "warning"
    CUDA_HOME_MISMATCH = "cuda-home-mismatch", "warning"
    DRIVER_TOO_OLD = "driver-too-old", "error"
    # installation debris
    TILDE_FOLDER = "tilde-folder", "warning"
    DUPLICATE_DIST_INFO = "duplicate-dist-info", "error"
    RECORD_MISSING_FILES = "record-missing-files", "error"
    ORPHAN_PACKAGE = "orphan-package", "warning"
    BROKEN_DIST_INFO = "broken-dist-info", "error"
    TENSORFLOW_VARIANTS = "tensorflow-variants", "error"
    CONDA_PIP_OVERWRITE = "conda-pip-overwrite", "warning"
    # consistency today
    BROKEN_REQUIREMENT = "broken-requirement", "error"
    MISSING_REQUIREMENT = "missing-requirement", "error"
    TF_VARIANT_REQUIREMENT = "tf-variant-requirement", "info"
    IMPORT_FAILING = "import-failing", "error"
    # checks that could not run
    INDEX_UNREACHABLE = "index-unreachable", "warning"
    TARGET_UNKNOWN = "target-unknown", "warning"
    TARGET_METADATA_UNAVAILABLE = "target-metadata-unavailable", "warning"
    NO_TENSORFLOW = "no-tensorflow", "info"
    PREFLIGHT_SKIPPED = "preflight-skipped", "info"  # made by plan when the pre-flight cannot run

    @property
    def heading(self) -> str:
        """The heading that documents this id in docs/doctor.md."""
        return f"#### `{self.value}` ({self.severity})"

    @property
    def anchor(self) -> str:
        """Where the id is documented: ``docs/doctor.md#<id>-<severity>`` (the heading's anchor)."""
        return f"{DOCS}#{self.value}-{self.severity}"

    def make(
        self,
        title: str,
        evidence: list[str] | None = None,
        fix: str = "",
        *,
        fixed_by_rebuild: bool = False,
        affects_new_env: bool = False,
        dropped_by_rebuild: bool = False,
        holders: dict[str, str] | None = None,
        move: Move | None = None,
    ) -> Finding:
        return Finding(
            self,
            self.severity,
            title,
            list(evidence or []),
            fix,
            fixed_by_rebuild=fixed_by_rebuild,
            affects_new_env=affects_new_env,
            dropped_by_rebuild=dropped_by_rebuild,
            holders=dict(holders or {}),
            move=move,
        )


@dataclass(frozen=True)
class Move:
    """What a ``dependency-moves`` finding states: ``dep`` must move from ``old`` to ``new``."""

    dep: str
    old: str
    new: str


INTERNAL = {"internal": True}  # a field's metadata: for decisions in code, never written in --json


@dataclass
class Finding:
    """One problem, with what shows it and how to fix it (build it with :meth:`FindingId.make`)."""

    id: str  # a FindingId member: stable, documented in docs/doctor.md
    severity: str  # error | warning | info
    title: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    fixed_by_rebuild: bool = False  # a fresh env built by `tfrebuild upgrade` does not have it
    affects_new_env: bool = False  # it carries over to (or blocks) the env the upgrade builds
    dropped_by_rebuild: bool = False  # something of the user's that the new env will not have: the plan names it
    carried_by_rebuild: bool = False  # something of the user's outside the lock that the upgrade copies (core/carry.py)
    # What the plan decides on (never the title's words): the installed packages that hold the conflict
    # (target-blocked, dependency-conflict: name → version) and the move a dependency-moves finding states.
    holders: dict[str, str] = field(default_factory=dict, metadata=INTERNAL)
    move: Move | None = field(default=None, metadata=INTERNAL)


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


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; one copy of each (id, title, evidence)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    unique, seen = [], set()
    for f in findings:
        key = (f.id, f.title, tuple(f.evidence))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return sorted(unique, key=lambda f: (rank.get(f.severity, 9), f.id, f.title))
