"""All output: human text, ``--json`` documents, errors and live progress.

Core functions return dataclasses and report progress through a ``progress`` object
(:mod:`rebuild.util.progress`); only this module writes to the terminal, through a
:class:`Terminal` the CLI makes once and hands to every renderer. Results go to stdout;
progress and errors to stderr. ``NO_COLOR`` is honoured, and so is a non-terminal
stdout/stderr (plain lines, no colour, no live status).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from rebuild.cli.terminal import Progress, Terminal  # noqa: F401 - their home is cli/terminal.py (app uses render.Progress)
from rebuild.errors import UserError
from rebuild.util import proc
from rebuild.util.versions import minor


def jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # a field marked internal (metadata {"internal": True}) is for decisions in code, never written
        return {
            f.name: jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(document: dict) -> None:
    # Credentials in any URL of any command's document are masked here, whatever produced them.
    sys.stdout.write(proc.redact_line(json.dumps(jsonable(document), indent=2, sort_keys=False)) + "\n")
    sys.stdout.flush()


def error(term: Terminal, exc: UserError, as_json: bool) -> None:
    err = term.err
    # uv's words quoted in an error may name an index URL with its credentials.
    exc.message, exc.hint, exc.details = (proc.redact_line(t or "") for t in (exc.message, exc.hint, exc.details))
    attempted = exc.plan  # the plan that failed (upgrade), for the user to see
    tried = exc.tries or []  # the target search's tries (upgrade --to latest)
    if as_json:
        emit_json(
            {
                "ok": False,
                **exc.to_dict(),
                **({"plan": _plan_dict(attempted)} if attempted is not None else {}),
                **({"tries": jsonable(tried)} if tried else {}),
                **({"models": jsonable(exc.models)} if exc.models else {}),
            }
        )
    elif attempted is not None:
        plan_text(term, attempted)
    if tried and not as_json:
        tries(term, tried, minimum=1)
    err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
    if exc.details:
        err.print(exc.details, markup=False)
    if exc.hint:
        err.print(f"[bold]hint:[/] {escape(exc.hint)}", markup=True)


def swapped(method: str) -> str:
    """How the swap ran, as the user should read it (the store reports the method that really ran)."""
    if method == "renameat2":
        return "Swapped in atomically (renameat2 exchange)"
    if method == "rename":
        return "Swapped in by three renames (no atomic exchange on this filesystem)"
    return "Swapped in"


# --- per-command renderers ------------------------------------------------------


def snapshot(term: Terminal, result, as_json: bool) -> None:
    from rebuild.env import profile as prof

    p = result.profile
    if as_json:
        emit_json({"ok": True, "written_to": result.written_to, "profile": prof.as_json_dict(p)})
        return
    tf = f"{p.tensorflow.distribution} {p.tensorflow.version}" if p.tensorflow.distribution else "no TensorFlow"
    term.out.print(
        f"Snapshot of {p.source} ({p.env_kind}, Python {p.interpreter.version}, "
        f"{p.platform.system} {p.platform.machine})",
        markup=False,
    )
    term.out.print(
        f"  {len(p.packages)} distributions, {len(p.requested)} requested: {', '.join(p.requested) or '-'}",
        markup=False,
    )
    term.out.print(
        f"  TensorFlow: {tf}" + (f", keras {p.tensorflow.keras_version}" if p.tensorflow.keras_version else ""),
        markup=False,
    )
    if p.gpu.nvidia_smi:
        term.out.print(
            f"  GPU: {', '.join(p.gpu.gpus) or 'none listed'} (driver {p.gpu.driver_version or '?'}, "
            f"CUDA {p.gpu.cuda_version or '?'})",
            markup=False,
        )
    for w in p.warnings:
        term.out.print(
            f"  [yellow]warning[/] {escape(w.kind)}: {escape(w.message)}" + (f" ({escape(w.path)})" if w.path else "")
        )
    term.out.print(f"Wrote {result.written_to} in {result.seconds:.2f}s", markup=False)


def table(term: Terminal, title: str, columns: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*[str(c) for c in row])
    term.out.print(t)


def _grid(term: Terminal, rows: list[list[str]], right: tuple[int, ...] = ()) -> None:
    """Aligned columns without borders, indented under the line above; no line ends in spaces (a rich grid pads
    every cell of the last column to its widest, which a pipe or a log keeps)."""
    if not rows:
        return
    from rich.cells import cell_len

    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(cell_len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        padded = []
        for i, cell in enumerate(row):
            gap = " " * (widths[i] - cell_len(cell))
            padded.append(gap + cell if i in right else cell + gap)
        term.out.print("  " + " ".join(padded).rstrip(), markup=False, highlight=False, soft_wrap=True)


def _changes(term: Terminal, changes) -> None:
    """One row per change: mark (``*`` = requested), name, versions, reason."""
    arrows = {"upgrade": "↑", "downgrade": "↓", "add": "+", "remove": "-"}
    rows = []
    for c in changes:
        versions = f"{c.old} → {c.new}" if c.old and c.new else (c.new or c.old or "")
        name = f"{c.replaces} → {c.name}" if getattr(c, "replaces", "") else c.name
        rows.append(
            [arrows[c.kind] + ("*" if c.requested else " "), name, versions, f"({c.reason})" if c.reason else ""]
        )
    _grid(term, rows)


def plan_text(term: Terminal, p) -> None:
    term.out.print(f"Plan for {p.env}", markup=False)
    old_tf = (
        f"{p.tf_old_distribution} {p.tf_old} → {p.tf_distribution}"
        if p.tf_switch
        else f"{p.tf_distribution} {p.tf_old} →"
    )
    term.out.print(f"  TensorFlow: {old_tf} {p.tf_new} (--to {p.target}, strategy {p.strategy})", markup=False)
    if getattr(p, "requested_downgrades", None):
        term.out.print(f"  Moves backwards (requested by you): {', '.join(p.requested_downgrades)}", markup=False)
    if p.tf_switch:
        term.out.print(f"  Variant switch {p.tf_old_distribution} → {p.tf_distribution}: {p.tf_switch}", markup=False)
    if p.python_old != p.python_new:
        term.out.print(f"  Python: {p.python_old} → {p.python_new} ({p.python_path})", markup=False)
    else:
        term.out.print(f"  Python: {p.python_new} ({p.python_path})", markup=False)
    newer = p.newer_release
    if newer is not None:
        term.out.print(f"  Newer TensorFlow for another Python: {p.tf_distribution} {newer.text}", markup=False)
    project = getattr(p, "project", None)
    if project is not None:
        term.out.print(f"  Project: {project_line(p)}", markup=False)
    for note in p.notes:
        term.out.print(f"  note: {note}", markup=False)
    for f in p.preflight:
        # "fixed" only where something is broken (an error or warning): an info finding says what the upgrade does
        label = (
            "not carried into the new env"
            if getattr(f, "dropped_by_rebuild", False)
            else "carried into the new env"
            if getattr(f, "carried_by_rebuild", False)
            else "fixed by this upgrade"
            if f.fixed_by_rebuild and f.severity != "info"
            else (
                "error, blocks the upgrade"
                if f.affects_new_env and f.severity == "error"
                else "also affects the new env"
                if f.affects_new_env
                else f.severity
            )
        )
        term.out.print(f"  pre-flight ({label}) {f.id}: {f.title}", markup=False)
        if f.fix and (not f.fixed_by_rebuild or getattr(f, "dropped_by_rebuild", False)):
            term.out.print(f"      fix: {f.fix}", markup=False)
    if p.changes:
        term.out.print(f"  Changes ({len(p.changes)}; * = requested by you; {p.unchanged} unchanged):", markup=False)
        _changes(term, p.changes)
    else:
        term.out.print("  No package changes.", markup=False)


def project_line(p) -> str:
    """The plan's one line about the project that owns the env."""
    project = p.project
    if project.drivable and project.manager == "requirements":
        return (
            f"{project.label}: `{project.requirement}` → `{p.project_requirement}` in {project.files[0]} (that "
            f"line only), {project.how}; the env and both files are swapped together and `tfrebuild rollback` "
            "restores all three"
        )
    if project.drivable:
        lock, tool = {"uv": ("uv.lock", "uv"), "poetry": ("poetry.lock", "Poetry")}.get(
            project.manager, (", ".join(project.files[1:]) or "the lock", project.manager)
        )
        return (
            f"{project.label}: `{project.requirement}` → `{p.project_requirement}` in pyproject.toml, {lock} "
            f"re-locked by {tool}; the env and both files are swapped together and `tfrebuild rollback` "
            "restores all three"
        )
    return f"{project.label}: {project.reverts}. To upgrade: {project.fix}. `tfrebuild upgrade` refuses unless --force"


