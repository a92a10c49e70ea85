"""Which tool owns an environment, and whether tfrebuild can drive it.

A project's own tool rebuilds the env from the project's files at its next run (``uv run``,
``uv sync``, ``poetry install``, ``pip-sync``, ``conda env update``). Swapping the env alone is
undone there. :func:`detect` looks at the env and the folder around it:

* **uv project**: ``pyproject.toml`` with ``uv.lock`` or ``[tool.uv]`` in the env's parent folder,
  the env being that project's ``.venv`` (or ``$UV_PROJECT_ENVIRONMENT``);
* **Poetry**: ``poetry.lock`` or ``[tool.poetry]`` beside an in-project ``.venv``, or the project in
  the current folder for one of Poetry's cached venvs;
* **requirement files** (pip-tools, ``uv pip compile``, hand-made) beside the env that name TensorFlow;
* **conda**: ``conda-meta`` in the env, or an ``environment.yml`` beside it that names TensorFlow.

uv projects are driven through uv (:mod:`rebuild.project.uvproject`), Poetry projects through the
user's own ``poetry`` (:mod:`rebuild.project.poetryproject`), and a ``requirements*.in`` naming
TensorFlow with its compiled ``.txt`` (a ``uv pip compile`` or pip-compile header) by
:mod:`rebuild.project.requirements`; for the others :attr:`Project.reverts`
says what would undo an upgrade and :attr:`Project.fix` what to change, and ``upgrade`` refuses
unless ``--force``.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rebuild.knowledge.tf import TF_DISTRIBUTIONS

MANAGERS = ("uv", "poetry", "requirements", "conda")
_REQ_NAME = re.compile(r"^\s*(?:-\s*)?([A-Za-z0-9][A-Za-z0-9._-]*)")  # a requirement line, or a YAML list item


@dataclass(frozen=True)
class Project:
    """The manager of an env (see the module docstring)."""

    manager: str  # one of MANAGERS
    root: Path  # the project folder
    files: tuple[str, ...]  # the project files tfrebuild keeps with each generation (relative to root)
    drivable: bool  # tfrebuild upgrades the project files with the env
    reverts: str = ""  # what would put the old TensorFlow back (when not drivable)
    fix: str = ""  # what the user can do instead
    packaged: bool = False  # the project installs itself (uv: a build system or tool.uv.package; Poetry: package-mode)
    requirement: str = ""  # the TensorFlow requirement as the project writes it ("" when none; Poetry's own
    # constraints as `tensorflow-cpu = "^2.15"`)
    name: str = ""  # the project's own distribution name ([project].name)
    how: str = ""  # requirement files: what an upgrade does to them (the plan's line)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        kind = {
            "uv": "uv project",
            "poetry": "Poetry project",
            "requirements": "requirement files",
            "conda": "conda environment",
        }[self.manager]
        return f"{kind} at {self.root} ({', '.join(self.files)})" if self.files else f"{kind} at {self.root}"


def _toml(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None


def tf_requirements(pyproject: dict) -> list[str]:
    """The requirement strings of ``pyproject`` that name a TensorFlow distribution, wherever uv reads them."""
    found: list[str] = []
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    lists = [project.get("dependencies")]
    optional = project.get("optional-dependencies")
    if isinstance(optional, dict):
        lists += list(optional.values())
    groups = pyproject.get("dependency-groups")
    if isinstance(groups, dict):
        lists += list(groups.values())
    tool_uv = (pyproject.get("tool") or {}).get("uv") if isinstance(pyproject.get("tool"), dict) else None
    if isinstance(tool_uv, dict):
        lists.append(tool_uv.get("dev-dependencies"))
    for items in lists:
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, str):
                continue
            try:
                name = canonicalize_name(Requirement(item).name)
            except InvalidRequirement:
                continue
            if name in TF_DISTRIBUTIONS:
                found.append(item)
    return found


def _in_workspace(root: Path, data: dict) -> Path | None:
    """The workspace root holding ``root`` (itself when it declares members), else ``None``."""
    tool_uv = (data.get("tool") or {}).get("uv") or {}
    if isinstance(tool_uv, dict) and isinstance(tool_uv.get("workspace"), dict):
        return root
    for parent in root.parents:
        other = _toml(parent / "pyproject.toml") if (parent / "pyproject.toml").is_file() else None
        if other and isinstance(((other.get("tool") or {}).get("uv") or {}).get("workspace"), dict):
            return parent
    return None


def _project_env(root: Path) -> Path:
    """Where uv puts the project's env: ``$UV_PROJECT_ENVIRONMENT`` (relative to the project) or ``.venv``."""
    named = os.environ.get("UV_PROJECT_ENVIRONMENT")
    if named:
        return Path(os.path.abspath(root / os.path.expanduser(named)))
    return root / ".venv"


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _uv_project(env: Path) -> Project | None:
    candidates = [env.parent]
    cwd = Path.cwd()
    if cwd not in candidates:
        candidates.append(cwd)
    for root in candidates:
        data = _toml(root / "pyproject.toml") if (root / "pyproject.toml").is_file() else None
        if data is None:
            continue
        tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
        is_uv = (root / "uv.lock").is_file() or isinstance(tool.get("uv"), dict)
        if not is_uv or not _same(_project_env(root), env):
            continue
        files = tuple(n for n in ("pyproject.toml", "uv.lock") if (root / n).is_file())
        reqs = tf_requirements(data)
        tool_uv = tool.get("uv") if isinstance(tool.get("uv"), dict) else {}
        packaged = tool_uv.get("package") is True or (
            tool_uv.get("package") is not False and isinstance(data.get("build-system"), dict)
        )
        workspace = _in_workspace(root, data)
        name = (data.get("project") or {}).get("name", "") if isinstance(data.get("project"), dict) else ""
        from packaging.utils import canonicalize_name

        base = dict(
            manager="uv",
            root=root,
            files=files,
            packaged=packaged,
            requirement=reqs[0] if reqs else "",
            name=canonicalize_name(name) if isinstance(name, str) and name else "",
        )
        reverts = f"`uv sync` or `uv run` in {root} would put the locked TensorFlow back"
        if workspace is not None:
            return Project(
                **base,
                drivable=False,
                reverts=reverts,
                fix=f"{root} is part of the uv workspace at {workspace}, which tfrebuild does not drive: "
                "change the TensorFlow requirement there and run `uv lock && uv sync`",
            )
        if not reqs:
            return Project(
                **base,
                drivable=False,
                reverts=reverts,
                fix="TensorFlow is not a direct dependency in pyproject.toml; add it there with "
                f"`uv add {_installed_tf(env)}` (the version the env holds: nothing else moves), then "
                "run tfrebuild again",
            )
        if len(set(reqs)) > 1:
            return Project(
                **base,
                drivable=False,
                reverts=reverts,
                fix=f"pyproject.toml names TensorFlow more than once ({', '.join(reqs)}); keep one "
                "requirement, then run tfrebuild again",
            )
        refusal = _undrivable_layout(root, env, files)
        if refusal:
            return Project(**base, drivable=False, reverts=reverts, fix=refusal)
        return Project(**base, drivable=True)
    return None


