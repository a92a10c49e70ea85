"""A Poetry project, upgraded through the user's own ``poetry`` (``$POETRY``, else ``poetry`` on PATH).

Poetry is not a dependency of tfrebuild: without it a Poetry project is not drivable
(:func:`rebuild.project.detect.detect` says so). With it, the same model as a uv project
(:mod:`rebuild.project.uvproject`):

1. :func:`lock`: ``pyproject.toml`` and ``poetry.lock`` are copied into a work folder beside the
   project (a sibling, so ``../lib`` means the same there; every other top-level entry is a
   symlink to the project's own); the TensorFlow requirement is moved in the user's style, in
   either form (``[project].dependencies`` as PEP 508, ``[tool.poetry.dependencies]`` as Poetry's
   own ``"2.15.1"`` / ``"^2.15"`` / ``"~2.15"`` / ``{version = ...}``), only that string changes.
   ``poetry lock`` re-locks keeping every other locked version (Poetry 2 does so by default,
   Poetry 1 with ``--no-update``). A moved range that admits more than the planned version is
   first locked pinned to it, then locked again with the range: Poetry keeps the locked version,
   and the lock's content hash is the real pyproject.toml's. The project itself is not touched.
2. :func:`build`: a relocatable venv in the staging folder, filled by ``poetry sync --no-root``
   (Poetry 1: ``poetry install --no-root --sync``) from the work folder with ``VIRTUAL_ENV``
   pointing at it: the lock's packages, not the project's own.
3. After the swap and the project files are written, :func:`settle` runs ``poetry sync --dry-run``
   in the project (only the project's own package and its directory dependencies may change),
   then ``poetry sync``, and compares the env's distributions before and after: the env and the
   lock agree, so the user's next ``poetry install`` / ``poetry sync`` changes nothing.

The project's sources (``[[tool.poetry.source]]``, Poetry's config and credentials) are Poetry's to
read, as at the user's next ``poetry lock``; Poetry has no offline mode, so ``--offline`` does not
reach it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rebuild.errors import UserError
from rebuild.project import workdir
from rebuild.project.newenv import NewEnv, failed, uv_error, uv_venv
from rebuild.project.detect import Project, find_poetry, poetry_tf_entries
from rebuild.project.requirement import edit_pyproject, edit_toml_string, move_poetry_constraint, move_requirement
from rebuild.store.trees import venv_identity
from rebuild.util import distinfo
from rebuild.util import proc
from rebuild.util import uv as uvcmd

#: Entries of the project folder never linked into the work folder.
_OPERATION = re.compile(r"^\s*-\s+(Installing|Updating|Downgrading|Removing)\s+(\S+)\s+\((.*)\)")
_POETRY_TEXT = re.compile(r'^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*) = "(?P<constraint>.*)"$')
TIMEOUT = 1800.0
#: What ``poetry sync`` leaves in an env though the lock does not name it (it removes setuptools and wheel).
KEPT_BY_SYNC = ("pip",)


@functools.lru_cache(maxsize=None)
def _version(exe: str) -> tuple[int, ...]:
    done = proc.run([exe, "--version", "--no-ansi"], env=_environ(None), timeout=120)
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout + done.stderr)
    if not done.ok or m is None:
        raise UserError(
            f"`{exe} --version` did not say which Poetry it is.",
            f"Check that Poetry runs: `{exe} --version`.",
            exit_code=1,
            details=done.output[-2000:],
        )
    return tuple(int(g or 0) for g in m.groups())


def poetry() -> tuple[str, tuple[int, ...]]:
    exe = find_poetry()
    if exe is None:
        raise UserError(
            "No `poetry` was found (on PATH or in $POETRY).",
            "Install Poetry (`pipx install poetry`), or pass --force to upgrade the env alone.",
        )
    return exe, _version(exe)


def _environ(env: Path | None) -> dict[str, str]:
    """This process's environment for Poetry, with ``VIRTUAL_ENV`` naming the env it works on (when given)."""
    out = proc.clean_environ({k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "POETRY_ACTIVE")})
    if env is not None:
        out["VIRTUAL_ENV"] = str(env)
    out["NO_COLOR"] = "1"
    return out


