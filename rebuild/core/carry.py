"""What the user has that no lock holds, carried into the new env (issue 23, point 5).

The lock rebuilds every distribution; three things of the user's are outside it:

- their own ``.pth`` files and loose top-level modules or packages in site-packages (no distribution installed
  them): copied into the staged env's site-packages before its checks, when every file is a regular file of the
  env's owner (no link is followed, nothing else is copied);
- ``include-system-site-packages = true``: the new env is made with it too (``uv venv --system-site-packages``);
- distributions whose metadata is broken: uv cannot reinstall what has no name or version, so they are named in
  the plan with what to do, and their import names join the import checks: one that imports in the current env
  and not in the new one stops the upgrade before the swap, naming it.

:func:`survey` (at plan time) says which is which; :func:`copy_into` (in the build) copies; :func:`explain` words a
failed import of such a name in the checks' output.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.knowledge.tf import LEGACY_KERAS_PTH
from rebuild.util import distinfo, fs

if TYPE_CHECKING:
    from rebuild.core.smoke import Check
    from rebuild.doctor.findings import Finding

#: Loose modules that are not imported as a check: they run at start-up anyway, or run code when imported.
NOT_IMPORTED = frozenset({"sitecustomize", "usercustomize", "setup", "conftest", "__main__"})


@dataclass
class Item:
    """One thing of the user's outside the lock, and whether the new env gets it."""

    kind: str  # "pth" (a .pth file), "module" (a loose module or package), "system-site" (the pyvenv.cfg setting)
    path: str
    name: str
    carried: bool
    why: str = ""  # why it is not carried


@dataclass
class Carry:
    items: list[Item] = field(default_factory=list)
    system_site: bool = False  # the new env sees the system site-packages, as the current one does
    imports: dict[str, str] = field(default_factory=dict)  # import name -> why the new env may lack it
    broken: dict[str, str] = field(default_factory=dict)  # import name -> the broken metadata folder that installed it
    reinstalled: list[str] = field(default_factory=list)  # broken metadata folders of projects the lock installs

    @property
    def copied(self) -> list[Item]:
        return [i for i in self.items if i.carried and i.kind in ("pth", "module")]


def survey(data: Probed, env: Path, *, built_by_project: bool = False, locked: frozenset[str] = frozenset()) -> Carry:
    """What of the probe's report the new env gets; ``built_by_project``: a project's tool builds it;
    ``locked``: the projects the new env's lock installs (a broken folder of one of them is reinstalled)."""
    out = Carry()
    try:
        owner = os.lstat(env).st_uid
    except OSError:
        return out
    provided = {t for d in data.distributions if d.get("location") == "env" for t in d.get("top_level") or []}
    for d in data.debris:
        kind, path = d.get("kind"), str(d.get("path") or "")
        if d.get("location") != "env" or not path:
            continue
        if kind in ("own-pth", "orphan-top-level"):
            if Path(path).name == LEGACY_KERAS_PTH:  # tfrebuild's own: the plan's Keras mode decides it
                continue
            why = "the project's tool builds the new env" if built_by_project else unsafe(Path(path), owner)
            item = Item("pth" if kind == "own-pth" else "module", path, str(d.get("name") or ""), not why, why)
            out.items.append(item)
            if item.carried and item.kind == "module" and item.name.isidentifier() and item.name not in NOT_IMPORTED:
                out.imports[item.name] = f"{path} was copied into the new env and does not import there"
            # not carried: the plan says why, and that is what the new env lacks
        elif kind in ("no-metadata", "bad-metadata"):
            detail = d.get("detail") or "no METADATA file"
            project = (distinfo.parse(Path(path).name) or ("", ""))[0]
            if project in locked:
                out.reinstalled.append(path)
            for name in set(import_names(Path(path))) - provided:  # a healthy distribution's name is reinstalled
                if project not in locked:  # as is one of a project the lock installs (a dependency of TensorFlow)
                    out.broken.setdefault(name, path)
                out.imports.setdefault(
                    name,
                    (
                        f"its metadata folder {path} is broken ({detail}), so uv cannot reinstall it in the new env; "
                        f"repair it in the current env first (the plan's broken-dist-info fix), then upgrade again"
                    ),
                )
    if data.env.get("include_system_site_packages"):
        out.system_site = not built_by_project
        out.items.append(
            Item(
                "system-site",
                str(env / "pyvenv.cfg"),
                "include-system-site-packages",
                out.system_site,
                "the project's tool builds the new env" if built_by_project else "",
            )
        )
    return out