def _installed_tf(env: Path) -> str:
    """``tensorflow-cpu==2.15.1``: the TensorFlow distribution the env holds, pinned (``tensorflow-cpu`` if none)."""
    from rebuild.project import requirements as reqfiles

    held = reqfiles.installed(env)
    for name in TF_DISTRIBUTIONS:
        if canonicalize_name(name) in held:
            return f"{canonicalize_name(name)}=={held[canonicalize_name(name)]}"
    return "tensorflow-cpu"


def _undrivable_layout(root: Path, env: Path, files) -> str:
    """Why tfrebuild will not write this project's files ("" when it will): never through a link, never outside."""
    links = [n for n in files if (root / n).is_symlink()]
    if links:
        return (
            f"{', '.join(links)} in {root} is a symbolic link, and tfrebuild never writes through links: "
            "upgrade the project with its own tool, or replace the link by the file"
        )
    if not Path(os.path.abspath(env)).is_relative_to(root):
        return (
            f"the env {env} lives outside the project {root} (UV_PROJECT_ENVIRONMENT), and tfrebuild keeps a "
            "project's files with the generations of an env inside it: use the project's .venv, or upgrade "
            "with `uv add` / `uv sync` yourself"
        )
    return ""


def poetry_tf_entries(pyproject: dict) -> list[tuple[tuple, str, str]]:
    """Where a Poetry project names TensorFlow: ``(keys, kind, text)`` for each entry, ``keys`` the TOML path
    of the string that holds the version, ``kind`` ``"pep508"`` (``[project]`` lists: ``text`` is the
    requirement), ``"poetry"`` (``[tool.poetry.*dependencies]``: ``text`` is Poetry's constraint) or
    ``"other"`` (a path, git or url source, several constraints: not movable; ``text`` says what)."""
    found: list[tuple[tuple, str, str]] = []
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    lists = [(("project", "dependencies"), project.get("dependencies"))]
    optional = project.get("optional-dependencies")
    if isinstance(optional, dict):
        lists += [(("project", "optional-dependencies", k), v) for k, v in optional.items()]
    for keys, items in lists:
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, str) and item in tf_requirements({"project": {"dependencies": [item]}}):
                found.append(((*keys, i), "pep508", item))
    tool = pyproject.get("tool") if isinstance(pyproject.get("tool"), dict) else {}
    poetry = tool.get("poetry") if isinstance(tool.get("poetry"), dict) else {}
    tables = [
        (("tool", "poetry", "dependencies"), poetry.get("dependencies")),
        (("tool", "poetry", "dev-dependencies"), poetry.get("dev-dependencies")),
    ]
    groups = poetry.get("group")
    if isinstance(groups, dict):
        tables += [
            (("tool", "poetry", "group", g, "dependencies"), (v or {}).get("dependencies"))
            for g, v in groups.items()
            if isinstance(v, dict)
        ]
    for keys, table in tables:
        for name, value in table.items() if isinstance(table, dict) else []:
            if canonicalize_name(name) not in TF_DISTRIBUTIONS:
                continue
            if isinstance(value, str):
                found.append(((*keys, name), "poetry", f'{name} = "{value}"'))
            elif (
                isinstance(value, dict)
                and isinstance(value.get("version"), str)
                and not ({"path", "git", "url", "file"} & set(value))
            ):
                found.append(((*keys, name, "version"), "poetry", f'{name} = "{value["version"]}"'))
            elif isinstance(value, dict) and not ({"version", "path", "git", "url", "file"} & set(value)):
                continue  # Poetry 2: a [project] requirement's source or extra settings, not a requirement
            else:
                found.append(((*keys, name), "other", f"{name} = {value!r}"))
    return found


