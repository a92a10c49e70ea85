"""The target search (issue 20, point 4): ``--to latest`` means the newest TensorFlow this env can run with its
checks passing.

A loop around the one transaction: when a target's staged env fails its checks, the failure is classified
(:func:`classify`: a companion's import, Keras 2 symbols, a protobuf or ABI mismatch, a missing ``pkg_resources``,
a package not built for the new Python); the fix that class has is applied once (Keras 2 kept, the package named
moved or held, ``setuptools<81``), otherwise the next lower release is tried: newest first, one build per minor
release, at most :data:`MAX_BUILDS` builds, never below the installed release. A target that does not resolve costs
no build (its lower patches are tried, at most :data:`PATCHES_PER_MINOR`). Every try is recorded
(:class:`Try`): target, what changed, why it failed. An explicit ``--to`` stays strict: one try, classified, with
the command that would work.

Core only: the caller passes ``attempt(plan)`` (the transaction), ``replan(options)`` (``plan.make_plan``) and
``on_try`` (progress); nothing here prints.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, cast

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rebuild.core import discard
from rebuild.core.options import Keras
from rebuild.errors import UserError
from rebuild.knowledge import companions
from rebuild.util import failtext

if TYPE_CHECKING:
    from rebuild.core.plan import Options, Plan
    from rebuild.core.resolve import Inputs
    from rebuild.core.smoke import Report

MAX_BUILDS = 4
MAX_PLANS = 10
PATCHES_PER_MINOR = 3


@dataclass
class Failure:
    kind: str  # keras2 | tf-keras | pkg_resources | protobuf | abi | python | import | checks | resolution | downgrade
    package: str  # the distribution named ("" when none)
    text: str  # one line

    @property
    def label(self) -> str:
        return {
            "keras2": "needs Keras 2",
            "tf-keras": "needs tf-keras",
            "pkg_resources": "missing pkg_resources",
            "protobuf": "protobuf mismatch",
            "abi": "built for another TensorFlow/NumPy (ABI)",
            "python": "not built for this Python",
            "import": "a companion's import fails",
            "checks": "checks failed",
            "resolution": "does not resolve",
            "downgrade": "would move a requested package backwards",
        }.get(self.kind, self.kind)


@dataclass
class Try:
    target: str  # "tensorflow-cpu 2.21.0"
    change: str  # what this try changed ("" for the first)
    passed: bool
    why: str = ""  # why it failed: the class and one line
    built: bool = True  # False: it failed before building (resolution, refusal)
    blocker: str = ""  # the package that failed (or stood in the way), else the failure's class


@dataclass
class Blocker:
    """A release above the installed one that did not pass (``--to latest`` found none): what stood in the way and
    a command to run to move past it."""

    target: str
    blocker: str
    why: str
    command: str


@dataclass
class Fix:
    description: str
    keras: str = ""  # "legacy" to keep Keras 2
    holds: list[str] = field(default_factory=list)


_KERAS2 = re.compile(
    r"keras\.src\.engine|keras\.engine|keras\.legacy|Keras 2 internals|Keras 3 only supports|"
    r"is not a Keras 2|expected Keras 2|KerasTensor|keras_tensor|tf\.keras is Keras 3",
    re.I,
)
_ABI = re.compile(
    r"undefined symbol|unable to open file|tf\.load_op_library|op libraries load|built for TensorFlow|"
    r"numpy\.core\.multiarray failed to import|numpy\.dtype size changed|_ARRAY_API",
    re.I,
)
_PROTOBUF = re.compile(r"VersionError|Gencode/Runtime|Descriptors cannot be created directly|protobuf", re.I)
_PYTHON = re.compile(
    r"not an acceptable base type|SyntaxError|requires Python|invalid syntax|no attribute 'Text'", re.I
)


def _texts(report: Report) -> str:
    return "\n".join(f"[{c.name}]\n{c.output}" for c in report.failed)


def _first_line(text: str) -> str:
    """The failure's one line: the innermost error message, without file paths, at most 160 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next(
        (
            ln
            for ln in reversed(lines)
            if re.search(r"Error|Exception|unable", ln) and not ln.startswith(("File ", "Traceback", "["))
        ),
        lines[-1] if lines else "",
    )
    line = re.sub(r", from paths: .*", "", line)
    line = re.sub(r"(/[^\s'\"]+)+/([^/\s'\"]+)", r"\2", line)  # paths → their last part
    return line if len(line) <= 160 else line[:159] + "…"


