"""Read-only generation commands: ``history`` (each generation with its TensorFlow, Python, disk use, model checks and
project files), ``diff`` (what moves between two generations, or a generation and the env) and ``status`` (the
current generation, the project's state and any drift of the env from its record). Split from
:mod:`rebuild.commands.generations` (same code), whose store opening and recovery they use. None of them uses the
network or uv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rebuild.commands.generations import _and_opened, _open_recovered, complete_profile, env_path, open_store
from rebuild.core import changes as planning  # Change, diff: their one home (rename at the next edit)
from rebuild.core import models
from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.project import files as project_files
from rebuild.store import recovery
from rebuild.store.disk import exclusive_usage
from rebuild.store.store import Store
from rebuild.util import distinfo, proc


# --- history --------------------------------------------------------------------


@dataclass
class HistoryRow:
    number: int
    current: bool
    previous: bool
    created: str
    tensorflow: str
    python: str
    disk_alone: int
    command: str
    present: bool
    project: str = (
        ""  # the project files this generation keeps ("pyproject.toml: tensorflow-cpu==2.18.0; uv.lock sha256 1a2b…")
    )
    models: str = ""  # model-checked before its swap: "3 models: 3 match" ("" when not)


def project_summary(store: Store, n: int) -> str:
    """What generation ``n``'s kept project files say: the TensorFlow requirement and each file's digest."""
    kept = project_files.load(store, n)
    if kept is None:
        return ""
    parts = []
    for name in kept.files:
        if name == "pyproject.toml":
            import tomllib

            from rebuild.project.detect import poetry_tf_entries, tf_requirements

            try:
                data = tomllib.loads(kept.files[name].decode("utf-8"))
                reqs = tf_requirements(data) if kept.manager != "poetry" else [t for _, _, t in poetry_tf_entries(data)]
            except (UnicodeDecodeError, tomllib.TOMLDecodeError):
                reqs = []
            parts.append(f"{name}: {', '.join(reqs) or '?'}")
        elif name.endswith(".in"):
            from rebuild.knowledge.tf import TF_DISTRIBUTIONS
            from rebuild.project.requirements import tf_lines

            reqs = [r for _, r in tf_lines(kept.files[name].decode("utf-8", "replace"), TF_DISTRIBUTIONS)]
            parts.append(f"{name}: {', '.join(reqs) or '?'}")
        else:
            parts.append(f"{name} sha256 {kept.digest(name)[:12]}")
    return "; ".join(parts)


@dataclass
class History:
    env: str
    state_dir: str
    rows: list[HistoryRow]
    disk_total: int
    recovered: str | None = None
    unreadable: dict[int, str] = field(default_factory=dict)  # generations whose record cannot be read: why


def history(env=None) -> History:
    store, at_open = open_store(env)
    recovered = _and_opened(at_open, recovery.recover_if_idle(store, finished=complete_profile))
    store.reload()
    gens = store.generations()
    trees = {g.number: g.path(store) for g in gens}
    present = {n: p.exists() for n, p in trees.items()}
    alone, total = exclusive_usage([trees[n] for n in sorted(trees) if present[n]])
    rows = [
        HistoryRow(
            g.number,
            g.number == store.current_number,
            g.number == store.previous_number,
            g.created,
            g.tensorflow,
            g.python,
            alone.get(trees[g.number], 0),
            proc.redact_line(g.command),
            present[g.number],
            project_summary(store, g.number),
            models.summary(models.recorded(store.generation_dir(g.number))),
        )
        for g in gens
    ]
    return History(str(store.env), str(store.state), rows, total, recovered, store.unreadable())


# --- diff -----------------------------------------------------------------------


@dataclass
class Diff:
    a: str
    b: str
    changes: list[planning.Change]


def tree_pins(tree: Path) -> dict[str, str] | None:
    """What a generation's tree holds now, read from its site-packages' ``*.dist-info`` folders (an in-place
    ``pip install`` after the generation was recorded shows here); None when the tree is gone."""
    return distinfo.installed(tree) if distinfo.site_dirs(tree) else None


def _load_side(spec: str, env) -> tuple[str, prof.Profile, dict[str, str]]:
    if spec.isdigit():
        store, _ = open_store(env)
        n = int(spec)
        store.generation(n)  # raises a UserError for an unknown generation
        path = store.generation_dir(n) / "profile.toml"
        profile = prof.load(path)
        # The recorded profile goes stale when the tree changes in place: re-read the tree itself.
        tree = store.env if n == store.current_number else store.generation_dir(n) / "env"
        live = tree_pins(tree)
        if live is None:
            return f"generation {n}", profile, profile.pins()
        outside = {p.name: p.version for p in profile.packages if p.location != "env"}
        return f"generation {n}", profile, {**outside, **live}
    profile = prof.load(spec)
    return spec, profile, profile.pins()


def diff(a: str, b: str, env=None) -> Diff:
    label_a, pa, pins_a = _load_side(a, env)
    label_b, pb, pins_b = _load_side(b, env)
    req = set(pa.requested) | set(pb.requested)
    changes = [planning.Change(n, old, new, kind, n in req) for n, old, new, kind in planning.diff(pins_a, pins_b)]
    changes.sort(key=lambda c: (not c.requested, c.name))
    return Diff(label_a, label_b, changes)


# --- status ---------------------------------------------------------------------


@dataclass
class Status:
    env: str
    managed: bool
    state_dir: str
    current: int | None
    previous: int | None
    tensorflow: str
    interrupted: dict | None
    leftover_staging: list[str]
    lock_holder: dict | None
    recovered: str | None = None
    running: bool = False  # the journaled operation belongs to the live lock holder (not interrupted)
    project: str = ""  # the tool that owns the env, and whether its files are the current generation's
    drift: str = ""  # the env was changed in place since its generation was made (e.g. by `uv sync`)


def _project_status(store: Store | None, env: Path) -> str:
    from rebuild.project.detect import detect

    found = detect(env)
    if found is None:
        return ""
    text = found.label + ("" if found.drivable else f"; not driven by tfrebuild: {found.reverts}")
    if store is not None and project_files.load(store, store.current_number) is not None:
        changed = project_files.edited(store, found.root)
        text += (
            f"; changed since generation {store.current_number}: {', '.join(n for n, _ in changed)}"
            if changed
            else f"; files are generation {store.current_number}'s"
        )
    return text


def _drift(store: Store) -> str:
    """The env's TensorFlow now against the one its generation recorded (a project's tool may have re-synced it);
    and whether the tree at the path is the recorded one at all (recreated, or packages changed in place)."""
    from rebuild.commands import outside

    try:
        store.refuse_tampered_current()  # the tree is another generation of record: the state file was changed
    except UserError as exc:
        return f"{exc.message.replace(' Nothing was changed.', '')} {exc.hint}"
    found = outside.detect(store)
    name, _, version = store.current.tensorflow.partition(" ")
    pins = tree_pins(store.env) or {}
    from packaging.utils import canonicalize_name

    now = pins.get(canonicalize_name(name)) if name else None
    text = ""
    if version and now != version:
        shown = f"{name} {now}" if now else f"no {name}"
        text = (
            f"the env holds {shown}, not generation {store.current_number}'s {store.current.tensorflow}: it was "
            "changed in place since (a project's `uv sync`/`poetry install`, or pip)"
        )
    if found is not None:
        return found.sentence(store.env) + (f"; {text}" if text and found.kind != "recreated" else "")
    return text


def status(env=None) -> Status:
    path = env_path(env)
    store, at_open = _open_recovered(path)
    if store is None:
        return Status(
            str(path),
            False,
            "",
            None,
            None,
            "",
            None,
            [],
            None,
            at_open,
            project=_project_status(None, path) if os.path.isdir(path) else "",
        )
    holder = store.lock_holder()
    recovered = _and_opened(
        at_open, recovery.recover_if_idle(store, finished=complete_profile) if holder is None else None
    )
    store.reload()
    journal = store.journal()
    return Status(
        str(store.env),
        True,
        str(store.state),
        store.current_number,
        store.previous_number,
        store.current.tensorflow,
        journal,
        [str(p) for p in store.leftover_staging()],
        holder,
        recovered,
        running=journal is not None and store.lock_holder() is not None,
        project=_project_status(store, store.env),
        drift=_drift(store),
    )
