"""Doctor's pre-flight of a plan, run in a thread while uv resolves.

The pre-flight reads the index (the target's files and metadata, a few dependencies) and the env's
probe report; the resolution runs uv. Neither needs the other's result until the plan is put together,
so ``plan`` starts the pre-flight as soon as the target version is known and collects it at the end.
The target's requirements it reads on the way let the resolution skip a cap the target itself rules
out (:func:`rebuild.core.resolve.ruled_out_caps`).
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Background:
    """``work(requires)`` in a daemon thread; ``requires`` is a list it may fill with the target's requirements.
    (The plan also looks for a newer release for another Python this way.)"""

    def __init__(self, work: Callable[[list[str]], Any], tf_distribution: str):
        self.tf_distribution = tf_distribution  # the variant it checked (the resolution may switch it)
        self._requires: list[str] = []
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._work = work
        threading.Thread(target=self._run, name="tfrebuild-preflight", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._work(self._requires)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by findings()
            self._error = exc
        finally:
            self._done.set()

    def _wait(self) -> None:
        while not self._done.wait(0.05):  # short waits: a Ctrl-C in the main thread is not held up
            pass

    def target_requires(self) -> list[str] | None:
        """The target's applicable requirements as the pre-flight read them (None when it failed)."""
        self._wait()
        return list(self._requires) if self._error is None else None

    def result(self) -> Any:
        """What ``work`` returned (its exception raised here)."""
        self._wait()
        if self._error is not None:
            raise self._error
        return self._result

    def findings(self) -> list[Any]:
        return list(self.result() or [])