def plan(term: Terminal, p, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, "plan": _plan_dict(p)})
        return
    plan_text(term, p)
    if getattr(p, "blocked_above", None):
        blocked(term, p)
        return
    term.out.print(
        f"Resolved in {p.seconds:.1f}s. Nothing was changed; run `tfrebuild upgrade` to apply.", markup=False
    )


def blocked(term: Terminal, p) -> None:
    """``--to latest`` found no release above the installed one that passes: nothing to do, and why (exit 0)."""
    term.out.print(
        f"Nothing to do: {p.tf_distribution} {p.tf_old} is the newest TensorFlow that passes its checks "
        "with everything this env holds. Above it:",
        markup=False,
    )
    for b in p.blocked_above:
        term.out.print(f"  {b.target}: blocked by {b.blocker}: {b.why}", markup=False)
        term.out.print(f"      to move past it: {b.command}", markup=False)


def _plan_dict(p) -> dict:
    keep = (
        "env",
        "tf_distribution",
        "tf_old",
        "tf_new",
        "target",
        "downgrade",
        "python_old",
        "python_new",
        "python_path",
        "strategy",
        "changes",
        "unchanged",
        "capped",
        "notes",
        "keras_legacy",
        "keras2_dependents",
        "preflight",
        "gpu_route",
        "gpu_required",
        "index",
        "seconds",
        "tf_old_distribution",
        "tf_switch",
        "companions",
        "requested_downgrades",
        "keras_needed_by",
        "landing_note",
        "blocked_above",
        "resolution_reused",
        "carry",
    )
    out = {k: jsonable(getattr(p, k)) for k in keep}
    project = getattr(p, "project", None)
    out["project"] = (
        None
        if project is None
        else {
            "manager": project.manager,
            "root": str(project.root),
            "files": list(project.files),
            "drivable": project.drivable,
            "requirement": project.requirement,
            "new_requirement": p.project_requirement,
            "reverts": project.reverts,
            "fix": project.fix,
            "text": project_line(p),
        }
    )
    newer = p.newer_release
    out["newer_release"] = None if newer is None else {**jsonable(newer), "text": newer.text}
    return out


