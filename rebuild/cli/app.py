"""Command line: parse, call one core function, render. Nothing else lives here."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from rebuild import __version__
from rebuild.cli import params, render, render_build
from rebuild.core.options import ExportFormat, Gpu, Keras, PathCheck, Strategy
from rebuild.errors import UserError

if TYPE_CHECKING:
    from rebuild.core.plan import Options

app = typer.Typer(
    name="tfrebuild",
    help="Upgrade TensorFlow environments safely: build the new env beside the old one, "
    "check it, swap it in atomically, roll back in milliseconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cache
def terminal() -> render.Terminal:
    """The one terminal of this process (made on first use, so NO_COLOR is read when the command runs)."""
    return render.Terminal()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tfrebuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """tfrebuild: never upgrade TensorFlow in place again."""
    import os

    from rebuild.index.config import tls_environment

    # pip's `cert`/`client-cert` (the user's and the machine's pip files, PIP_CERT/PIP_CLIENT_CERT) reach uv (every
    # child inherits them) and tfrebuild's own HTTP client. An env's own <env>/pip.conf is not read for these.
    os.environ.update(tls_environment())


def _run(as_json: bool, work, show) -> None:
    """Run one core function; render its result or the user error it raised."""
    from rebuild.util import signals

    term = terminal()
    signals.install()  # SIGTERM ends the command like Ctrl-C: through the same cleanup
    try:
        result = work()
        signals.checkpoint()  # a signal swallowed late (see util.signals) still ends the command
    except UserError as exc:
        render.error(term, exc, as_json)
        raise typer.Exit(exc.exit_code)
    except (KeyboardInterrupt, RuntimeError) as caught:
        stop = signals.interrupt_in(caught)  # a Ctrl-C inside a class's creation comes wrapped (util.signals)
        if stop is None:
            raise
        what = "terminated" if isinstance(stop, signals.Terminated) else "interrupted"
        done = signals.changes()  # what the command had finished before the signal (a swap finishes first)
        term.err.print(f"{what}: " + ("; ".join(done) if done else "nothing was changed"), markup=False)
        raise typer.Exit(143 if isinstance(stop, signals.Terminated) else 130)
    except OSError as exc:  # disk full, read-only, permission, busy: one paragraph, not a traceback
        from rebuild.errors import from_os_error

        problem = from_os_error(exc)
        if problem is None:
            raise
        render.error(term, problem, as_json)
        raise typer.Exit(problem.exit_code)
    show(term, result, as_json)


def _asking(progress: render.Progress, preview):
    """``preview(result) -> bool`` as a confirm callback that stops the live status before it asks."""

    def confirm(result) -> bool:
        progress.pause()
        return preview(terminal(), result)

    return confirm


@app.command()
def snapshot(
    env: Optional[Path] = params.EnvOpt,
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Profile file (default: profiles/<env name>.toml)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing profile file."),
    as_json: bool = params.JsonOpt,
) -> None:
    """Record an environment in a TOML profile. Never changes the environment.

    Example: tfrebuild snapshot --env ~/venvs/tf -o tf.toml
    """
    from rebuild.commands import snapshot as snap

    ready = None if as_json else lambda: terminal().out  # the text's console (rich) loads while the probe runs
    _run(as_json, lambda: snap.run(env, output, force=force, meanwhile=ready), render.snapshot)


def _links(find_links) -> list[str]:
    return [str(f) for f in find_links or []]


def _planned(
    env: Optional[Path] = params.EnvOpt,
    to: str = params.ToOpt,
    profile: Optional[Path] = params.ProfileOpt,
    python: Optional[str] = params.PythonOpt,
    strategy: Strategy = params.StrategyOpt,
    pre: bool = params.PreOpt,
    index_url: Optional[str] = params.IndexOpt,
    extra_index_url: Optional[list[str]] = params.ExtraIndexOpt,
    find_links: Optional[list[str]] = params.FindLinksOpt,
    constraint: Optional[list[Path]] = params.ConstraintOpt,
    build_constraint: Optional[list[Path]] = params.BuildConstraintOpt,
    offline: bool = params.OfflineOpt,
    no_compile: bool = params.NoCompileOpt,
    allow_python_download: bool = params.AllowDownloadOpt,
    keras: Keras = params.KerasOpt,
    gpu: Gpu = params.GpuOpt,
    yes: bool = params.YesOpt,
    force: bool = params.UpgradeForceOpt,
    allow_sources: bool = params.AllowSourcesOpt,
    allow_commands: bool = params.AllowCommandsOpt,
    check: PathCheck = params.CheckOpt,
    as_json: bool = params.JsonOpt,
    allow_downgrade: bool = typer.Option(
        False,
        "--allow-downgrade",
        help="With --yes: go on although the plan moves a package you requested to an older version.",
    ),
    model: Optional[list[str]] = params.ModelOpt,
    no_reference_checks: bool = params.NoReferenceOpt,
) -> None:
    """The options of `upgrade`, in its help page's order; `plan` takes them but UPGRADE_ONLY, `doctor` those of
    DOCTOR (a signature only: the commands take it with params.takes; plan and upgrade build the same core.plan.Options
    from it)."""


UPGRADE_ONLY = (
    "no_compile",
    "yes",
    "force",
    "allow_commands",
    "check",
    "allow_downgrade",
    "model",
    "no_reference_checks",
)
DOCTOR = ("env", "to", "pre", "index_url", "extra_index_url", "find_links", "offline", "as_json")

# The repeatable options -> their field in the verbs' options (core.plan.Options, commands.apply.Options)
_LISTS = {
    "extra_index_url": "extra_index_urls",
    "find_links": "find_links",
    "constraint": "constraints",
    "build_constraint": "build_constraints",
    "model": "models",
}


def _values(given: dict[str, Any]) -> dict[str, Any]:
    """The command line's values (of _planned's or _applied's options) as the verbs' options take them: the repeatable
    options as lists of strings, under their plural names."""
    return {_LISTS.get(k, k): [str(v) for v in value or []] if k in _LISTS else value for k, value in given.items()}


def _plan_options(given: dict[str, Any]) -> Options:
    """The plan's (and upgrade's) Options from the command line's values."""
    from rebuild.core import plan as core_plan

    return core_plan.Options(**_values(given))