def _poetry_project(env: Path) -> Project | None:
    candidates = [env.parent]
    cwd = Path.cwd()
    cache = Path(os.environ.get("POETRY_VIRTUALENVS_PATH") or Path.home() / ".cache" / "pypoetry" / "virtualenvs")
    if _same(env.parent, cache):
        candidates = [cwd]  # a cached venv: the project is the one tfrebuild is run in
    for root in candidates:
        data = _toml(root / "pyproject.toml") if (root / "pyproject.toml").is_file() else None
        if data is None:
            continue
        tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
        if not ((root / "poetry.lock").is_file() or isinstance(tool.get("poetry"), dict)):
            continue
        if root == env.parent and env.name != ".venv":
            continue
        files = tuple(n for n in ("pyproject.toml", "poetry.lock") if (root / n).is_file())
        poetry = tool.get("poetry") if isinstance(tool.get("poetry"), dict) else {}
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        name = project.get("name") or poetry.get("name") or ""
        entries = poetry_tf_entries(data)
        base = dict(
            manager="poetry",
            root=root,
            files=files,
            reverts=f"`poetry install` / `poetry sync` in {root} would put the locked TensorFlow back",
            requirement=entries[0][2] if entries else "",
            name=canonicalize_name(name) if isinstance(name, str) and name else "",
            packaged=poetry.get("package-mode") is not False,
        )
        if find_poetry() is None:
            return Project(
                **base,
                drivable=False,
                fix="tfrebuild upgrades a Poetry project through Poetry's own commands, and no `poetry` "
                "was found (on PATH or in $POETRY): install Poetry apart (`pipx install poetry`, or "
                "`python3 -m venv ~/.local/share/pypoetry && ~/.local/share/pypoetry/bin/pip install "
                "poetry`), put its `poetry` on PATH or name it in $POETRY, and run tfrebuild again; "
                "or pass --force to upgrade the env alone",
            )
        if not entries:
            return Project(
                **base,
                drivable=False,
                fix="TensorFlow is not a direct dependency in pyproject.toml; add it with `poetry add "
                "tensorflow-cpu` (or the variant you use), then run tfrebuild again",
            )
        if len({text for _, _, text in entries}) > 1 or entries[0][1] == "other":
            return Project(
                **base,
                drivable=False,
                fix=f"pyproject.toml names TensorFlow as {'; '.join(t for _, _, t in entries)}; keep one "
                "requirement with a version constraint, then run tfrebuild again",
            )
        if not (root / "poetry.lock").is_file():
            return Project(
                **base,
                drivable=False,
                fix="the project has no poetry.lock yet: run `poetry lock && poetry install`, then tfrebuild again",
            )
        return Project(**base, drivable=True)
    return None