def confirm_plan(term: Terminal, p) -> bool:
    plan_text(term, p)
    import typer

    return typer.confirm("Build this environment and swap it in?", default=False, err=True)


def _checks(term: Terminal, checks) -> None:
    _grid(term, [["ok" if c.ok else "FAIL", c.name, f"{c.seconds:.2f}s"] for c in checks], right=(2,))


def _num(value) -> str:
    return "-" if value is None else f"{value:.2g}"


def models_table(term: Terminal, rows) -> None:
    """One row per model of the model-parity gate (rebuild.core.models.ModelRow)."""
    if not rows:
        return
    out = []
    for m in rows:
        ways = "; ".join(f"{a.way}: {'passed' if a.ok else 'failed'}" for a in m.tried)
        verdict = m.verdict + (f" ({ways})" if ways else "") + (f" ({m.reason})" if m.reason else "")
        load = "-" if m.load_seconds is None else f"{m.load_seconds:.2f}s"
        out.append([m.path, m.loader, load, str(m.outputs_compared), _num(m.max_abs), _num(m.max_rel), verdict])
    table(
        term,
        "Models (the current env's answers against the new env's)",
        ["model", "loader", "load", "outputs", "max abs diff", "max rel diff", "verdict"],
        out,
    )


def tries(term: Terminal, items, minimum: int = 2) -> None:
    """The target search's tries: target, what changed, why it failed (or that it passed)."""
    if len(items or []) < minimum:
        return
    term.out.print(f"Targets tried ({len(items)}, newest first):", markup=False)
    _grid(
        term,
        [
            [
                str(i),
                t.target,
                "passed" if t.passed else ("failed" if t.built else "not built"),
                (f"[{t.change}] " if t.change else "") + ("" if t.passed else t.why),
            ]
            for i, t in enumerate(items, 1)
        ],
    )