@app.command()
@params.takes(_planned, without=UPGRADE_ONLY)
def plan(*, as_json: bool, **given: Any) -> None:
    """Dry run: resolve the upgrade with uv and show what would change. Changes nothing.

    Example: tfrebuild plan --env ~/venvs/tf --to 2.18
    """
    opts = _plan_options(given)

    def work():
        from rebuild.commands import plan as planning_verb

        with terminal().progress(enabled=not as_json) as progress:  # --to latest: the expected landing point
            return planning_verb.run(opts, progress)

    _run(as_json, work, render_build.plan)


@app.command()
@params.takes(_planned)
def upgrade(*, as_json: bool, **given: Any) -> None:
    """Build the upgraded env beside the old one, check it, swap it in atomically.

    The old env is kept as the previous generation: `tfrebuild rollback` brings it back.

    Example: tfrebuild upgrade --env ~/venvs/tf --to latest --yes
    """
    from rebuild.commands import upgrade as upgrading

    opts = _plan_options(given)

    def work():
        with terminal().progress(enabled=not as_json) as progress:
            confirm = _asking(progress, render_build.confirm_plan) if _can_ask(as_json) and not opts.yes else None
            return upgrading.run(opts, progress, confirm=confirm)

    _run(as_json, work, render_build.upgrade)


@app.command()
@params.takes(_planned, only=DOCTOR)
def doctor(*, as_json: bool, **given: Any) -> None:
    """Explain what is wrong with an env and why its upgrade is blocked. Changes nothing.

    Exit code 0: no errors; 1: errors found; 2: bad input.

    Example: tfrebuild doctor --env ~/venvs/tf --to 2.21
    """
    from rebuild.commands import doctor as doc

    found = []

    def work():
        found.append(doc.run(**_values(given)))
        return found[0]

    _run(as_json, work, render.doctor)
    if found and found[0].exit_code:
        raise typer.Exit(found[0].exit_code)


def _can_ask(as_json: bool) -> bool:
    return sys.stdin.isatty() and not as_json


def _confirm(question: str) -> bool:
    return typer.confirm(question, default=False, err=True)


def _tty_confirm(as_json: bool):
    return _confirm if _can_ask(as_json) else None