def _package_named(text: str, plan: Plan) -> str:
    """The distribution a failure names: an op library's owner, else the innermost site-packages frame's package,
    else the import that failed."""
    pins = {c.name: c for c in plan.changes}
    known = {p.name for p in plan.current.packages} | set(pins)
    m = re.search(r"^([A-Za-z0-9][\w.-]*): tf\.load_op_library", text, re.M)
    if m:
        return canonicalize_name(m.group(1))
    imports = {c.import_name: n for n, c in companions.table().items() if c.import_name}
    found = re.findall(r"site-packages/([A-Za-z_][\w]*)/", text)
    found += re.findall(r"import ([A-Za-z_][\w]*)(?:\.[\w.]+)? failed", text)
    found += re.findall(r"No module named '([A-Za-z_][\w]*)", text)
    for top in reversed(found):
        if top in ("tensorflow", "importlib", "keras", "encodings"):
            continue
        name = imports.get(top) or canonicalize_name(top)
        if name in known or name in imports.values():
            return name
        close = [k for k in known if k.replace("-", "_") == top or k.startswith(canonicalize_name(top))]
        if close:
            return sorted(close, key=len)[0]
    return ""


def classify(report: Report, plan: Plan) -> Failure:
    """The class of a staged env's failed checks (see the module doc)."""
    text = _texts(report)
    package = _package_named(text, plan)
    line = _first_line(text)
    if "No module named 'pkg_resources'" in text:
        return Failure("pkg_resources", package, line)
    if "No module named 'tf_keras'" in text:
        return Failure("tf-keras", package, line)
    if _KERAS2.search(text):
        return Failure("keras2", package, line)
    if _ABI.search(text):
        return Failure("abi", package, line)
    if _PROTOBUF.search(text):
        return Failure("protobuf", package, line)
    if _PYTHON.search(text) and plan.python_old.split(".")[:2] != plan.python_new.split(".")[:2]:
        return Failure("python", package, line)
    if package:
        return Failure("import", package, line)
    return Failure("checks", "", line)


def _build_failure(exc: UserError) -> Failure | None:
    """uv could not install the lock (an sdist that does not build for this Python): its class, else ``None``."""
    if not exc.build_failed:
        return None
    text = exc.details or ""
    named = re.split(r"==|\s@\s|\s|\[", failtext.failed_build(text).strip(), maxsplit=1)[0]
    package = canonicalize_name(named) if named else ""
    return Failure("python" if package else "checks", package, _first_line(text) or exc.message)


def fix_for(failure: Failure, plan: Plan, opts: Options, used: set[str]) -> Fix | None:
    """The fix a failure class has, applied at most once per (class, package); ``None``: try a lower release."""
    key = f"{failure.kind}:{failure.package}"
    if key in used:
        return None
    fix = None
    if failure.kind == "pkg_resources" and "setuptools<81" not in opts.holds:
        fix = Fix("setuptools held below 81 (it still ships pkg_resources)", holds=["setuptools<81"])
    elif failure.kind == "keras2" and not plan.keras_legacy and str(opts.keras) != "3":
        who = f" ({failure.package} needs it)" if failure.package else ""
        fix = Fix(f"Keras 2 kept through tf-keras (--keras legacy){who}", keras="legacy")
    elif failure.kind == "tf-keras" and "tf-keras" not in opts.holds:
        fix = Fix(f"tf-keras added ({failure.package or 'a package'} imports tf_keras)", holds=["tf-keras"])
    elif failure.kind in ("protobuf", "abi", "python", "import") and failure.package:
        change = next((c for c in plan.changes if c.name == failure.package), None)
        old = next((p.version for p in plan.current.packages if p.name == failure.package), "")
        if change is not None and change.old and change.new and change.kind == "upgrade" and failure.kind == "protobuf":
            fix = Fix(
                f"{failure.package} held below {change.new} (protobuf mismatch)",
                holds=[f"{failure.package}<{change.new}"],
            )
        elif change is None and old:  # it stayed where it was: move it forward
            fix = Fix(f"{failure.package} moved forward from {old}", holds=[f"{failure.package}>{old}"])
    if fix is not None:
        used.add(key)
    return fix


