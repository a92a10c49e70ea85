"""The main job on a machine with no TensorFlow env yet: build the bundled example env, then upgrade it.

``tfrebuild upgrade --yes`` with no ``--env``, no ``$VIRTUAL_ENV`` and nothing at ``./.venv`` applies the
bundled profile of the classic stuck env (tensorflow-cpu 2.15.1 + SciPy + pandas, the case where
``pip install --upgrade tensorflow`` breaks ``import scipy``) to ``./.venv`` as generation 1; the upgrade then
runs on it as on any env. Anything else (an ``--env``, an active venv, a ``./.venv``) is never touched here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rebuild.errors import UserError

PROFILE_NAME = "tensorflow-cpu-2.15-scipy-pandas.toml"


@dataclass
class Started:
    """The env this run created from the bundled profile before upgrading it."""

    env: str
    profile: str
    tensorflow: str  # what generation 1 holds, e.g. "tensorflow-cpu 2.15.1"
    seconds: float


def bundled_profile() -> Path:
    """The bundled profile: inside the installed package (the wheel carries it), else the checkout's ``profiles/``."""
    packaged = Path(__file__).resolve().parent.parent / "knowledge" / "data" / PROFILE_NAME
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "profiles" / PROFILE_NAME


def applies(opts) -> bool:
    """No env named or active, and nothing at ``./.venv``: the bundled env is the one to work on."""
    if opts.env is not None or opts.profile is not None or os.environ.get("VIRTUAL_ENV"):
        return False
    return not os.path.lexists(Path.cwd() / ".venv")


#: The upgrade's options that the bundled profile's apply cannot take (it installs the profile's locked files).
UNSUPPORTED = (
    ("index_url", "--index-url"),
    ("extra_index_urls", "--extra-index-url"),
    ("constraints", "--constraint"),
    ("build_constraints", "--build-constraint"),
)


def refuse_unsupported(opts) -> None:
    """``--index-url``/``--extra-index-url``/``--constraint``/``--build-constraint``: refused (before anything is
    created) rather than dropped: the apply of the bundled profile installs its locked files and takes none."""
    given = [flag for attr, flag in UNSUPPORTED if getattr(opts, attr, None)]
    if given:
        target = Path.cwd() / ".venv"
        raise UserError(
            f"With no env here (no --env, no $VIRTUAL_ENV, no {target}), `tfrebuild upgrade --yes` first creates "
            f"{target} from the bundled profile {PROFILE_NAME}, and that step installs the profile's locked files: it "
            f"does not take {', '.join(given)}. Nothing was created or changed.",
            "Upgrade your own env with them (--env PATH, or activate it), or run without them to start from the "
            "bundled example env (its upgrade then takes them: tfrebuild upgrade --env .venv --yes …).",
        )


def create(opts, progress) -> Started:
    """Apply the bundled profile to ``./.venv`` (generation 1), with the upgrade's --find-links and --offline
    (:func:`refuse_unsupported`: the other index options are refused, not dropped)."""
    from rebuild.commands import apply as applying

    refuse_unsupported(opts)

    profile = bundled_profile()
    target = Path.cwd() / ".venv"
    progress.note(
        f"no TensorFlow env here (no --env, no $VIRTUAL_ENV, no {target}): creating {target} from the "
        f"bundled profile {profile.name}, then upgrading it"
    )
    done = applying.run(
        applying.Options(
            profile=profile,
            env=target,
            find_links=list(opts.find_links),
            offline=opts.offline,
            yes=True,
            no_compile=opts.no_compile,
            allow_python_download=opts.allow_python_download,
            check=opts.check,
        ),
        progress,
    )
    held = done.tensorflow if " " in done.tensorflow else f"tensorflow-cpu {done.tensorflow}".strip()
    return Started(env=str(target), profile=str(profile), tensorflow=held, seconds=done.seconds)