def upgrade(term: Terminal, r, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "ok": True,
                "changed": r.changed,
                "plan": _plan_dict(r.plan),
                "generation": r.generation,
                "previous": r.previous,
                "state_dir": r.state_dir,
                "log": r.log,
                "build_seconds": r.build_seconds,
                "checks": jsonable(r.checks),
                "after_swap": jsonable(r.after_swap),
                "swap_ms": r.swap_ms,
                "notes": r.notes,
                "recovered": r.recovered,
                "seconds": r.seconds,
                "reused": getattr(r, "reused", None),
                "tries": jsonable(getattr(r, "tries", [])),
                "started": jsonable(getattr(r, "started", None)),
                "adopted": getattr(r, "adopted", None),
                "models": jsonable(r.models),
                "blocked_above": jsonable(getattr(r.plan, "blocked_above", [])),
                "stages": getattr(r, "stages", {}),
                "overlap": getattr(r, "overlap", {}),
            }
        )
        return
    tries(term, getattr(r, "tries", []))
    if r.recovered:
        term.out.print(f"Recovered an interrupted operation first: {r.recovered}", markup=False)
    _started(term, getattr(r, "started", None))
    if getattr(r, "adopted", None):
        term.out.print(r.adopted[0].upper() + r.adopted[1:] + ".", markup=False)
    if not r.changed:
        plan_text(term, r.plan)
        if getattr(r.plan, "blocked_above", None):
            blocked(term, r.plan)
            return
        term.out.print("Nothing to do: the environment already matches the target.", markup=False)
        return
    plan_text(term, r.plan)
    if getattr(r, "reused", None) is not None:
        term.out.print(f"{swapped(r.swap_method)} in {r.swap_ms:.1f} ms; checks at {r.plan.env}:", markup=False)
        _checks(term, r.after_swap)
        term.out.print(
            f"Generation {r.reused} already holds this set: switched to it ({r.plan.tf_distribution} "
            f"{r.plan.tf_new}), nothing was built, in {r.seconds:.1f}s. Generation {r.previous} is kept: "
            "`tfrebuild rollback` brings it back.",
            markup=False,
        )
        return
    term.out.print(f"Built in {r.build_seconds:.1f}s. Checks in the new env:", markup=False)
    _checks(term, r.checks)
    models_table(term, r.models)
    term.out.print(f"{swapped(r.swap_method)} in {r.swap_ms:.1f} ms; checks at {r.plan.env}:", markup=False)
    _checks(term, r.after_swap)
    term.out.print(
        f"Upgraded {r.plan.env} to generation {r.generation} ({r.plan.tf_distribution} {r.plan.tf_new}) "
        f"in {r.seconds:.1f}s. Generation {r.previous} is kept: `tfrebuild rollback` brings it back.",
        markup=False,
    )
    if getattr(r, "started", None):
        term.out.print(
            "This was the bundled example env. To upgrade your own TensorFlow env: activate it (or run "
            "from the folder holding its .venv), or pass --env PATH: `tfrebuild upgrade --env PATH --yes`.",
            markup=False,
        )


def _started(term: Terminal, started) -> None:
    """An upgrade that began by building the bundled example env (no env was given or found)."""
    if started:
        term.out.print(
            f"No TensorFlow env was given or found (no --env, no $VIRTUAL_ENV, no ./.venv): created "
            f"{started.env} from the bundled profile {Path(started.profile).name} ({started.tensorflow}, "
            f"SciPy, pandas: an env pip's in-place upgrade breaks) as generation 1 in "
            f"{started.seconds:.1f}s, then upgraded it.",
            markup=False,
        )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _recovered(term: Terminal, text) -> None:
    if text:
        term.err.print(f"Recovered an interrupted operation first: {text}", markup=False)


def _json_or_recovered(term: Terminal, result, as_json: bool) -> bool:
    """``result`` as JSON (True: nothing more to show), else the recovery its command did first, if any."""
    if as_json:
        emit_json({"ok": True, **jsonable(result)})
        return True
    _recovered(term, result.recovered)
    return False