def with_fix(opts: Options, fix: Fix) -> Options:
    holds = list(dict.fromkeys(list(opts.holds) + fix.holds))
    return dataclasses.replace(opts, holds=holds, keras=Keras(fix.keras) if fix.keras else opts.keras)


def _minor(version: str) -> tuple[int, int]:
    v = Version(version)
    return v.major, v.minor


def candidates(listing: list[str], below: str, floor: str) -> list[list[str]]:
    """Releases below ``below`` and above ``floor`` (the installed one), grouped by minor, newest first."""
    groups: dict[tuple[int, int], list[str]] = {}
    for text in listing:
        try:
            v = Version(text)
        except InvalidVersion:
            continue
        if v.is_prerelease or v >= Version(below) or (floor and v <= Version(floor)):
            continue
        if _minor(text) == _minor(below):
            continue  # one build per minor: the minor of ``below`` was tried
        groups.setdefault(_minor(text), []).append(text)
    return [sorted(g, key=Version, reverse=True)[:PATCHES_PER_MINOR] for _, g in sorted(groups.items(), reverse=True)]


@dataclass
class Outcome:
    result: object  # None: no release above the installed one passed (``blocked`` is the plan that says so)
    tries: list[Try]
    blocked: object = None


def _target(plan: Plan) -> str:
    return f"{plan.tf_distribution} {plan.tf_new}"


@discard.in_background()  # a failed try's staged env is deleted by a thread while the next try runs
def run(
    first: Plan,
    opts: Options,
    *,
    attempt: Callable[[Plan], object],
    replan: Callable[[Options], Plan],
    listing: Callable[[], list[str]],
    on_try: Callable[[Try], None] = lambda t: None,
    searching: bool = True,
) -> Outcome:
    """Attempt ``first`` (a plan); on failed checks classify, fix or go lower (see the module doc).

    ``listing()``: the TensorFlow releases installable here (newest first); ``replan(opts)``: a plan; ``attempt(plan)``:
    the transaction's result, or a :class:`UserError` (with ``.report`` when the checks failed)."""
    tries: list[Try] = []
    used: set[str] = set()
    plan: Plan | None
    plan, change, builds, plans = first, "", 0, 1
    floor = first.tf_old
    lower: list[list[str]] | None = None

    def record(t: Try) -> None:
        tries.append(t)
        on_try(t)

    while True:
        try:
            result = attempt(plan)
        except UserError as exc:
            report = exc.report
            downgrade = exc.downgrade
            built = _build_failure(exc)
            if report is None and not downgrade and built is None:
                _attach(exc, tries)
                raise
            failure = (
                Failure("downgrade", "", exc.message)
                if downgrade
                else built
                if built is not None
                else classify(cast("Report", report), plan)
            )
            record(
                Try(
                    _target(plan),
                    change,
                    False,
                    f"{failure.label}: {failure.text}",
                    built=not downgrade,
                    blocker=failure.package or failure.label,
                )
            )
            builds += 0 if downgrade else 1
            if not searching:
                raise _strict(exc, failure, plan, opts, tries) from None
            if builds >= MAX_BUILDS:
                raise _exhausted(exc, plan, tries, f"the search stops after {MAX_BUILDS} builds") from None
            fix = None if downgrade else fix_for(failure, plan, opts, used)
            if fix is not None:
                fixed = with_fix(opts, fix)
                try:
                    plan, change, plans = replan(fixed), fix.description, plans + 1
                    opts = fixed  # a fix that does not resolve is not carried to the lower releases
                    continue
                except UserError as again:
                    record(
                        Try(
                            _target(plan),
                            fix.description,
                            False,
                            f"does not resolve: {again.message}",
                            built=False,
                            blocker=failure.package or failure.label,
                        )
                    )
            if lower is None:
                lower = candidates(listing(), plan.tf_new, floor)
            plan = None
            while lower and plan is None and plans < MAX_PLANS:
                group = lower.pop(0)
                for version in group:
                    try:
                        plan, plans = replan(dataclasses.replace(opts, to=version, explain=False)), plans + 1
                        change = f"next lower release ({failure.label} at {tries[-1].target.split()[-1]})"
                        break
                    except UserError as again:
                        plans += 1
                        record(
                            Try(
                                f"{first.tf_distribution} {version}",
                                "next lower release",
                                False,
                                f"does not resolve: {again.message}",
                                built=False,
                            )
                        )
            if plan is None:
                if first.python_old != first.python_new:  # a Python move: staying is not "nothing to do"
                    raise _exhausted(exc, first, tries, f"no release above the installed {floor} passed") from None
                return Outcome(None, tries, blocked=blocked_plan(first, tries))
            continue
        record(Try(_target(plan), change, True))
        return Outcome(result, tries)


