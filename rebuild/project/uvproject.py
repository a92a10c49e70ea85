"""A uv project, upgraded through uv itself.

1. :func:`lock`: the project's ``pyproject.toml`` and ``uv.lock`` are copied into a work folder
   beside the project (``.<name>.tfrebuild-<op>``, a sibling, so that relative paths such as
   ``../lib`` mean the same there; every other top-level entry is a symlink to the project's own),
   the TensorFlow requirement is moved in the user's style (:mod:`rebuild.project.requirement`) and
   ``uv lock`` re-locks, keeping every other locked version where it can. The project itself is
   not touched.
2. :func:`build`: a relocatable venv in the staging folder, filled by ``uv sync --locked`` from the
   work folder with ``UV_PROJECT_ENVIRONMENT`` pointing at it, without the project's own package
   and local path dependencies (those would point into the work folder).
3. After the swap and the project files are written (:func:`rebuild.project.files.sync`),
   :func:`settle` runs ``uv sync --locked`` in the project (which installs the project's own
   package, from the project) and ``uv sync --locked --check``: the env and the lock agree, so
   ``uv run --locked`` and ``uv sync --locked`` change nothing.

The project's own index settings (``[tool.uv]``, ``uv.toml``, ``UV_*``) are uv's to read, as at
the user's next ``uv sync``; tfrebuild passes only ``--offline``.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import tomllib
from pathlib import Path

from rebuild.errors import UserError
from rebuild.project.detect import Project, tf_requirements
from rebuild.project import workdir
from rebuild.project.newenv import NewEnv, build_failed, failed, uv_error, uv_says, uv_venv
from rebuild.project.requirement import edit_pyproject, move_requirement
from rebuild.store.trees import venv_identity
from rebuild.util import distinfo
from rebuild.util import uv as uvcmd

_CHANGE = re.compile(r"^(Added|Updated|Removed|Downgraded) .+$")


Locked = workdir.Locked  # the re-lock's result (one home: rebuild.project.workdir)


def _uv_env(env: Path | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    if env is not None:
        out["UV_PROJECT_ENVIRONMENT"] = str(env)
    out["UV_NO_PROGRESS"] = "1"
    return out


class LockFailed(UserError):
    """uv found no solution for the project with the planned TensorFlow (``reason``: uv's explanation)."""

    def __init__(self, message: str, hint: str, reason: str):
        super().__init__(message, hint, exit_code=1, details="uv says:\n" + reason)
        self.reason = reason


def lock(
    project: Project, distribution: str, version: str, op: str, *, offline: bool, log: Path | None, skip: set[str]
) -> Locked:
    """Re-lock ``project`` for ``distribution==version`` in a work folder beside it (see the module docstring)."""
    root = project.root
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    reqs = tf_requirements(tomllib.loads(text))
    if not reqs:
        raise UserError(
            f"TensorFlow is not a direct dependency in {root / 'pyproject.toml'}.",
            "Add it with `uv add tensorflow-cpu` (or your variant), then run tfrebuild again.",
        )
    old = reqs[0]
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    if canonicalize_name(Requirement(old).name) != canonicalize_name(distribution):
        raise UserError(
            f"The plan moves the project from {Requirement(old).name} to {distribution}, which "
            "tfrebuild does not do in a uv project.",
            f"Change the requirement in pyproject.toml yourself (`uv add {distribution}`), or plan "
            "without the switch (e.g. without --keras legacy / --gpu).",
        )
    new = move_requirement(old, version)
    # uv keeps a locked version that the (moved) range still admits: ask for the planned one
    upgrade = ["--upgrade-package", f"{distribution}=={version}"]
    copies = {"pyproject.toml": edit_pyproject(text, old, new).encode("utf-8")}
    if (root / "uv.lock").is_file():
        copies["uv.lock"] = (root / "uv.lock").read_bytes()
    work = workdir.create(root, op, copies, skip=skip, doing="re-locks")
    with workdir.removed_on_error(work):
        args = ["lock", *upgrade] + (["--offline"] if offline else [])
        try:
            done = uvcmd.run(args, env=_uv_env(None), cwd=work, log=log, what="uv lock", for_install=False)
        except uvcmd.UvFailed as exc:
            reason = exc.result.stderr.strip()[-3000:]
            if "No solution found" in reason:
                raise LockFailed(
                    f"uv cannot lock the project {root} with {new}; nothing was changed.", lock_hint(reason), reason
                ) from None
            raise failed(
                f"uv could not lock the project {root} with {new}",
                uv_says(exc),
                "uv's message above says what went wrong.",
            ) from None
        changes = [line.strip() for line in done.stderr.splitlines() if _CHANGE.match(line.strip())]
        files = {"pyproject.toml": (work / "pyproject.toml").read_bytes(), "uv.lock": (work / "uv.lock").read_bytes()}
        workdir.expect_locked(
            "uv",
            distribution,
            version,
            locked_versions(files["uv.lock"], distribution),
            root,
            "its indexes, constraints or requires-python",
        )
    return Locked(workdir=work, files=files, old_requirement=old, new_requirement=new, changes=changes)


def lock_hint(reason: str) -> str:
    """What to change when uv finds no lock: for a Python the project supports but the env does not run, say so."""
    split = re.search(r"resolving dependencies for split \(markers: ([^)]*)\)", reason)
    if split or "failed for other Python versions" in reason:
        where = f" ({split.group(1)})" if split else ""
        return (
            "uv locks for every Python the project's requires-python admits, and it found no solution for "
            f"some of them{where}. Limit requires-python in pyproject.toml to the Pythons you use (e.g. "
            '">=3.11,<3.13"), or move the requirement uv names, or plan an older TensorFlow with --to.'
        )
    return (
        "uv's message above says which requirement stands in the way; change it in pyproject.toml, or plan "
        "another version with --to."
    )


def try_lock(
    project: Project, distribution: str, version: str, op: str, *, offline: bool, log: Path | None, skip: set[str]
) -> Locked:
    """:func:`lock` for the plan: the work folder is removed again (``files`` and ``changes`` are kept)."""
    locked = lock(project, distribution, version, op, offline=offline, log=log, skip=skip)
    discard(locked)
    return locked


def locked_versions(lock: bytes, distribution: str) -> set[str]:
    """The versions of ``distribution`` in a ``uv.lock`` (a lock may hold several, one per fork)."""
    from packaging.utils import canonicalize_name

    try:
        data = tomllib.loads(lock.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    return {
        str(p.get("version"))
        for p in data.get("package", [])
        if isinstance(p, dict) and canonicalize_name(str(p.get("name", ""))) == canonicalize_name(distribution)
    }


def _venv_cfg(env: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    try:
        parser.read_string("[venv]\n" + (env / "pyvenv.cfg").read_text(encoding="utf-8"))
    except (OSError, configparser.Error):
        return {}
    return dict(parser["venv"])


def installed_names(env: Path) -> set[str]:
    """Canonical names of the distributions installed in ``env``."""
    return set(distinfo.installed(env))


def selection(project: Project, env: Path) -> list[str]:
    """The ``--extra`` / ``--group`` / ``--no-dev`` flags that reproduce what ``env`` holds of the project's
    optional dependencies and dependency groups (a plain ``uv sync`` would drop the extras and add groups)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        data = tomllib.loads((project.root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    have = installed_names(env)

    def names(items) -> set[str]:
        out = set()
        for item in items if isinstance(items, list) else []:
            try:
                out.add(canonicalize_name(Requirement(item).name)) if isinstance(item, str) else None
            except InvalidRequirement:
                pass
        return out

    flags: list[str] = []
    project_table = data.get("project") if isinstance(data.get("project"), dict) else {}
    for extra, items in sorted((project_table.get("optional-dependencies") or {}).items()):
        wanted = names(items)
        if wanted and wanted <= have:
            flags += ["--extra", extra]
    groups = data.get("dependency-groups") if isinstance(data.get("dependency-groups"), dict) else {}
    for group, items in sorted(groups.items()):
        wanted = names(items)
        if group == "dev":
            if wanted and not wanted <= have:
                flags.append("--no-dev")
        elif wanted and wanted <= have:
            flags += ["--group", group]
    return flags


def build(locked: Locked, new: NewEnv, chosen: list[str] = ()) -> Path:
    """``staging/env``: a relocatable venv holding the lock's packages (not the project's own)."""
    try:
        env = uv_venv(new)
        args = ["sync", "--locked", "--no-install-project", "--no-install-workspace", "--no-install-local", *chosen]
        args += (["--offline"] if new.offline else []) + (["--compile-bytecode"] if new.compile_bytecode else [])
        uvcmd.run(args, env=_uv_env(env), cwd=locked.workdir, log=new.log, what="uv sync", for_install=True)
    except uvcmd.UvFailed as exc:
        raise build_failed(exc, "the project's new lock", new.log) from None
    if _venv_cfg(env).get("relocatable") != "true":
        raise UserError(
            "uv replaced the new environment with one on another interpreter while syncing the "
            "project (its .python-version or requires-python asks for another Python); nothing was "
            "changed.",
            "Pass --python with the interpreter the project asks for, or change .python-version.",
            exit_code=1,
        )
    return env


def export_pylock(locked: Locked, log: Path | None) -> str | None:
    """The new lock as ``pylock.toml`` (the generation's record; ``None`` when uv cannot export it)."""
    try:
        done = uvcmd.run(
            [
                "export",
                "--frozen",
                "--format",
                "pylock.toml",
                "--no-emit-project",
                "--no-emit-local",
                "--no-header",
                "--quiet",
            ],
            env=_uv_env(None),
            cwd=locked.workdir,
            log=log,
            what="uv export",
        )
    except (uvcmd.UvFailed, UserError):
        return None
    return done.stdout or None


def settle(project: Project, env: Path, *, offline: bool, log: Path | None, chosen: list[str] | None = None) -> str:
    """After the swap: ``uv sync --locked --check`` in the project; when the project's own package (or a local
    one) is still to be installed, ``uv sync --locked`` and the check again. Raises ``UserError`` when the env
    and the lock do not agree."""
    named = None if os.path.abspath(env) == os.path.abspath(project.root / ".venv") else env
    flags = (["--offline"] if offline else []) + list(selection(project, env) if chosen is None else chosen)
    before = venv_identity(env)
    check = ["sync", "--locked", "--check", *flags]
    try:
        if (
            uvcmd.run(
                check, env=_uv_env(named), cwd=project.root, log=log, what="uv sync --check", check=False
            ).returncode
            != 0
        ):
            uvcmd.run(["sync", "--locked", *flags], env=_uv_env(named), cwd=project.root, log=log, what="uv sync")
            uvcmd.run(check, env=_uv_env(named), cwd=project.root, log=log, what="uv sync --check")
    except uvcmd.UvFailed as exc:
        raise uv_error(f"{exc.what} in {project.root} does not agree with the new environment", exc, log) from None
    if venv_identity(env) != before:  # the directory, or a venv made again in it (its pyvenv.cfg is new)
        raise UserError(f"uv sync replaced the environment at {env} instead of using it", exit_code=1)
    return "uv sync --locked agrees"


def local_imports(env: Path, names: set[str]) -> set[str]:
    """Import names of the distributions ``names`` installed in ``env`` (their top_level.txt, else the name)."""
    out = {n.replace("-", "_").replace(".", "_") for n in names}
    for dist_info in env.glob("lib/python*/site-packages/*.dist-info"):
        name = (distinfo.parse(dist_info.name) or ("", ""))[0]
        if name in names:
            try:
                out |= {t.strip() for t in (dist_info / "top_level.txt").read_text().splitlines() if t.strip()}
            except OSError:
                pass
    return out


def discard(locked: Locked | None) -> None:
    if locked is not None:
        shutil.rmtree(locked.workdir, ignore_errors=True)
