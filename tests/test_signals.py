"""A signal whose exception Python swallows still ends the command.

A SIGTERM that lands while an at-fork hook runs (``logging`` registers one; a child started
with ``preexec_fn`` runs them) raises inside that hook, where Python reports "Exception
ignored" and drops it. The CI saw an upgrade run on to a swap after such a SIGTERM. The
runner (``util.proc.run``) no longer takes a ``preexec_fn``, so its children run no at-fork
hook at all; a child started otherwise still can, and the checkpoint catches that. These
tests make the signal land exactly there, in a real process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from rebuild.util import proc, signals

    signals.install()
    fired = []

    def land_in_hook():  # the signal arrives while Python runs an at-fork hook
        if not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # bytecode runs here: the handler raises inside the hook
                pass

    os.register_at_fork(after_in_parent=land_in_hook)
    try:
        {action}
    except signals.Terminated:
        print("TERMINATED", flush=True)
        sys.exit(143)
    print("RAN ON", flush=True)
    """
)


def run_script(*lines: str) -> subprocess.CompletedProcess:
    script = SCRIPT.replace("{action}", "\n    ".join(lines))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_the_process_runner_runs_no_at_fork_hook():
    """No ``preexec_fn``: Python forks the runner's children without running at-fork hooks, so no signal can be
    swallowed there (the hook below would send SIGTERM the moment it ran)."""
    done = run_script("proc.run([sys.executable, '-c', 'pass'])", "proc.run([sys.executable, '-c', 'pass'])")
    assert done.returncode == 0 and "RAN ON" in done.stdout, (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr, done.stderr


def test_signal_swallowed_in_at_fork_hook_ends_the_next_runner_call():
    """A child started outside the runner with a ``preexec_fn`` runs the hooks; the runner's checkpoint ends the
    command at its next call."""
    done = run_script(
        "import subprocess",
        "subprocess.Popen([sys.executable, '-c', 'pass'], preexec_fn=lambda: None).wait()",
        "proc.run([sys.executable, '-c', 'pass'])",
    )
    assert done.returncode == 143 and "TERMINATED" in done.stdout, (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr, done.stderr  # no confusing traceback either


def test_signal_swallowed_before_a_critical_section_keeps_it_from_starting():
    done = run_script(
        "import subprocess",  # a child started outside the runner: nothing checks after it
        "subprocess.Popen([sys.executable, '-c', 'pass'], preexec_fn=lambda: None).wait()",
        "with signals.deferred():",
        "    print('ENTERED', flush=True)",
    )
    assert done.returncode == 143 and "ENTERED" not in done.stdout, (done.stdout, done.stderr)


def test_other_unraisable_exceptions_still_reach_the_previous_hook():
    done = run_script("class Bad:", "    def __del__(self): raise ValueError('boom')", "Bad()")
    assert done.returncode == 0 and "RAN ON" in done.stdout, (done.stdout, done.stderr)
    assert "Exception ignored" in done.stderr and "ValueError: boom" in done.stderr, done.stderr