@dataclass
class PoetryFailed(Exception):
    result: proc.Result
    what: str

    @property
    def said(self) -> str:
        return "Poetry says:\n" + (self.result.error or self.result.output)[-3000:]


def run(args: list[str], *, env: Path | None, cwd: Path, log: Path | None, what: str) -> proc.Result:
    exe, _ = poetry()
    done = proc.run([exe, *args, "--no-interaction", "--no-ansi"], env=_environ(env), cwd=cwd, log=log, timeout=TIMEOUT)
    if not done.ok:
        raise PoetryFailed(done, what)
    return done


Locked = workdir.Locked  # the re-lock's result (one home: rebuild.project.workdir)


def move_text(requirement: str, new: str) -> str:
    """The project's TensorFlow requirement as :attr:`Project.requirement` writes it, moved to admit ``new``."""
    m = _POETRY_TEXT.match(requirement)
    if m is not None:
        return f'{m.group("name")} = "{move_poetry_constraint(m.group("constraint"), new)}"'
    return move_requirement(requirement, new)


def _edit(text: str, keys: tuple, kind: str, old: str, new: str) -> str:
    """pyproject.toml with the one TensorFlow entry changed from ``old`` to ``new`` (display forms)."""
    if kind == "pep508":
        return edit_pyproject(text, old, new)
    return edit_toml_string(
        text, keys, _POETRY_TEXT.match(old).group("constraint"), _POETRY_TEXT.match(new).group("constraint")
    )


def _pinned(requirement: str, version: str) -> str:
    m = _POETRY_TEXT.match(requirement)
    if m is not None:
        return f'{m.group("name")} = "{version}"'
    req = Requirement(requirement)
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}=={version}" + (f"; {req.marker}" if req.marker else "")


def _only(requirement: str, version: str) -> bool:
    """Whether ``requirement`` (display form) admits ``version`` alone."""
    from rebuild.project.requirement import poetry_specifiers

    m = _POETRY_TEXT.match(requirement)
    specs = poetry_specifiers(m.group("constraint")) if m else [str(Requirement(requirement).specifier)]
    return specs in ([f"=={version}"], [f"==={version}"])