def rollback(term: Terminal, r, as_json: bool) -> None:
    if _json_or_recovered(term, r, as_json):
        return
    for u in r.forced_users:
        term.err.print(f"warning: pid {u.pid} ({u.why}) was using the env: {u.command[:100]}", markup=False)
    term.out.print(
        f"Rolled {r.env} back from generation {r.from_generation} to {r.to_generation} "
        f"({r.tensorflow}, Python {r.python}): {swapped(r.swap_method).lower()} in {r.swap_ms:.1f} ms.",
        markup=False,
    )
    _checks(term, r.checks)
    if r.project:
        term.out.print(f"Project files: {r.project}.", markup=False)
    for note in r.notes:
        term.out.print(f"note: {note}", markup=False)
    term.out.print(f"Generation {r.from_generation} is kept: `tfrebuild rollback` again returns to it.", markup=False)


def history(term: Terminal, h, as_json: bool) -> None:
    if _json_or_recovered(term, h, as_json):
        return
    rows = []
    for r in h.rows:
        mark = "*" if r.current else ("<" if r.previous else "")
        rows.append(
            [
                f"{r.number}{mark}",
                r.created.replace("T", " ").rstrip("Z"),
                r.tensorflow,
                r.python,
                _size(r.disk_alone) if r.present else "(missing)",
                r.command,
            ]
        )
    table(
        term,
        f"Generations of {h.env}  (* current, < previous: what `rollback` restores)",
        ["gen", "created (UTC)", "TensorFlow", "Python", "disk alone", "made by"],
        rows,
    )
    checked = [(r.number, r.models) for r in h.rows if getattr(r, "models", "")]
    if checked:
        term.out.print("Model-checked before the swap (the generation's models.json):", markup=False)
        _grid(term, [[str(n), text] for n, text in checked])
    kept = [(r.number, r.project) for r in h.rows if r.project]
    if kept:
        term.out.print("Project files kept with each generation (restored with it by `rollback`):", markup=False)
        _grid(term, [[str(n), text] for n, text in kept])
    term.out.print(
        f"All generations together use {_size(h.disk_total)} (files shared by hard links counted once).", markup=False
    )
    _unreadable(term, h.unreadable)


def _unreadable(term: Terminal, found: dict) -> None:
    """Generations that are there but whose record cannot be read (never shown as missing, never left out)."""
    for n, why in sorted((found or {}).items()):
        term.out.print(f"Generation {n} cannot be read (left as it is): {why}", markup=False)


def diff(term: Terminal, d, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **jsonable(d)})
        return
    term.out.print(f"{d.a} → {d.b}: {len(d.changes)} change(s)", markup=False)
    _changes(term, d.changes)


def gc(term: Terminal, g, as_json: bool) -> None:
    if _json_or_recovered(term, g, as_json):
        return
    if not g.deleted:
        term.out.print(f"Nothing to delete: {len(g.kept)} generation(s) of {g.env}, keeping {g.keep}.", markup=False)
    else:
        verb = "Would delete" if g.dry_run else "Deleted"
        term.out.print(
            f"{verb} generation(s) {', '.join(map(str, g.deleted))} of {g.env}; "
            f"{'would free' if g.dry_run else 'freed'} {_size(g.freed)}. "
            f"Kept: {', '.join(map(str, g.kept))}.",
            markup=False,
        )
    _unreadable(term, g.unreadable)
    pyc = g.pyc_cache
    if pyc is not None and pyc.files:
        verb = "would remove" if g.dry_run else "removed"
        term.out.print(
            f"pyc cache {pyc.cache}: {verb} {pyc.files} file{'' if pyc.files == 1 else 's'} no env "
            f"{'would use' if g.dry_run else 'uses'} any more ({_size(pyc.bytes)}).",
            markup=False,
        )


def status(term: Terminal, s, as_json: bool) -> None:
    if _json_or_recovered(term, s, as_json):
        return
    if not s.managed:
        term.out.print(f"{s.env} is not managed by tfrebuild (no generations yet).", markup=False)
        if getattr(s, "project", ""):
            term.out.print(f"  project: {s.project}", markup=False)
        return
    term.out.print(f"{s.env}: generation {s.current} ({s.tensorflow}); previous: {s.previous or '-'}", markup=False)
    if getattr(s, "drift", ""):
        term.out.print(f"  warning: {s.drift}", markup=False)
    if getattr(s, "project", ""):
        term.out.print(f"  project: {s.project}", markup=False)
    term.out.print(f"  state folder: {s.state_dir}", markup=False)
    if s.interrupted and getattr(s, "running", False):  # the live lock holder's own operation
        term.out.print(
            f"  running operation: {s.interrupted.get('op')} ({s.interrupted.get('step')}), "
            f"pid {(s.lock_holder or {}).get('pid')}",
            markup=False,
        )
    else:
        term.out.print(
            f"  interrupted operation: {s.interrupted.get('op') + ' (' + str(s.interrupted.get('step')) + ')' if s.interrupted else 'none'}",
            markup=False,
        )
    term.out.print(f"  leftover staging folders: {', '.join(s.leftover_staging) or 'none'}", markup=False)
    holder = s.lock_holder
    term.out.print(
        f"  lock: {'held by pid ' + str(holder.get('pid')) + ': ' + str(holder.get('command')) if holder else 'free'}",
        markup=False,
    )


