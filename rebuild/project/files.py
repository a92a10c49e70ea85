"""Each generation's project files, kept in the store: ``generations/<N>/project/<file>``.

The current generation says what the project's files (``pyproject.toml``, ``uv.lock`` ...) are
when the env is that generation. :func:`save` keeps copies, :func:`edited` compares the files on
disk with the current generation's copies (a hand edit since tfrebuild last wrote them),
:func:`sync` writes the current generation's copies into the project when the files on disk are
those of another generation (after a swap, after a rollback, and in recovery after a crash between
the swap and the write: one idempotent step), and leaves hand-edited files alone.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from rebuild.errors import UserError
from rebuild.util import fs

MANIFEST = "project.toml"


@dataclass(frozen=True)
class Kept:
    """The project files a generation keeps."""

    manager: str
    root: Path
    files: dict[str, bytes]  # name (relative to root) -> content

    def digest(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()


def folder(store, n: int) -> Path:
    return store.generation_dir(n) / "project"


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and "\x00" not in name


def save(store, n: int, manager: str, root: Path, files: dict[str, bytes]) -> Kept:
    """Keep ``files`` (name -> content) as generation ``n``'s project files."""
    where = store.make_dir(folder(store, n))
    for name, data in files.items():
        if not _safe_name(name):
            raise ValueError(f"not a project file name: {name!r}")
        fs.atomic_write(where / name, data, mode=0o644)
    manifest = {
        "manager": manager,
        "root": str(root),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    fs.atomic_write(where / MANIFEST, tomli_w.dumps(manifest), mode=0o644)
    return Kept(manager, root, dict(files))


def load(store, n: int) -> Kept | None:
    """Generation ``n``'s project files, or ``None`` when it keeps none (or they are damaged)."""
    where = folder(store, n)
    try:
        if os.path.islink(where) or not where.is_dir():
            return None
        manifest = fs.toml_document(fs.read_document(where / MANIFEST))
        files = {}
        for name, digest in dict(manifest.get("files", {})).items():
            if not _safe_name(name) or os.path.islink(where / name):
                return None
            data = fs.read_document(where / name)
            if hashlib.sha256(data).hexdigest() != digest:
                return None
            files[name] = data
        return Kept(str(manifest.get("manager", "")), Path(str(manifest.get("root", ""))), files)
    except (OSError, tomllib.TOMLDecodeError, ValueError, TypeError):
        return None


def on_disk(root: Path, names) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for name in names:
        try:
            out[name] = (root / name).read_bytes()
        except FileNotFoundError:
            out[name] = None
    return out


def diff(name: str, kept: bytes | None, now: bytes | None) -> str:
    a = (kept or b"").decode("utf-8", "replace").splitlines(keepends=True)
    b = (now or b"").decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"{name} (as tfrebuild wrote it)", f"{name} (now)", n=2))


def edited(store, root: Path) -> list[tuple[str, str]]:
    """``(file, unified diff)`` for each project file that differs from the current generation's copy."""
    kept = load(store, store.current_number)
    if kept is None:
        return []
    now = on_disk(root, kept.files)
    return [(name, diff(name, kept.files[name], now[name])) for name in kept.files if now[name] != kept.files[name]]


def refuse_edited(store, *, force: bool, doing: str) -> list[str]:
    """Refuse (unless ``force``) when the project files were changed by hand since the current generation
    was made; with ``force``, the changed files are saved in the state folder first. Returns notes."""
    kept = load(store, store.current_number)
    if kept is None or not _root_ok(store, kept.root):
        return []
    root = kept.root
    changes = edited(store, root)
    if not changes:
        return []
    names = ", ".join(name for name, _ in changes)
    if not force:
        raise UserError(
            f"{names} in {root} changed since tfrebuild last wrote them (generation {store.current_number}); "
            f"{doing} would overwrite those changes.",
            f"Look at the difference below. Pass --force to go on anyway (tfrebuild saves your version in its state "
            f"folder first); or keep your edit: {_OWN_TOOL.get(kept.manager, _OWN_TOOL['uv'])} makes the env follow "
            "it, and the next `tfrebuild upgrade` starts from it. Nothing was changed.",
            exit_code=1,
            details="\n".join(d for _, d in changes),
        )
    from rebuild.store.journal import new_op_id

    # each --force gets its own folder (a second one never overwrites the first backup); the files themselves
    # stay as they are until the swap writes over them (a refusal or failure before it leaves them untouched)
    backup = store.make_dir(store.state / "project-edits" / f"{new_op_id('gen' + str(store.current_number))}")
    for name, data in on_disk(root, [n for n, _ in changes]).items():
        if data is not None:
            fs.atomic_write(backup / name, data, mode=0o644)
    return [f"--force: your edited {names} was saved in {backup}; the new files are written over it at the swap"]


