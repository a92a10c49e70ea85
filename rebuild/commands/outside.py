"""An env recreated or changed outside tfrebuild continues its history.

Users recreate envs (``rm -rf .venv && python -m venv .venv && pip install -r requirements.txt``) and install
into them in place. The tree at the path is then not the one its current generation recorded:

* **recreated**: another directory sits at the path (its device and inode are not the recorded ones), or the venv
  was made again in it (its ``pyvenv.cfg`` is not the recorded file: :func:`rebuild.store.trees.venv_stamp`);
* **changed in place**: the same directory, but the distributions it holds are not the ones the generation's
  profile recorded (index-installed ones; the project's own and other local packages, pip/setuptools/wheel and
  tfrebuild itself are left out of the comparison: a project's own sync reinstalls them).

:func:`detect` says which (``status`` shows it); :func:`adopt` records the env as it is now as a new generation
(its profile taken fresh, ``adopted: recreated outside tfrebuild``): ``upgrade`` and ``rollback`` do so before
anything else, so every earlier generation whose tree is kept stays available to ``rollback``. The generation whose tree was
lost keeps its record, profile and lock (``history`` shows its tree as missing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from rebuild.errors import UserError
from rebuild.knowledge.tf import SEED_PACKAGES
from rebuild.store import adoption
from rebuild.store.records import Generation
from rebuild.store.store import Store
from rebuild.store.trees import key_or_none, venv_stamp
from rebuild.util import distinfo, versions

_LEFT_OUT = {canonicalize_name(n) for n in (*SEED_PACKAGES, "tfrebuild")}
_SHOWN = 6  # differences named in the sentence


@dataclass
class Outside:
    kind: str  # "recreated" or "changed in place"
    generation: int  # the current generation the tree at the path is not
    detail: str  # what differs, one sentence

    @property
    def command(self) -> str:
        return f"adopted: {self.kind} outside tfrebuild"

    def sentence(self, env: Path | str) -> str:
        return (
            f"{env} is not generation {self.generation} as tfrebuild recorded it: it was {self.kind} outside "
            f"tfrebuild ({self.detail}); `tfrebuild upgrade` (or `rollback`) first adopts it as it is now as a new "
            "generation, so no generation is lost"
        )


def _index_pins(pins: dict[str, str]) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in pins.items() if canonicalize_name(n) not in _LEFT_OUT}


def _recorded(store: Store, number: int) -> dict[str, str] | None:
    """What generation ``number``'s profile recorded (index-installed distributions in the env), or None."""
    from rebuild.env import profile as prof

    path = store.generation_dir(number) / "profile.toml"
    if not path.is_file():
        return None
    try:
        recorded = prof.load(path)
    except (UserError, OSError):
        return None
    return _index_pins(
        {
            p.name: p.version
            for p in recorded.packages
            if p.location == "env" and getattr(p, "source", "index") in ("index", "")
        }
    )


def _installed(env: Path, recorded: dict[str, str]) -> dict[str, str] | None:
    """The distributions in the env's site-packages now (local and editable ones as the record left them out)."""
    from rebuild.util.distinfo import installed

    if not any(env.glob("lib*/python*/site-packages")):
        return None
    pins = installed(env)
    now = _index_pins(pins)
    local = set()
    for site in env.glob("lib*/python*/site-packages"):
        for direct in site.glob("*.dist-info/direct_url.json"):
            local.add((distinfo.parse(direct.parent.name) or ("", ""))[0])
    return {n: v for n, v in now.items() if n not in local or n in recorded}


def _made_after(env: Path, created: str) -> bool:
    """For a record made before venv stamps were kept: the venv at ``env`` was made after its generation was recorded,
    its ``pyvenv.cfg`` (written when a venv is created, never by installs) being newer."""
    from datetime import datetime

    try:
        made = os.stat(env / "pyvenv.cfg").st_mtime
        recorded = datetime.fromisoformat(created).timestamp()
    except (OSError, ValueError):
        return False
    return made > recorded + 1  # a second of slack for coarse timestamps


def _differences(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    return [
        f"{name} {old} → {new}" if old and new else (f"+{name} {new}" if new else f"-{name} {old}")
        for name, old, new in versions.moves(recorded, now)
    ]


def detect(store: Store) -> Outside | None:
    """How the tree at the path differs from the current generation's record, or None when it is that tree."""
    current = store.current
    found = key_or_none(store.env)
    if found is None:
        return None  # nothing at the path: not an env to adopt (the commands say so themselves)
    recorded = _recorded(store, current.number)
    now = _installed(store.env, recorded or {})
    other_dir = found != (current.device, current.inode)  # a directory made again can get the freed inode back:
    made_again = venv_stamp(store.env) != current.venv if current.venv else _made_after(store.env, current.created)
    if other_dir or made_again:
        what = f"holds {len(now)} distributions" if now is not None else "no site-packages"
        if recorded is not None and now is not None:
            diff = _differences(recorded, now)
            what += f"; against generation {current.number}: " + (
                ", ".join(diff[:_SHOWN]) + (f", and {len(diff) - _SHOWN} more" if len(diff) > _SHOWN else "")
                if diff
                else "the same versions"
            )
        where = "another directory is at the path" if other_dir else "the venv at the path was made again"
        return Outside("recreated", current.number, f"{where}; it {what}")
    if recorded is None or now is None:
        return None
    diff = _differences(recorded, now)
    if not diff:
        return None
    shown = ", ".join(diff[:_SHOWN]) + (f", and {len(diff) - _SHOWN} more" if len(diff) > _SHOWN else "")
    return Outside("changed in place", current.number, f"packages changed in place: {shown}")


def adopt(store: Store, write_profile, progress=None) -> tuple[Outside, Generation] | None:
    """If the tree at the path is not the current generation's, record it as a new generation
    (under the lock, which the caller holds; ``write_profile`` is :func:`rebuild.commands.generations.write_profile`).
    Returns what was found and the new generation, or None when nothing differs."""
    found = detect(store)
    if found is None:
        return None
    store.refuse_tampered_current()  # the tree is a generation of record: the state file changed, not the env
    if progress is not None:
        progress.note(found.sentence(store.env))
    from rebuild.env import profile as prof

    number = store.next_number()
    old_profile = store.generation_dir(found.generation) / "profile.toml"
    try:
        like = prof.load(old_profile) if old_profile.is_file() else None
    except UserError:
        like = None
    write_profile(store, number, like=like)  # the env as it is now, with the user's [constraints] and [smoke] kept
    profile = prof.load(store.generation_dir(number) / "profile.toml")
    tf = profile.tensorflow
    gen = Generation.new(
        number,
        command=found.command,
        python=profile.interpreter.version or "",
        tensorflow=f"{tf.distribution} {tf.version}" if tf.distribution and tf.version else "",
        note=found.detail,
    )
    return found, adoption.record_outside(store, gen, os.lstat(store.env), lost=found.kind)


def adopt_text(store: Store, done: tuple[Outside, Generation] | None) -> str | None:
    """The line commands print for an adoption."""
    if done is None:
        return None
    found, gen = done
    return (
        f"adopted {store.env} as generation {gen.number} ({gen.tensorflow or 'no TensorFlow'}): it was "
        f"{found.kind} outside tfrebuild ({found.detail}); generation {found.generation}'s tree is gone, its "
        "record is kept"
    )
