"""``tfrebuild plan``: the dry run. Resolve the upgrade with uv and say what would change; nothing is changed.

Under ``--to latest`` the plan shown is the target search's expected landing point (:func:`rebuild.core.search.first_plan`);
the plan itself is :func:`rebuild.core.plan.make_plan`.
"""

from __future__ import annotations

from typing import cast

from rebuild.core import plan as planning
from rebuild.core import search
from rebuild.core.reuse import Reuse


def run(opts: planning.Options, progress) -> planning.Plan:
    """``tfrebuild plan``: the first plan of the target search, made with ``progress``; its resolutions are kept a
    short while for an ``upgrade`` with the same inputs (:mod:`rebuild.core.reuse`)."""
    first, _tries = search.first_plan(
        opts, lambda o: planning.make_plan(o, progress, reuse=Reuse("record")), progress.note
    )
    return cast(planning.Plan, first)  # first_plan is typed for any plan maker