def releases(term: Terminal, t, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **jsonable(t)})
        return
    latest_minor = minor(t.latest)
    rows = []
    for r in t.rows:
        marks = []
        if r.minor == t.installed_minor:
            marks.append("installed")
        if r.minor == latest_minor:
            marks.append("latest")
        rows.append(
            [
                r.minor + (" (" + ", ".join(marks) + ")" if marks else ""),
                ", ".join(r.python),
                r.numpy,
                f"{r.keras_major} ({r.keras})",
                f"{r.cuda} / {r.cudnn}",
                r.gpu_route,
                "; ".join(r.notes),
            ]
        )
    table(
        term,
        "TensorFlow releases (Linux x86_64)",
        ["TF", "Python", "NumPy", "Keras", "CUDA / cuDNN", "GPU route", "notes"],
        rows,
    )
    if t.installed:
        term.out.print(f"Installed: {t.installed}.", markup=False)
    term.out.print(f"Newest release: {t.latest} (from the {t.latest_source}).", markup=False)


def _finding_lines(term: Terminal, f, indent: str = "  ") -> None:
    term.out.print(f"{indent}{f.id}: {f.title}", markup=False)
    for line in f.evidence:
        term.out.print(f"{indent}    {line}", markup=False)
    if f.fix:
        term.out.print(f"{indent}  fix: {f.fix}", markup=False)


def doctor(term: Terminal, r, as_json: bool) -> None:
    counts = {s: r.count(s) for s in ("error", "warning", "info")}
    if as_json:
        emit_json(
            {
                "ok": r.errors == 0,
                "env": r.env,
                "python": r.python,
                "python_version": r.python_version,
                "env_kind": r.env_kind,
                "tensorflow": {"distribution": r.tf_distribution, "version": r.tf_version},
                "target": r.target,
                "target_version": r.target_version,
                "counts": counts,
                "findings": jsonable(r.findings),
                "skipped": r.skipped,
                "seconds": r.seconds,
            }
        )
        return
    tf = f"{r.tf_distribution} {r.tf_version}" if r.tf_distribution else "no TensorFlow"
    target = f"; target {r.tf_distribution} {r.target_version} (--to {r.target})" if r.target_version else ""
    term.out.print(f"Doctor for {r.env} ({r.env_kind}, Python {r.python_version}, {tf}{target})", markup=False)
    styles = {"error": ("errors", "bold red"), "warning": ("warnings", "yellow"), "info": ("info", "cyan")}
    for severity, (label, style) in styles.items():
        group = [f for f in r.findings if f.severity == severity]
        if not group:
            continue
        term.out.print(f"[{style}]{label} ({len(group)})[/]", markup=True)
        for f in group:
            _finding_lines(term, f)
    for note in r.skipped:
        term.out.print(f"note: {note}", markup=False)
    if not r.findings:
        term.out.print("No problems found.", markup=False)
    term.out.print(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info "
        f"in {r.seconds:.1f}s. Nothing was changed.",
        markup=False,
    )


