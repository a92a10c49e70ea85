"""The command line's options, each defined once and shared by the commands of :mod:`rebuild.cli.app`, with the
parsers that refuse a bad value (a closed choice, an empty value, a malformed index URL) before a command runs. Split
from :mod:`rebuild.cli.app` (same code).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, TypeVar

import typer

from rebuild.core.options import Choice, ExportFormat, Gpu, Keras, PathCheck, Strategy
from rebuild.errors import UserError


def _choice(kind: type[Choice], default: Choice, *names: str, help: str):
    """An option with a closed set of values, parsed (and refused) before the command runs."""
    return typer.Option(default.value, *names, help=help, parser=kind.parse, metavar=kind.metavar())


def _given(option: str, url: bool = False):
    """A parser that refuses an empty value (and, with ``url``, a malformed index URL) before the command runs."""

    def parse(value):
        text = str(value)
        if not text.strip():
            raise UserError(
                f"{option} was given an empty value.",
                f"Give {option} a value, or leave the option out to use the default.",
            )
        if url:
            from rebuild.index import config as indexconf

            problem = indexconf.malformed(text)
            if problem:
                raise UserError(
                    f"{option} '{indexconf.redact(text)}' is not usable: {problem}.",
                    f"Give {option} an http://, https:// or file:// URL, e.g. {option} https://pypi.org/simple.",
                )
        return value

    return parse


def checked(default, *names: str, metavar: str, help: str, url: bool = False):
    """An option whose value is refused before the command runs when it is empty (and, with ``url``, when it is not a
    usable index URL); messages name it by the first of ``names``."""
    return typer.Option(default, *names, parser=_given(names[0], url=url), metavar=metavar, help=help)


# Each option once; the commands share these objects.
EnvOpt = typer.Option(
    None, "--env", "-e", help="Environment folder or interpreter (default: $VIRTUAL_ENV, else ./.venv)."
)


JsonOpt = typer.Option(False, "--json", help="Print one machine-readable JSON document.")


YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


SwapForceOpt = typer.Option(False, "--force", help="Swap even while processes run from the env.")


ApplyPythonOpt = checked(None, "--python", metavar="<python>", help="Build on this Python (default: the profile's).")


BundlePythonOpt = checked(
    None, "--python", metavar="<python>", help="Python to lock a profile without a lock for (default: the profile's)."
)


UpgradeForceOpt = typer.Option(
    False,
    "--force",
    help="Go ahead despite what upgrade otherwise refuses: processes "
    "running from the env; a tool tfrebuild does not drive owning it (Poetry, requirement "
    "files, conda: the env is upgraded alone); project files edited since tfrebuild last "
    "wrote them.",
)


RollbackForceOpt = typer.Option(
    False,
    "--force",
    help="Go ahead despite what rollback otherwise refuses: processes "
    "running from the env; project files edited since tfrebuild last wrote them (under "
    "--yes; they are saved first).",
)


NoCompileOpt = typer.Option(False, "--no-compile", help="Do not compile bytecode in the new env.")


ToOpt = checked("latest", "--to", metavar="<target>", help="Target: latest, X.Y (newest X.Y.*) or X.Y.Z.")


ProfileOpt = typer.Option(None, "--profile", help="Take requested packages and \\[constraints] from this profile.")


PythonOpt = checked(
    None,
    "--python",
    metavar="<python>",
    help="Build the new env on this Python (3.12, a path, or auto: the newest installed Python the target supports).",
)


StrategyOpt = _choice(
    Strategy, Strategy.MINIMAL, "--strategy", help="minimal: move as little as possible; eager: newest of everything."
)


PreOpt = typer.Option(False, "--pre", help="Allow pre-releases (e.g. tf-nightly).")


IndexOpt = checked(
    None, "--index-url", url=True, metavar="<url>", help="Package index to use instead of the configured one."
)


ExtraIndexOpt = checked(
    None, "--extra-index-url", url=True, metavar="<url>", help="Additional package index (repeatable)."
)


FindLinksOpt = checked(None, "--find-links", "-f", metavar="<path>", help="Folder of wheels to use (repeatable).")


BuildConstraintOpt = typer.Option(
    None,
    "--build-constraint",
    help="Constraints file for the build dependencies of sdists uv builds (as UV_BUILD_CONSTRAINT, which is read too).",
)


ConstraintOpt = typer.Option(
    None,
    "--constraint",
    "-c",
    help="Constraints file for resolving, on top of pip's and "
    "uv's configured ones (repeatable); recorded in the new generation's profile.",
)


OfflineOpt = typer.Option(False, "--offline", help="No network: use only --find-links folders and uv's cache.")


AllowDownloadOpt = typer.Option(False, "--allow-python-download", help="Let uv download a missing Python.")


GpuOpt = _choice(
    Gpu,
    Gpu.AUTO,
    "--gpu",
    help="cuda: tensorflow\\[and-cuda] (Linux x86_64); cpu: tensorflow-cpu; "
    "auto: CUDA when nvidia-smi sees a GPU, else keep the env's variant.",
)


CheckOpt = _choice(
    PathCheck,
    PathCheck.VERSIONS,
    "--check",
    help="What runs at the env's path after the swap: "
    "versions (default: the checked tree, its interpreter starts there and reports the expected "
    "versions; TensorFlow's import was proven in the new env before the swap, or at this path "
    "before a rollback), or import (TensorFlow imports and computes there too: seconds).",
)


KerasOpt = _choice(
    Keras,
    Keras.AUTO,
    "--keras",
    help="legacy: keep Keras 2 via tf-keras (TF_USE_LEGACY_KERAS=1); 3: Keras 3; auto: keep what the env uses.",
)


AllowSourcesOpt = typer.Option(
    False,
    "--allow-sources",
    help="Accept a profile from elsewhere although it names "
    "packages from outside an index (editable, path, vcs, url), and let uv build sdists "
    "for it.",
)


AllowCommandsOpt = typer.Option(
    False,
    "--allow-commands",
    help="Run a profile's \\[smoke].commands and load its "
    "\\[\\[smoke.models]] (loading a model can run code) although tfrebuild did not "
    "write the profile for this env.",
)


AllowIndexOpt = typer.Option(
    False,
    "--allow-index",
    help="Accept a profile from elsewhere although it names package locations this machine is not configured with.",
)


ModelOpt = checked(
    None,
    "--model",
    metavar="<path>",
    help="A saved model (.keras, .h5, SavedModel "
    "folder, .tflite) that must load and answer the same in the new env before the swap "
    "(repeatable; kept in the profile's \\[\\[smoke.models]]).",
)


NoReferenceOpt = typer.Option(
    False,
    "--no-reference-checks",
    help="Skip the current env's reference runs (its imports and op libraries when one fails in the new env, and "
    "its models; the plan "
    "still probes its interpreter): an import or op library that already fails there fails the new env too, and "
    "models are only loaded and run in the new env (nothing compared).",
)


FormatOpt = _choice(
    ExportFormat,
    ExportFormat.PYLOCK,
    "--format",
    help="pylock (PEP 751 pylock.toml) or requirements (requirements.txt with hashes).",
)


F = TypeVar("F", bound=Callable[..., Any])


def takes(
    source: Callable[..., Any], without: Iterable[str] = (), only: Iterable[str] | None = None
) -> Callable[[F], F]:
    """Give a command the parameters of ``source`` (a signature, declared once), after its own options (those it
    declares with a default), but those named ``without`` (or only those named ``only``), in their order: typer reads a
    command's options from its signature, so commands that share a set of options take it from one declaration instead
    of each spelling it out. The command receives them as keyword arguments."""
    signature = inspect.signature(source, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name not in set(without)]
    if only is not None:
        kept = [p for p in kept if p.name in set(only)]

    def give(command: F) -> F:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.default is not p.empty]
        command.__signature__ = signature.replace(parameters=own + kept)  # type: ignore[attr-defined]
        return command

    return give