@app.command()
def rollback(
    env: Optional[Path] = params.EnvOpt,
    to: Optional[int] = typer.Option(None, "--to", help="Generation number (default: the previous one)."),
    yes: bool = params.YesOpt,
    force: bool = params.RollbackForceOpt,
    check: PathCheck = params.CheckOpt,
    as_json: bool = params.JsonOpt,
) -> None:
    """Swap the previous generation (or --to N) back in: atomic, offline, in milliseconds.

    A second plain rollback undoes the first, like `cd -`.

    Example: tfrebuild rollback --env ~/venvs/tf --yes
    """
    from rebuild.commands import generations

    _run(
        as_json,
        lambda: generations.rollback(
            env, to, yes=yes, force=force, confirm=_tty_confirm(as_json), deep=check == PathCheck.IMPORT
        ),
        render.rollback,
    )


@app.command()
def history(env: Optional[Path] = params.EnvOpt, as_json: bool = params.JsonOpt) -> None:
    """List the generations of a managed env.

    Example: tfrebuild history --env ~/venvs/tf
    """
    from rebuild.commands import history as viewing

    _run(as_json, lambda: viewing.history(env), render.history)


@app.command()
def diff(
    a: str = typer.Argument(..., help="Generation number or profile file."),
    b: str = typer.Argument(..., help="Generation number or profile file."),
    env: Optional[Path] = params.EnvOpt,
    as_json: bool = params.JsonOpt,
) -> None:
    """Show the package changes between two generations or two profiles.

    Example: tfrebuild diff 1 2 --env ~/venvs/tf
    """
    from rebuild.commands import history as viewing

    _run(as_json, lambda: viewing.diff(a, b, env), render.diff)