def _standing(message: str) -> str:
    m = re.search(r"Standing in the way: (.+?)\.(?:\s|$)", message)
    return m.group(1) if m else "does not resolve"


def blockers(tries: list[Try], env: str) -> list[Blocker]:
    """Each failed try above the installed release: its blocker and a command that moves past it (or shows why)."""
    import shlex

    where = shlex.quote(str(env))
    out: list[Blocker] = []
    for t in tries:
        if t.passed:
            continue
        if out and out[-1].target == t.target:  # the fix tried at the same release: its account goes with it
            out[-1].why += f"; then [{t.change}]: {t.why}"
            continue
        version = t.target.split()[-1]
        if not t.built:
            out.append(
                Blocker(
                    t.target,
                    t.blocker or _standing(t.why),
                    t.why,
                    f"`tfrebuild plan --env {where} --to {version}` names what stands in the way and the "
                    "choices (a release of it that accepts the target, or dropping it)",
                )
            )
            continue
        see = f"`tfrebuild upgrade --env {where} --to {version}` tries it strictly and shows the failure"
        name = t.blocker if t.blocker and " " not in t.blocker else ""
        command = (
            (
                f"drop {name}: `tfrebuild snapshot --env {where} -o profile.toml`, delete {name} from `requested` "
                f"(and its modules from `[smoke].imports`) in profile.toml, then `tfrebuild upgrade --env {where} "
                f"--profile profile.toml --to {version}`; or {see}"
            )
            if name
            else see
        )
        why = t.why[len(t.blocker) + 2 :] if t.blocker and t.why.startswith(f"{t.blocker}: ") else t.why
        out.append(Blocker(t.target, t.blocker, why, command))  # "blocked by checks failed: <why>", said once
    return out


def nothing_text(plan: Plan) -> str:
    return (
        f"nothing to do: {plan.tf_distribution} {plan.tf_old} is the newest TensorFlow that passes its checks "
        "with everything this env holds"
    )


def blocked_plan(plan: Plan, tries: list[Try]) -> Plan:
    """``plan`` (of a release above the installed one) turned into the plan that changes nothing: no release above
    the installed one passed; ``blocked_above`` says what stood in the way of each."""
    dist = plan.tf_old_distribution or plan.tf_distribution
    stay = dataclasses.replace(
        plan,
        tf_distribution=dist,
        tf_new=plan.tf_old,
        tf_switch="",
        downgrade=False,
        changes=[],
        capped=[],
        requested_downgrades=[],
        companions={},
        keras_needed_by=[],
        keras_legacy=False,
        pylock="",
        newer_release=None,
        notes=[],
    )
    stay.landing_note = nothing_text(stay)
    stay.blocked_above = blockers(tries, plan.env)
    return stay


def _attach(exc: UserError, tries: list[Try]) -> None:
    exc.tries = list(tries)


def tries_text(tries: list[Try]) -> str:
    return "\n".join(
        f"try {i}: {t.target}" + (f" [{t.change}]" if t.change else "") + (": passed" if t.passed else f": {t.why}")
        for i, t in enumerate(tries, 1)
    )


def _exhausted(exc: UserError, plan: Plan, tries: list[Try], why: str) -> UserError:
    import shlex

    env = shlex.quote(str(plan.env))
    hint = (
        "The tries below say what failed; fix that package (or drop it from the env) and run "
        f"`tfrebuild upgrade --env {env}` again."
    )
    rows = blockers(tries, plan.env)
    if rows:
        hint += f" For {rows[-1].target}: {rows[-1].command}."
    versions = []
    for t in tries:
        try:
            versions.append(Version(t.target.split()[-1]))
        except InvalidVersion:
            pass
    try:
        installed = Version(plan.tf_old)
    except InvalidVersion:
        installed = None
    if versions and installed is not None:
        lowest = min(versions)
        below = (lowest.major, lowest.minor - 1)
        if lowest.minor > 0 and below > (installed.major, installed.minor):
            hint += (
                f" Or try the next lower release yourself: `tfrebuild upgrade --env {env} --to {below[0]}.{below[1]}`."
            )
    err = UserError(
        f"No TensorFlow newer than the installed {plan.tf_old} passed its checks in this env ({why}); "
        "the environment was not changed.",
        hint,
        exit_code=1,
        details=tries_text(tries) + ("\n\nLast failure:\n" + exc.details if exc.details else ""),
    )
    err.tries = list(tries)
    return err