def _apply_preview(term: Terminal, r) -> None:
    where = f"a new environment at {r.env}" if r.new_env else f"a new generation of {r.env}"
    term.out.print(f"Apply {r.profile} → {where}", markup=False)
    tf = f", {r.tensorflow}" if r.tensorflow else ""
    term.out.print(f"  Python {r.python} ({r.python_path}); {r.packages} packages{tf}", markup=False)
    term.out.print(f"  lock: {r.lock_source}", markup=False)
    term.out.print(f"  hashes: {r.hashes}", markup=False)
    p = r.portability
    if p is not None and p.differences:
        term.out.print(
            f"  portability: the profile is from {p.profile}; this is {p.here} ({'; '.join(p.differences)})",
            markup=False,
        )
    for url in r.index_urls:
        term.out.print(f"  {url}", markup=False)
    if r.smoke_commands:
        state = "will run" if r.commands_run else "NOT run: foreign profile (--allow-commands runs them)"
        term.out.print(f"  smoke commands from the profile ({state}):", markup=False)
        for command in r.smoke_commands:
            term.out.print(f"    $ {command}", markup=False)
    if r.changes:
        term.out.print(
            f"  Re-resolved for this machine ({len(r.changes)} change(s) from the profile's lock):", markup=False
        )
        _changes(term, r.changes)
    if r.env_changes:
        term.out.print(f"  Changes to the environment ({len(r.env_changes)}):", markup=False)
        _changes(term, r.env_changes)
    for note in r.notes:
        term.out.print(f"  note: {note}", markup=False)


def confirm_apply(term: Terminal, r) -> bool:
    _apply_preview(term, r)
    import typer

    return typer.confirm("Build this environment?", default=False, err=True)


def apply(term: Terminal, r, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **jsonable(r)})
        return
    if r.recovered:
        term.out.print(f"Recovered an interrupted operation first: {r.recovered}", markup=False)
    _apply_preview(term, r)
    if not r.changed:
        term.out.print("Nothing to do: the environment already holds exactly this set.", markup=False)
        return
    term.out.print(f"Built in {r.build_seconds:.1f}s. Checks in the new env:", markup=False)
    _checks(term, r.checks)
    models_table(term, r.models)
    verb = "Moved into place" if r.new_env else swapped(r.swap_method)
    term.out.print(f"{verb} in {r.swap_ms:.1f} ms; checks at {r.env}:", markup=False)
    _checks(term, r.after_swap)
    if r.new_env:
        term.out.print(f"Created {r.env} (generation 1) in {r.seconds:.1f}s.", markup=False)
    else:
        term.out.print(
            f"Applied to {r.env} as generation {r.generation} in {r.seconds:.1f}s. Generation {r.previous} "
            "is kept: `tfrebuild rollback` brings it back.",
            markup=False,
        )


def bundle(term: Terminal, r, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **jsonable(r), "downloaded": r.downloaded, "seconds_per_mib": r.seconds_per_mib})
        return
    rows = [
        [f.package, f.version, f.filename, _size(f.size), f.how + (" (hash recorded)" if f.hash_recorded else "")]
        for f in r.files
    ]
    table(term, f"Bundle {r.output}", ["package", "version", "file", "size", "how"], rows)
    for note in r.notes:
        term.out.print(f"note: {note}", markup=False)
    term.out.print(
        f"Bundled {len(r.files)} files, {_size(r.size)} in total ({_size(r.downloaded)} downloaded), every "
        f"hash checked, in {r.seconds:.1f}s; lock from {r.lock_source}.",
        markup=False,
    )
    if r.seconds_per_mib is not None:
        term.out.print(
            f"Fetched in {r.fetch_seconds:.1f}s: {r.seconds_per_mib:.3f} s per MiB downloaded "
            f"({r.downloaded / 2**20 / max(r.fetch_seconds, 1e-9):.1f} MiB/s, {r.connections} "
            "connection(s)).",
            markup=False,
        )
    term.out.print(
        f"Install it offline: tfrebuild apply {r.output}/profile.toml --find-links {r.output} --offline --env PATH",
        markup=False,
    )


def export(term: Terminal, r, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": True, **jsonable(r)})
        return
    if r.output is None:
        sys.stdout.write(r.text)
        sys.stdout.flush()
        for note in r.notes:
            term.err.print(f"note: {note}", markup=False)
        return
    hashed = "every package hashed" if r.hashed else "some packages without hashes"
    term.out.print(
        f"Wrote {r.output}: {r.packages} packages ({r.format}, {hashed}) from {r.source}; lock from {r.lock_source}.",
        markup=False,
    )
    for note in r.notes:
        term.out.print(f"note: {note}", markup=False)
    install = (
        f"uv pip sync {r.output}" if r.format == "pylock" else f"pip install --require-hashes --no-deps -r {r.output}"
    )
    term.out.print(f"Install with: {install}", markup=False)
