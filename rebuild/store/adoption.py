"""Recording an env that was recreated or changed outside tfrebuild as a new generation.

The tree now at ``E`` is not the one the current generation recorded (another directory, or the same one with
other packages). It becomes generation ``N`` (new, current) with its own device and inode. The generation it
replaced keeps its record (its tree is gone: the user removed or changed it) with a note saying so; ``previous``
becomes the old previous generation when its tree is still kept, so ``rollback`` returns to a tree that exists.
Nothing is moved: only records are written (the profile by the caller first, then ``meta.toml``, then
``store.toml``, each atomically), so a crash leaves either the old state or the new one (at worst an extra
record no ``store.toml`` names, which history shows as a generation without a tree).
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from typing import TYPE_CHECKING

from rebuild.errors import UserError
from rebuild.store.records import Generation
from rebuild.store.trees import venv_stamp

if TYPE_CHECKING:
    from rebuild.store.store import Store


def record_outside(store: Store, gen: Generation, st: os.stat_result, *, lost: str) -> Generation:
    """Record the tree at ``E`` (``st``: its ``lstat``) as ``gen`` (a new number), current; the caller holds the lock."""
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{store.env} is not a directory", hint="Point tfrebuild at an environment folder.")
    old = store.current
    if gen.number in (old.number, store.previous_number) or (store.generation_dir(gen.number) / "meta.toml").exists():
        raise UserError(
            f"Generation {gen.number} already exists for {store.env}",
            hint=f"Use store.next_number() ({store.next_number()}).",
        )
    new = replace(gen, inode=st.st_ino, device=st.st_dev, venv=venv_stamp(store.env))
    store.write_meta(new)
    note = f"its tree was {lost} outside tfrebuild; the env found then is generation {new.number}"
    store.write_meta(replace(old, note=f"{old.note}; {note}" if old.note else note))
    previous = store.previous_number
    if previous is not None and not os.path.isdir(store.generation_dir(previous) / "env"):
        previous = None
    store.write_state(new.number, previous)
    return new
