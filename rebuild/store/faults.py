"""Crash-test hook: the named steps at which tests kill a tfrebuild process.

Every place that changes the store calls :func:`fault_point` with a literal step name
(``upgrade.swapped``, ``rollback.old-moved``, ``gc.moved``, ``apply.built``...);
``tests/test_generations.py`` checks that each name found in the sources is exercised.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "TFREBUILD_FAULT"
PAUSE_ENV = "TFREBUILD_PAUSE"  # "<step>:<seconds>": wait there, so a test's signal lands at that step


def fault_point(name: str) -> None:
    """SIGKILL this process when ``$TFREBUILD_FAULT`` equals ``name``; pause when ``$TFREBUILD_PAUSE`` names it."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    step, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if step == name:
        time.sleep(float(seconds or 1))
