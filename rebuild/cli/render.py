"""All output: human text, ``--json`` documents, errors and live progress.

Core functions return dataclasses and report progress through a ``progress`` object
(:mod:`rebuild.util.progress`); only this module and its siblings (:mod:`rebuild.cli.render_build`: plan,
upgrade, apply; :mod:`rebuild.cli.render_parts`: the shared pieces) write to the terminal, through a
:class:`Terminal` the CLI makes once and hands to every renderer. Results go to stdout;
progress and errors to stderr. ``NO_COLOR`` is honoured, and so is a non-terminal
stdout/stderr (plain lines, no colour, no live status).
"""

from __future__ import annotations

import sys

from rebuild.cli.render_build import _plan_dict, plan_text, tries
from rebuild.cli.render_parts import (
    _changes,
    _checks,
    _grid,
    emit_json,
    jsonable,
    plain_json,
    print_notes,
    swapped,
    table,
    text_or_plain_json,
)
from rebuild.cli.terminal import Progress, Terminal  # noqa: F401 - their home is cli/terminal.py (app uses render.Progress)
from rebuild.errors import UserError
from rebuild.util import proc
from rebuild.util.versions import minor


def error(term: Terminal, exc: UserError, as_json: bool) -> None:
    from rich.markup import escape

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


# --- per-command renderers ------------------------------------------------------


def snapshot(term: Terminal, result, as_json: bool) -> None:
    from rebuild.env import profile as prof

    p = result.profile
    if as_json:
        emit_json({"ok": True, "written_to": result.written_to, "profile": prof.as_json_dict(p)})
        return
    from rich.markup import escape

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
    if plain_json(result, as_json):
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
    print_notes(term.out, r.notes)
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


@text_or_plain_json
def diff(term: Terminal, d) -> None:
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


@text_or_plain_json
def releases(term: Terminal, t) -> None:
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
    print_notes(term.out, r.skipped)
    if not r.findings:
        term.out.print("No problems found.", markup=False)
    term.out.print(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info "
        f"in {r.seconds:.1f}s. Nothing was changed.",
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
    print_notes(term.out, r.notes)
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


@text_or_plain_json
def export(term: Terminal, r) -> None:
    if r.output is None:
        sys.stdout.write(r.text)
        sys.stdout.flush()
        print_notes(term.err, r.notes)
        return
    hashed = "every package hashed" if r.hashed else "some packages without hashes"
    term.out.print(
        f"Wrote {r.output}: {r.packages} packages ({r.format}, {hashed}) from {r.source}; lock from {r.lock_source}.",
        markup=False,
    )
    print_notes(term.out, r.notes)
    install = (
        f"uv pip sync {r.output}" if r.format == "pylock" else f"pip install --require-hashes --no-deps -r {r.output}"
    )
    term.out.print(f"Install with: {install}", markup=False)