def locked_versions(lock: bytes) -> dict[str, set[str]]:
    """``{name: versions}`` of a ``poetry.lock``."""
    try:
        data = tomllib.loads(lock.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    out: dict[str, set[str]] = {}
    for p in data.get("package", []):
        if isinstance(p, dict):
            out.setdefault(canonicalize_name(str(p.get("name", ""))), set()).add(str(p.get("version")))
    return out


def local_packages(lock: bytes) -> set[str]:
    """Packages a ``poetry.lock`` installs from a folder or a local file (Poetry reinstalls them at will)."""
    try:
        data = tomllib.loads(lock.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    return {
        canonicalize_name(str(p.get("name", "")))
        for p in data.get("package", [])
        if isinstance(p, dict)
        and isinstance(p.get("source"), dict)
        and p["source"].get("type") in ("directory", "file")
    }


def _changes(old: bytes | None, new: bytes) -> list[str]:
    before = {n: ", ".join(sorted(v)) for n, v in locked_versions(old or b"").items()}
    after = {n: ", ".join(sorted(v)) for n, v in locked_versions(new).items()}
    out = [f"Updated {n} v{before[n]} -> v{after[n]}" for n in sorted(after) if n in before and before[n] != after[n]]
    out += [f"Added {n} v{after[n]}" for n in sorted(after) if n not in before]
    out += [f"Removed {n} v{before[n]}" for n in sorted(before) if n not in after]
    return out


def lock(
    project: Project, distribution: str, version: str, op: str, *, current: Path, log: Path | None, skip: set[str]
) -> Locked:
    """Re-lock ``project`` for ``distribution==version`` in a work folder beside it (see the module docstring).

    ``current``: the env as it is (Poetry reads its interpreter while locking; nothing is installed)."""
    root = project.root
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    entries = poetry_tf_entries(tomllib.loads(text))
    if not entries or entries[0][1] == "other":
        raise UserError(
            f"TensorFlow is not a direct dependency with a version in {root / 'pyproject.toml'}.",
            "Add it with `poetry add tensorflow-cpu` (or your variant), then run tfrebuild again.",
        )
    keys, kind, old = entries[0]
    name = _POETRY_TEXT.match(old).group("name") if kind == "poetry" else Requirement(old).name
    if canonicalize_name(name) != canonicalize_name(distribution):
        raise UserError(
            f"The plan moves the project from {name} to {distribution}, which tfrebuild does not do "
            "in a Poetry project.",
            f"Change the requirement in pyproject.toml yourself (`poetry remove {name} && poetry add "
            f"{distribution}`), or plan without the switch (e.g. without --keras legacy / --gpu).",
        )
    new = move_text(old, version)
    new_text = _edit(text, keys, kind, old, new)
    pinned = _pinned(old, version)
    _, poetry_version = poetry()
    lock_args = ["lock"] + (["--no-update"] if poetry_version < (2,) else [])
    old_lock = (root / "poetry.lock").read_bytes() if (root / "poetry.lock").is_file() else None
    work = workdir.create(
        root,
        op,
        {"pyproject.toml": text.encode("utf-8"), **({"poetry.lock": old_lock} if old_lock is not None else {})},
        skip=skip,
        doing="re-locks",
    )
    with workdir.removed_on_error(work):
        steps = [new_text] if _only(new, version) else [_edit(text, keys, kind, old, pinned), new_text]
        for step_text in steps:  # pinned first when the moved range admits more than the planned version
            (work / "pyproject.toml").write_text(step_text, encoding="utf-8")
            try:
                run(lock_args, env=current, cwd=work, log=log, what="poetry lock")
            except PoetryFailed as exc:
                raise failed(
                    f"Poetry could not lock the project {root} with {new}",
                    exc.said,
                    "Poetry's message above says which requirement stands in the way; change it in "
                    "pyproject.toml, or plan another version with --to.",
                ) from None
        files = {
            "pyproject.toml": (work / "pyproject.toml").read_bytes(),
            "poetry.lock": (work / "poetry.lock").read_bytes(),
        }
        workdir.expect_locked(
            "Poetry",
            distribution,
            version,
            locked_versions(files["poetry.lock"]).get(canonicalize_name(distribution), set()),
            root,
            "its sources, or the python it declares",
        )
    return Locked(
        workdir=work,
        files=files,
        old_requirement=old,
        new_requirement=new,
        changes=_changes(old_lock, files["poetry.lock"]),
    )


def _sync(poetry_version: tuple[int, ...]) -> list[str]:
    return ["sync"] if poetry_version >= (2,) else ["install", "--sync"]


def build(locked: Locked, new: NewEnv, seeds: dict[str, str] | None = None, index=None) -> Path:
    """``staging/env``: a relocatable venv holding the lock's packages (not the project's own), and the
    ``seeds`` (pip: ``{name: version}``) the env had beside them, which ``poetry sync`` leaves alone."""
    log = new.log
    _, poetry_version = poetry()
    try:
        env = uv_venv(new)
    except uvcmd.UvFailed as exc:
        raise uv_error("uv venv could not create the new environment; nothing was changed.", exc, log) from None
    compile_flag = ["--compile"] if new.compile_bytecode and poetry_version >= (1, 4) else []
    args = _sync(poetry_version) + ["--no-root"] + compile_flag
    try:
        run(args, env=env, cwd=locked.workdir, log=log, what="poetry sync")
    except PoetryFailed as exc:
        raise failed(
            "Poetry could not build the new environment from the project's new lock",
            exc.said,
            f"Poetry's full output is in {log}." if log else "Run again to see Poetry's output.",
            build=True,
        ) from None
    if seeds:
        from rebuild.index import config as indexconf

        args = [
            "pip",
            "install",
            "--no-config",
            "--no-deps",
            "--python",
            str(env / "bin" / "python"),
            "--quiet",
            *(f"{n}=={v}" for n, v in sorted(seeds.items())),
        ]
        args += indexconf.uv_args(index, offline=new.offline, for_install=True) if index is not None else []
        try:
            uvcmd.run(args, log=log, what="uv pip install", for_install=True)
        except uvcmd.UvFailed as exc:
            message = f"uv could not install {', '.join(sorted(seeds))} into the new environment; nothing was changed."
            raise uv_error(message, exc, log) from None
    return env


def distributions(env: Path) -> dict[str, str]:
    """``{name: version}`` of the distributions installed in ``env``."""
    return distinfo.installed(env)


def settle(project: Project, env: Path, *, log: Path | None) -> str:
    """After the swap: ``poetry sync`` in the project installs its own package and changes nothing else;
    raises ``UserError`` when the env and the lock do not agree."""
    _, poetry_version = poetry()
    lock_bytes = (project.root / "poetry.lock").read_bytes() if (project.root / "poetry.lock").is_file() else b""
    own = {project.name} | local_packages(lock_bytes) if project.name else local_packages(lock_bytes)
    args = _sync(poetry_version)
    before, identity = distributions(env), venv_identity(env)
    try:
        dry = run([*args, "--dry-run"], env=env, cwd=project.root, log=log, what="poetry sync --dry-run")
        ops = [
            (m.group(1), canonicalize_name(m.group(2)), m.group(3))
            for m in (_OPERATION.match(line) for line in dry.stdout.splitlines() if "Skipped" not in line)
            if m
        ]
        others = [f"{verb.lower()} {name} ({detail})" for verb, name, detail in ops if name not in own]
        if others:
            raise UserError(
                f"`poetry {' '.join(args)}` in {project.root} would change the new environment: {'; '.join(others)}",
                "The env and poetry.lock do not agree.",
                exit_code=1,
                details=dry.output[-3000:],
            )
        run(args, env=env, cwd=project.root, log=log, what="poetry sync")
    except PoetryFailed as exc:
        raise UserError(
            f"{exc.what} in {project.root} does not agree with the new environment",
            f"Poetry's full output is in {log}." if log else "",
            exit_code=1,
            details=exc.said,
        ) from None
    after = distributions(env)
    changed = sorted(n for n in set(before) | set(after) if n not in own and before.get(n) != after.get(n))
    if changed:
        raise UserError(
            f"poetry sync in {project.root} changed the new environment: "
            + ", ".join(f"{n} {before.get(n, '-')} → {after.get(n, '-')}" for n in changed),
            exit_code=1,
        )
    if venv_identity(env) != identity:  # the directory, or a venv made again in it (its pyvenv.cfg is new)
        raise UserError(f"poetry sync replaced the environment at {env} instead of using it", exit_code=1)
    return f"`poetry {' '.join(args)}` agrees (it changed nothing but the project's own package)"


def requirements(pyproject: dict) -> list[str]:
    """The project's own requirements as PEP 508 strings (what the plan resolves for it): ``[project]``'s
    and ``[tool.poetry.dependencies]``/non-optional groups' (Poetry's constraints translated; an entry with
    markers, a python limit, a source of its own or optional is left to the env's installed set)."""
    from rebuild.project.requirement import poetry_specifiers

    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    out = (
        [d for d in project.get("dependencies", []) if isinstance(d, str)]
        if isinstance(project.get("dependencies"), list)
        else []
    )
    tool = pyproject.get("tool") if isinstance(pyproject.get("tool"), dict) else {}
    poetry_table = tool.get("poetry") if isinstance(tool.get("poetry"), dict) else {}
    tables = [poetry_table.get("dependencies")]
    groups = poetry_table.get("group")
    if isinstance(groups, dict):
        tables += [g.get("dependencies") for g in groups.values() if isinstance(g, dict) and not g.get("optional")]
    for table in tables:
        for name, value in table.items() if isinstance(table, dict) else []:
            if canonicalize_name(name) == "python":
                continue
            if isinstance(value, dict):
                if set(value) - {"version", "extras"}:
                    continue
                value = value.get("version", "*")
            if not isinstance(value, str):
                continue
            try:
                specs = poetry_specifiers(value)
            except ValueError:
                specs = [""]
            out.append(name + (specs[0] if len(specs) == 1 else ""))
    return out


def discard(locked: Locked | None) -> None:
    if locked is not None:
        shutil.rmtree(locked.workdir, ignore_errors=True)