def mark(findings: list[Finding], carry: Carry) -> list[Finding]:
    """The pre-flight's findings say what the new env gets: "carried" for what :func:`copy_into` copies and for
    the system site-packages setting, and why not for the rest."""
    for f in findings:
        item = None
        if f.id == "broken-dist-info" and f.evidence and str(f.evidence[0]).split(": ", 1)[0] in carry.reinstalled:
            f.fixed_by_rebuild, f.dropped_by_rebuild = True, False  # the lock installs that project afresh
        elif f.id == "broken-dist-info" and f.evidence:
            names = [n for n, why in carry.imports.items() if str(f.evidence[0]).split(": ", 1)[0] in why]
            f.fix += (
                (
                    f"; `tfrebuild upgrade` checks that {', '.join(names)} still import(s) in the new env and stops "
                    "before the swap, naming it, if not"
                )
                if names
                else ""
            )
        elif f.id == "system-site-packages":
            item = next((i for i in carry.items if i.kind == "system-site"), None)
        elif f.id == "orphan-package" and f.evidence:
            item = next((i for i in carry.items if str(f.evidence[0]).startswith(i.path + " ")), None)
        if item is None:
            continue
        if item.carried:
            f.dropped_by_rebuild, f.carried_by_rebuild = False, True
        else:
            f.title += f"; not carried: {item.why}"
            f.evidence.append(f"not carried into the new env: {item.why}")
    return [f for f in findings if not _keras_pth(f)]


def _keras_pth(finding: Finding) -> bool:
    """tfrebuild's own Keras 2 ``.pth`` (no RECORD names it): the plan's Keras mode decides it, not the user."""
    return (
        finding.id == "orphan-package"
        and bool(finding.evidence)
        and f"{os.sep}{LEGACY_KERAS_PTH} " in str(finding.evidence[0])
    )


def refuse_lost(env: Path, carry: Carry | None) -> None:
    """Before building: an import of a broken-metadata distribution that works in ``env`` would not work in the new
    env (uv cannot reinstall what has no name or version): one paragraph naming it, with the repair."""
    if carry is None or not carry.broken:
        return
    from rebuild.core.baseline import Baseline

    failing = Baseline(env, sorted(carry.broken)).failing()  # read-only, in the env as it is
    working = [n for n in sorted(carry.broken) if n not in failing]
    if not working:
        return
    folders = sorted({carry.broken[n] for n in working})
    python = Path(env) / "bin" / "python"
    repairs = []
    for folder in folders:
        name, version = distinfo.parse(Path(folder).name) or (Path(folder).name.split("-")[0], "")
        pin = f"{name}=={version}" if version else name
        repairs.append(
            f"`rm -rf {shlex.quote(folder)} && uv pip install --python {shlex.quote(str(python))} "
            f"--reinstall --no-deps {shlex.quote(pin)}`"
        )  # that project only: nothing else moves
    raise UserError(
        f"{', '.join(working)} import(s) in {env}, but from files whose metadata folder is broken "
        f"({', '.join(folders)}): uv cannot reinstall a distribution without a readable name and version, so the "
        "new environment would not have it. The upgrade stops before building; nothing was changed.",
        f"Repair it first: {'; '.join(repairs)} (the folder's name gives the project and version), then run the "
        "upgrade again. If nothing uses it, delete its files and that folder instead.",
        exit_code=1,
    )