@app.command()
def gc(
    env: Optional[Path] = params.EnvOpt,
    keep: int = typer.Option(
        3,
        "--keep",
        help="How many generations to keep, the current one included: the current, the previous "
        "(the rollback target), then the newest others; the current and previous always stay.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    yes: bool = params.YesOpt,
    as_json: bool = params.JsonOpt,
) -> None:
    """Delete the oldest generations beyond --keep, then the pyc cache's entries no env uses; report the space freed.

    Example: tfrebuild gc --env ~/venvs/tf --keep 2 --yes
    """
    from rebuild.commands import gc as collecting

    _run(as_json, lambda: collecting.gc(env, keep, dry_run=dry_run, yes=yes, confirm=_tty_confirm(as_json)), render.gc)


@app.command()
def status(env: Optional[Path] = params.EnvOpt, as_json: bool = params.JsonOpt) -> None:
    """Current generation, interrupted operations, leftover staging folders, lock holder.

    Example: tfrebuild status --env ~/venvs/tf
    """
    from rebuild.commands import history as viewing

    _run(as_json, lambda: viewing.status(env), render.status)


@app.command()
def releases(
    env: Optional[Path] = params.EnvOpt,
    offline: bool = typer.Option(False, "--offline", help="Do not ask the index for the newest release."),
    as_json: bool = params.JsonOpt,
) -> None:
    """TensorFlow releases tfrebuild knows: Pythons, CUDA/cuDNN, Keras, NumPy, GPU route, breaking changes.

    Marks the env's TensorFlow and the newest release on the index.

    Example: tfrebuild releases --env ~/venvs/tf
    """
    from rebuild.commands import releases as releasing

    _run(as_json, lambda: releasing.release_table(env, offline=offline), render.releases)


def _applied(
    profile: Path = typer.Argument(..., help="Profile file; the pylock.toml its `lock` names is installed as is."),
    env: Optional[Path] = typer.Option(
        None,
        "--env",
        "-e",
        help="Environment folder to create, or to give a new generation (default: $VIRTUAL_ENV, else ./.venv).",
    ),
    python: Optional[str] = params.ApplyPythonOpt,
    find_links: Optional[list[str]] = params.FindLinksOpt,
    offline: bool = params.OfflineOpt,
    resolve: bool = typer.Option(
        False,
        "--resolve",
        help="If the lock does not fit this machine, re-resolve the "
        "requested packages for it, keeping versions as close as possible.",
    ),
    allow_commands: bool = params.AllowCommandsOpt,
    allow_insecure_index: bool = typer.Option(
        False,
        "--allow-insecure-index",
        help="Accept plain-http (unencrypted) indexes and file links; https, file:// and local folders need no flag.",
    ),
    allow_sources: bool = params.AllowSourcesOpt,
    allow_index: bool = params.AllowIndexOpt,
    no_compile: bool = params.NoCompileOpt,
    allow_python_download: bool = params.AllowDownloadOpt,
    yes: bool = params.YesOpt,
    force: bool = params.SwapForceOpt,
    check: PathCheck = params.CheckOpt,
    as_json: bool = params.JsonOpt,
    model: Optional[list[str]] = params.ModelOpt,
) -> None:
    """The options of `apply`, in its help page's order (a signature only, given by params.takes)."""


@app.command()
@params.takes(_applied)
def apply(*, as_json: bool, **given: Any) -> None:
    """Build an environment from a profile's lock: a new env, or a new generation of an existing one.

    Exact versions and hashes; nothing is re-resolved unless --resolve is given and needed.

    Example: tfrebuild apply tf-bundle/profile.toml --env ~/venvs/tf --find-links tf-bundle --offline --yes
    """
    from rebuild.commands import apply as applying

    opts = applying.Options(**_values(given))

    def work():
        with terminal().progress(enabled=not as_json) as progress:
            confirm = _asking(progress, render_build.confirm_apply) if _can_ask(as_json) and not opts.yes else None
            return applying.run(opts, progress, confirm=confirm)

    _run(as_json, work, render_build.apply)


def _from_lock(
    find_links: Optional[list[str]] = params.FindLinksOpt,
    offline: bool = params.OfflineOpt,
    allow_sources: bool = params.AllowSourcesOpt,
    allow_index: bool = params.AllowIndexOpt,
    as_json: bool = params.JsonOpt,
) -> None:
    """The options `bundle` and `export` end with (a signature only, given by params.takes): where the wheels come
    from, and what a profile from elsewhere may name."""


def _reading(given: dict[str, Any]) -> dict[str, Any]:
    """_from_lock's values as bundle's and export's verbs take them."""
    return {
        "find_links": _links(given["find_links"]),
        "offline": given["offline"],
        "allowed": _allowed(given["allow_sources"], given["allow_index"]),
    }


@app.command()
@params.takes(_from_lock)
def bundle(
    profile: Path = typer.Argument(..., help="Profile file whose lock to bundle."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the wheels, profile and lock into."),
    python: Optional[str] = params.BundlePythonOpt,
    *,
    as_json: bool,
    **given: Any,
) -> None:
    """Put every wheel of a profile's lock, checked against its hashes, in one folder for offline machines.

    Example: tfrebuild bundle tf.toml -o tf-bundle
    """
    from rebuild.commands import bundle as bundling

    def work():
        with terminal().progress(enabled=not as_json) as progress:
            return bundling.run(profile, output, python=python, progress=progress, **_reading(given))

    _run(as_json, work, render.bundle)


@app.command()
@params.takes(_from_lock)
def export(
    env: Optional[Path] = params.EnvOpt,
    profile: Optional[Path] = typer.Option(None, "--profile", help="Export this profile's lock instead of an env."),
    fmt: ExportFormat = params.FormatOpt,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    *,
    as_json: bool,
    **given: Any,
) -> None:
    """Write an env's or a profile's exact set as a standard lock file, for uv or pip without tfrebuild.

    Example: tfrebuild export --env ~/venvs/tf --format requirements -o requirements.txt
    """
    from rebuild.commands import export as exporting

    _run(
        as_json,
        lambda: exporting.run(env=env, profile=profile, fmt=fmt, output=output, force=force, **_reading(given)),
        render.export,
    )


def _allowed(sources: bool, index: bool):
    from rebuild.core.consent import Allowed

    return Allowed(sources=sources, index=index)


def main() -> None:
    try:
        app()
    except UserError as exc:  # an option value refused while parsing, before any command ran
        render.error(terminal(), exc, "--json" in sys.argv[1:])
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # pragma: no cover - typer usually converts this
        sys.exit(130)
    except RuntimeError as exc:  # a Ctrl-C while the start-up imports build a class (util.signals.interrupt_in)
        from rebuild.util import signals

        if signals.interrupt_in(exc) is None:
            raise
        terminal().err.print("interrupted: nothing was changed", markup=False)
        sys.exit(130)
