"""``tfrebuild gc``: delete the generations beyond ``--keep`` (never the current or the previous one), then the pyc
cache's entries no env uses any more. Split from :mod:`rebuild.commands.generations` (same code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rebuild.commands.generations import open_store, recover
from rebuild.core.bytecode import Pruned, links_in, prune_cache
from rebuild.errors import UserError
from rebuild.store.disk import exclusive_usage
from rebuild.util import signals


@dataclass
class GcResult:
    env: str
    keep: int
    deleted: list[int]
    kept: list[int]
    freed: int
    dry_run: bool
    recovered: str | None = None
    pyc_cache: Pruned | None = None  # the pyc cache's entries no env uses any more, removed after the generations
    unreadable: dict[int, str] = field(default_factory=dict)  # generations whose record cannot be read: kept, why


def gc(
    env=None, keep: int = 3, *, dry_run: bool = False, yes: bool = False, confirm: Callable[[str], bool] | None = None
) -> GcResult:
    result, doomed_trees = _gc_generations(env, keep, dry_run=dry_run, yes=yes, confirm=confirm)
    if dry_run:  # what the real run would remove: entries unused now, and those only the doomed trees use
        result.pyc_cache = prune_cache(dry_run=True, dropping=links_in(doomed_trees))
    else:
        result.pyc_cache = prune_cache()
    return result


def _gc_generations(
    env, keep: int, *, dry_run: bool, yes: bool, confirm: Callable[[str], bool] | None
) -> tuple[GcResult, list[Path]]:
    """Delete the generations beyond ``keep``; the result, and (for ``dry_run``) the trees that would go."""
    if keep < 1:
        raise UserError(
            f"--keep {keep} would delete every generation.",
            "Keep at least 1 (the current one is never deleted); the default is 3.",
        )
    if not dry_run and not yes and confirm is None:
        raise UserError(
            "tfrebuild gc deletes generations and needs confirmation; there is no terminal to ask on.",
            "Run `tfrebuild gc --dry-run` to see what would go, then `tfrebuild gc --yes`.",
        )
    store, at_open = open_store(env)
    with store.lock("tfrebuild gc"):
        recovered = recover(store, at_open)
        store.refuse_tampered_current()  # the tree outranks the store: a store.toml that disagrees deletes nothing
        store.check_current()
        gens = store.generations()
        newest_first = sorted((g.number for g in gens), reverse=True)
        # --keep N keeps N generations: the current one, then the previous one (the rollback target), then
        # the newest of the others. The current and the previous always stay (--keep 1 keeps both).
        protected = [n for n in (store.current_number, store.previous_number) if n is not None and n in newest_first]
        order = list(dict.fromkeys(protected + newest_first))
        kept = set(order[: max(keep, len(protected))])
        doomed = sorted(n for n in newest_first if n not in kept)
        trees = [store.env] + [store.generation_dir(n) / "env" for n in sorted(kept) if n != store.current_number]
        if dry_run or not doomed:
            alone, _ = exclusive_usage(trees + [store.generation_dir(n) / "env" for n in doomed])
            freed = sum(alone.get(store.generation_dir(n) / "env", 0) for n in doomed)
            doomed_trees = [store.generation_dir(n) / "env" for n in doomed] if dry_run else []
            return GcResult(
                str(store.env), keep, doomed, sorted(kept), freed, dry_run, recovered, unreadable=store.unreadable()
            ), doomed_trees
        if not yes and not confirm(f"Delete generation(s) {', '.join(map(str, doomed))} of {store.env}?"):
            raise UserError("gc cancelled; nothing was deleted.", exit_code=1)
        freed = 0
        for n in doomed:
            with signals.deferred():  # one generation at a time: a signal stops gc between two deletions
                freed += store.delete_generation(n)
                gone = ", ".join(map(str, doomed[: doomed.index(n) + 1]))
                signals.changed(
                    f"{store.env} gc",
                    f"gc deleted generation(s) {gone} of {store.env}; "
                    f"{store.env} is still on generation {store.current_number}",
                )
        return GcResult(
            str(store.env), keep, doomed, sorted(kept), freed, False, recovered, unreadable=store.unreadable()
        ), []
