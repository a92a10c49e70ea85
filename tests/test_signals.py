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

import pytest

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


WRAPPED = textwrap.dedent(
    """
    import sys
    import rebuild.{module} as where
    from rebuild.cli import app

    class Landing:  # Ctrl-C while a class is being created: Python 3.11 wraps it in a RuntimeError
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    def interrupted(*args, **kwargs):
        class Index:
            extra_index_urls = Landing()

    where.{name} = interrupted
    sys.argv = ["tfrebuild", "status", "--env", sys.argv[1]]
    app.main()
    """
)


@pytest.mark.parametrize(
    ("module", "name"),
    [("index.config", "tls_environment"), ("commands.history", "status")],
    ids=["at-start-up", "in-a-command"],
)
def test_an_interrupt_inside_a_class_creation_is_an_interrupt_not_a_crash(tmp_path, module, name):
    """The fault harness saw `gc` interrupted 0.06 s in end with a traceback: the Ctrl-C landed while an import built
    a dataclass, and Python 3.11 raised "RuntimeError: Error calling __set_name__". It is the user's Ctrl-C: exit
    130, "interrupted: nothing was changed", no traceback, whether it lands at start-up or inside a command."""
    script = WRAPPED.replace("{module}", module).replace("{name}", name)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert "interrupted: nothing was changed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