def summary(name: str, text: str) -> str:
    """One line for a file's unified diff: the changed lines of a small file, a count for a lock."""
    lines = [ln for ln in text.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    if name.endswith((".lock", ".txt")) or len(lines) > 4:
        return f"{name}: {len(lines)} line{'s' if len(lines) != 1 else ''} changed"
    removed = [ln[1:].strip() for ln in lines if ln.startswith("-")]
    added = [ln[1:].strip() for ln in lines if ln.startswith("+")]
    return f"{name}: " + "; ".join(
        filter(
            None,
            (" / ".join(removed) and f"was {' / '.join(removed)}", " / ".join(added) and f"now {' / '.join(added)}"),
        )
    )


def edits(store) -> tuple[Kept, list[tuple[str, str]]] | None:
    """The current generation's kept files and each one changed by hand since (``(name, diff)``), or None."""
    kept = load(store, store.current_number)
    if kept is None or not _root_ok(store, kept.root):
        return None
    changes = edited(store, kept.root)
    return (kept, changes) if changes else None


def edits_note(env) -> list[str]:
    """``plan``/``upgrade``: the project files differ from what tfrebuild last wrote. They are the starting point:
    the plan is made from them and the new generation's files keep them. Says which edits were found."""
    from rebuild.store.store import Store

    try:
        store = Store.open(Path(env))
        found = edits(store) if store is not None else None
    except (UserError, OSError):
        return []
    if store is None or found is None:
        return []
    _, changes = found
    return [
        f"your edits since generation {store.current_number} ({'; '.join(summary(n, d) for n, d in changes)}) "
        "are the starting point: this plan was made from the files as they are now, and the new generation's "
        "files keep the edits"
    ]


def carry_edits(store) -> list[str]:
    """``upgrade``, after the plan was accepted: hand edits are the current generation's files from now on.

    The edited files become the current generation's copies (so a ``rollback`` to it returns to the files as they
    were before this upgrade, edits included, and the write after the swap goes ahead); the copies tfrebuild had
    written are saved in ``project-edits/`` first. The files in the project are not touched here."""
    found = edits(store)
    if found is None:
        return []
    kept, changes = found
    from rebuild.store.journal import new_op_id

    backup = store.make_dir(store.state / "project-edits" / f"{new_op_id('gen' + str(store.current_number))}")
    for name, data in kept.files.items():
        fs.atomic_write(backup / name, data, mode=0o644)
    now = {n: d for n, d in on_disk(kept.root, kept.files).items() if d is not None}
    save(store, store.current_number, kept.manager, kept.root, now)
    names = ", ".join(n for n, _ in changes)
    return [
        f"your edited {names} became generation {store.current_number}'s files (the upgrade started from them; "
        f"tfrebuild's earlier copies are in {backup})"
    ]


PENDING = "project-pending"
#: What keeps a hand edit, by manager (the refusal's hint).
_OWN_TOOL = {
    "uv": "`uv lock && uv sync`",
    "poetry": "`poetry lock && poetry sync`",
    "requirements": "`uv pip compile` and `uv pip sync` (or pip-compile and pip-sync)",
}


def _root_ok(store, root: Path) -> bool:
    """A kept root is only ever the folder holding the env (or one of its parents): never elsewhere."""
    env = Path(store.env)
    return bool(str(root)) and root.is_absolute() and (env.parent == root or env.is_relative_to(root))


def begin(store) -> None:
    """Before a swap that changes project files: a marker that recovery finishes (:func:`finish`)."""
    fs.atomic_write(store.state / PENDING, str(store.current_number), mode=0o644)


def finish(store, *, force: bool = False) -> str | None:
    """After the swap (or in recovery after a crash): write the current generation's files, drop the marker
    (``force``: over hand edits too, which :func:`refuse_edited` saved)."""
    marker = store.state / PENDING
    if not os.path.lexists(marker):
        return None
    done = sync(store, force=force)
    os.unlink(marker)
    return done


def recover(store) -> str | None:
    """Recovery's part for projects (under the store's lock): finish the files a swap left pending, and remove
    the work folders beside the project whose tfrebuild was killed."""
    from rebuild.project import workdir

    done = finish(store)
    kept = load(store, store.current_number)
    root = kept.root if kept is not None and _root_ok(store, kept.root) else Path(store.env).parent
    workdir.sweep(root)
    return done


def _write_like(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with the mode and owner the file had (a root-run tfrebuild keeps the user's)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        fs.atomic_write(path, data)
        return
    fs.atomic_write(path, data, mode=st.st_mode & 0o7777)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


def sync(store, *, force: bool = False) -> str | None:
    """Write the current generation's project files into the project when the files there are another
    generation's copies (or missing, or ``force``); returns what was done, ``None`` when nothing was needed."""
    current = load(store, store.current_number)
    if current is None or not _root_ok(store, current.root):
        return None
    now = on_disk(current.root, current.files)
    known = [k for k in (load(store, g.number) for g in store.generations()) if k is not None]
    others = {name for k in known for name in k.files} - set(current.files)
    ours = [
        n
        for n, d in on_disk(current.root, sorted(others)).items()  # files another generation had, not this one
        if d is not None and any(k.files.get(n) == d for k in known)
    ]
    if all(now[name] == data for name, data in current.files.items()) and not ours:
        return None
    if not force and not all(
        now[name] is None or any(k.files.get(name) == now[name] for k in known) for name in current.files
    ):
        return (
            f"the project files in {current.root} were changed by hand; tfrebuild left them as they are "
            f"(generation {store.current_number}'s copies are in {folder(store, store.current_number)})"
        )
    for name, data in current.files.items():  # uv.lock last: a reader sees the new pyproject with either lock
        if now[name] != data:
            _write_like(current.root / name, data)
    for name in ours:  # a file this generation did not have (a uv.lock that the first upgrade created) goes
        os.unlink(current.root / name)
    return f"{', '.join(current.files)} in {current.root} are generation {store.current_number}'s"