def unsafe(path: Path, owner: int) -> str:
    """Why ``path`` (a file or a package folder) is not copied, or "" when it is: every entry must be a regular file
    (or a folder) of ``owner``, writable by no one else, and no link."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror}"
    why = _entry(path, st, owner)
    if why or not stat.S_ISDIR(st.st_mode):
        return why
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in dirs + files:
            full = Path(root) / name
            try:
                why = _entry(full, os.lstat(full), owner)
            except OSError as exc:
                why = f"{full} cannot be read: {exc.strerror}"
            if why:
                return why
    return ""


def _entry(path: Path, st: os.stat_result, owner: int) -> str:
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"{path} is {fs.kind(st.st_mode)}"
    if st.st_uid != owner:
        return f"{path} belongs to uid {st.st_uid}, not to the env's owner (uid {owner})"
    if st.st_mode & 0o022:
        return f"{path} is writable by others"
    return ""


def import_names(dist_info: Path) -> list[str]:
    """The top-level import names a distribution installed (top_level.txt, else its RECORD's first parts)."""
    names: set[str] = set()
    for listing in ("top_level.txt", "RECORD"):
        try:
            text = fs.read_document(dist_info / listing).decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            first = line.split(",", 1)[0].strip().split("/", 1)[0]
            if listing == "RECORD" and "/" not in line.split(",", 1)[0]:
                first = first[:-3] if first.endswith(".py") else ""  # a module file; other top files are not imports
            if first.isidentifier() and first not in NOT_IMPORTED and first != "__pycache__":
                names.add(first)
        if names:
            break
    site = dist_info.parent
    return sorted(
        n
        for n in names
        if (site / n / "__init__.py").is_file()
        or (site / f"{n}.py").is_file()
        or any(site.glob(f"{n}.*.so"))
        or (site / n).is_dir()
    )


def copy_into(env: Path, carry: Carry | None, owner_of: Path) -> list[str]:
    """Copy the carried ``.pth`` files and loose modules into ``env``'s site-packages; the paths copied."""
    if carry is None or not carry.copied:
        return []
    site = next(iter(env.glob("lib/python*/site-packages")), None)
    if site is None:
        raise UserError(f"{env} has no site-packages folder.", "The build is incomplete; see the log.")
    owner = os.lstat(owner_of).st_uid
    done = []
    for item in carry.copied:
        src = Path(item.path)
        if os.path.lexists(site / src.name):  # a distribution of the new env installs that name: its own wins
            continue
        why = unsafe(src, owner)  # checked again: the plan was made a while ago
        try:
            if not why:
                _copy(src, site / src.name, owner)
        except OSError as exc:
            why = f"{exc.filename or src}: {exc.strerror}"
        if why:
            raise UserError(
                f"{src} could not be carried into the new environment: {why}. Your environment was not changed.",
                "Fix what the message names (or move the file out of site-packages), then upgrade again.",
                exit_code=1,
            )
        done.append(item.path)
    return done


def _copy(src: Path, dst: Path, owner: int) -> None:
    if stat.S_ISDIR(os.lstat(src).st_mode):
        os.mkdir(dst, 0o755)
        for entry in sorted(os.listdir(src)):
            if entry != "__pycache__":
                _copy(src / entry, dst / entry, owner)
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(src, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            raise OSError(errno.EINVAL, "not a regular file of the env's owner", str(src))
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), st.st_mode & 0o755)
        try:
            while chunk := os.read(fd, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    finally:
        os.close(fd)


def explain(check: Check, failed: list[str], reasons: dict[str, str]) -> None:
    """A failed import check names, for each name the new env was to keep, why it may lack it."""
    lines = [
        f"import {name} worked in the current env and fails in the new one: {reasons[name]}"
        for name in failed
        if name in reasons
    ]
    if lines:
        check.output = "\n".join(lines) + (f"\n{check.output}" if check.output else "")
        check.name += (
            f"; imported in the current env, not in the new one: {', '.join(n for n in failed if n in reasons)}"
        )