def _strict(exc: UserError, failure: Failure, plan: Plan, opts: Options, tries: list[Try]) -> UserError:
    """An explicit ``--to`` fails: the class, and the command that would work."""
    fix = fix_for(failure, plan, opts, set())
    env = f" --env {plan.env}"
    if fix is not None and fix.keras:
        command = f"tfrebuild upgrade{env} --to {plan.target} --keras legacy"
    elif fix is not None:
        command = f"tfrebuild upgrade{env} --to {plan.target} --strategy eager"
    else:
        command = f"tfrebuild upgrade{env}  (the default --to latest searches for the newest release that passes)"
    exc.message = (
        f"{exc.message.rstrip()} Failure class: {failure.label}"
        + (f" ({failure.package})" if failure.package else "")
        + "."
    )
    exc.hint = f"{exc.hint} What would work: {command}".strip()
    exc.tries = list(tries)
    return exc


def first_plan(
    opts: Options, make_plan: Callable[[Options], Plan], note: Callable[[str], None] = lambda text: None
) -> tuple[object, list[Try]]:
    """The plan of ``--to latest``; when that does not resolve, the newest lower release that does (nothing is
    built: ``plan`` names the expected landing point this way), each refused target recorded as a try."""
    searching = opts.search and str(opts.to or "latest") == "latest"
    try:
        return make_plan(dataclasses.replace(opts, explain=False) if searching else opts), []
    except UserError as exc:
        inputs = getattr(exc, "inputs", None)
        if inputs is None or not searching:
            raise
        tries = [
            Try(f"{inputs.tf_distribution} {exc.tf_new}", "", False, f"does not resolve: {exc.message}", built=False)
        ]
        note(f"try: {tries_text(tries)[len('try 1: ') :]}")
        plans = 1
        for group in candidates(versions(inputs, opts.pre), exc.tf_new, exc.tf_old):
            for version in group:
                if plans >= MAX_PLANS:
                    break
                plans += 1
                try:
                    plan = make_plan(dataclasses.replace(opts, to=version, explain=False))
                except UserError as again:
                    tries.append(
                        Try(
                            f"{inputs.tf_distribution} {version}",
                            "next lower release",
                            False,
                            f"does not resolve: {again.message}",
                            built=False,
                        )
                    )
                    note(f"try: {tries_text(tries[-1:])[len('try 1: ') :]}")
                    continue
                plan.notes.insert(
                    0,
                    f"--to latest lands on {version}: newer releases do not resolve with this env ("
                    + "; ".join(f"{t.target}: {t.why}" for t in tries)
                    + ")",
                )
                return plan, tries
        exc.tries = tries
        if plans < MAX_PLANS and exc.tf_old and not getattr(opts, "python", None):
            # no release above the installed one resolves: staying is the result (the installed set, planned)
            try:
                here = make_plan(dataclasses.replace(opts, to=exc.tf_old, explain=False))
            except UserError:
                raise exc from None
            return blocked_plan(here, tries), tries
        raise


def versions(inputs: Inputs, pre: bool = False) -> list[str]:
    """TensorFlow releases on the configured index that have a wheel for the new env's Python, newest first."""
    import platform

    from rebuild.core.targets import _tf_files
    from rebuild.env import interpreters
    from rebuild.index import simple as indexinfo
    from rebuild.index.tags import python_versions_with_wheels

    try:
        files = _tf_files(inputs)
    except (UserError, OSError):
        return []
    minor = ".".join((interpreters.version_of(inputs.python) or "").split(".")[:2])
    out = []
    for version in indexinfo.versions(files, prereleases=pre):
        pythons = python_versions_with_wheels(files, version, "Linux", platform.machine())
        if not minor or minor in pythons:
            out.append(str(version))
    return out