def _names_tf(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(_names_a_tf(line) for line in text.splitlines())


def _names_a_tf(line: str) -> bool:
    """The line is a requirement (or YAML list item) for a TensorFlow distribution itself: not tensorflow-hub."""
    m = _REQ_NAME.match(line.split("#", 1)[0])
    if m is None:
        return False
    name = re.split(r"[=<>!~\[;@ ]", m.group(1), maxsplit=1)[0]
    return canonicalize_name(name) in TF_DISTRIBUTIONS


def _requirement_files(env: Path) -> Project | None:
    root = env.parent
    try:
        names = sorted(
            p.name for p in root.iterdir() if p.is_file() and re.fullmatch(r"requirements[\w.-]*\.(in|txt)", p.name)
        )
    except OSError:
        return None
    files = tuple(n for n in names if _names_tf(root / n))
    if not files:
        return None
    shown = " or ".join(f"`pip install -r {n}`" if n.endswith(".txt") else f"a compile of {n}" for n in files)
    reverts = f"{shown} (or `pip-sync`) would put the TensorFlow they name back"
    fix = (
        f"change the TensorFlow line of {', '.join(files)} to the planned version (and recompile the .txt), or "
        "pass --force to upgrade the env alone"
    )
    compiled = _compiled_pair(env, root, files, [n for n in names if n.endswith(".in")])
    if isinstance(compiled, Project):
        return compiled
    if compiled:
        fix = f"{compiled}; or {fix}"
    return Project(manager="requirements", root=root, files=files, drivable=False, reverts=reverts, fix=fix)


def _compiled_pair(env: Path, root: Path, files: tuple[str, ...], all_ins: list[str]) -> Project | str:
    """A drivable pair ``<name>.in`` + compiled ``<name>.txt``, or why the files are not one ("" when no .in)."""
    from rebuild.knowledge.tf import SEED_PACKAGES
    from rebuild.project import requirements as reqfiles

    ins = [n for n in files if n.endswith(".in")]
    if not ins and all_ins:
        return f"{' and '.join(all_ins)} do{'es' if len(all_ins) == 1 else ''} not name TensorFlow on a line of its own"
    if not ins:
        return (
            "tfrebuild recompiles requirement files from their .in; "
            f"{' and '.join(files)} hold{'s' if len(files) == 1 else ''} hand-written pins it does not edit"
        )
    if len(ins) > 1:
        return f"TensorFlow is named in {' and '.join(ins)}, and tfrebuild moves it in one file"
    in_name = ins[0]
    txt_name = in_name[:-3] + ".txt"
    reverts = (
        f"`uv pip sync {txt_name}`, `pip-sync` or `pip install -r {txt_name}` would put the TensorFlow it pins back"
    )
    if not (root / txt_name).is_file():
        return f"{in_name} has no compiled {txt_name} beside it (compile it: `uv pip compile {in_name} -o {txt_name}`)"
    text = (root / txt_name).read_text(encoding="utf-8", errors="replace")
    header = reqfiles.read_header(text)
    if isinstance(header, str):
        return f"{txt_name} cannot be recompiled: {header} (compile it: `uv pip compile {in_name} -o {txt_name}`)"
    if header.output != txt_name or in_name not in header.inputs:
        return (
            f"the header of {txt_name} compiles {', '.join(header.inputs) or 'no input'} into {header.output}, "
            f"not {in_name} into {txt_name} in this folder"
        )
    in_text = (root / in_name).read_text(encoding="utf-8", errors="replace")
    lines = reqfiles.tf_lines(in_text, TF_DISTRIBUTIONS)
    if len(lines) != 1:
        return f"{in_name} names TensorFlow on {len(lines)} lines, and tfrebuild moves exactly one"
    base = dict(
        manager="requirements",
        root=root,
        files=(in_name, txt_name),
        requirement=lines[0][1],
        reverts=reverts,
        how=reqfiles.describe(header, text),
    )
    pinned = reqfiles.pins(text)
    installed = reqfiles.installed(env)
    from rebuild import SELF

    extra = sorted(n for n in installed if n not in pinned and n not in SEED_PACKAGES and n not in SELF)
    if extra:
        return Project(
            **base,
            drivable=False,
            fix=f"the env holds {', '.join(extra)}, which {txt_name} does not list, and an env rebuilt "
            f"from {txt_name} would not have them (add them to {in_name} and recompile {txt_name} "
            "with the command in its header, or uninstall them, then run tfrebuild again), or pass "
            "--force to upgrade the env alone",
        )
    notes = [
        f"{n} {installed.get(n, '(missing)')} is installed and {txt_name} pins {v}: the new env follows {txt_name}"
        for n, v in sorted(pinned.items())
        if v and installed.get(n) != v
    ]
    return Project(**base, drivable=True, notes=notes)


def _conda(env: Path) -> Project | None:
    if (env / "conda-meta").is_dir():
        files = tuple(n for n in ("environment.yml", "environment.yaml") if (env.parent / n).is_file())
        return Project(
            manager="conda",
            root=env.parent if files else env,
            files=files,
            drivable=False,
            reverts="`conda install`, `conda update` or `conda env update` would resolve the env again "
            "with conda's own records (conda-meta), which a rebuilt env does not keep",
            fix="upgrade TensorFlow with conda's tools in a conda env, or pass --force to build a venv-"
            "style env from the profile (conda will no longer know its packages)",
        )
    for name in ("environment.yml", "environment.yaml"):
        path = env.parent / name
        if path.is_file() and _names_tf(path):
            return Project(
                manager="conda",
                root=env.parent,
                files=(name,),
                drivable=False,
                reverts=f"`conda env update -f {name}` would put the TensorFlow it names back",
                fix=f"change TensorFlow in {name}, or pass --force to upgrade the env alone",
            )
    return None


def find_poetry() -> str | None:
    """The user's ``poetry``: ``$POETRY`` (a path or a name on PATH), else ``poetry`` on PATH."""
    named = os.environ.get("POETRY")
    if named:
        found = shutil.which(os.path.expanduser(named))
        return found
    return shutil.which("poetry")


def detect(env: Path) -> Project | None:
    """The manager of the env at ``env`` (see the module docstring), or ``None`` for a plain env."""
    env = Path(os.path.abspath(env))
    for probe in (_uv_project, _poetry_project, _conda, _requirement_files):
        found = probe(env)
        if found is not None:
            return found
    return None
