"""Output of the verbs that build a new env and swap it in: ``plan`` and ``upgrade`` (the plan's text and ``--json``
document, the blocked-above report, the confirmation prompt, the target search's tries, the result) and ``apply``
(its preview, prompt and result), with the model-parity table both show. Split from :mod:`rebuild.cli.render`
(same code); :func:`rebuild.cli.render.error` shows a failed upgrade's plan and tries with it.
"""

from __future__ import annotations

from pathlib import Path

from rebuild.cli.render_parts import (
    _changes,
    _checks,
    _grid,
    emit_json,
    jsonable,
    print_notes,
    swapped,
    table,
    text_or_plain_json,
)
from rebuild.cli.terminal import Terminal


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
    print_notes(term.out, p.notes, "  ")
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
    print_notes(term.out, r.notes, "  ")


def confirm_apply(term: Terminal, r) -> bool:
    _apply_preview(term, r)
    import typer

    return typer.confirm("Build this environment?", default=False, err=True)


@text_or_plain_json
def apply(term: Terminal, r) -> None:
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
