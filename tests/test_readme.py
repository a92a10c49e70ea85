"""The README's commands are the tests' commands.

* ``test_readme_commands_parse`` (offline, fast): every ``$ tfrebuild …`` line of README.md's console blocks
  is parsed by the real typer/click app (the command exists, every option exists and its value converts), and
  every option the Commands table lists for a command is one of that command's options.
* ``test_readme_first_command_on_a_fresh_machine`` (network, slow): the README's first console block, exactly as
  printed, runs in a fresh copy of this checkout with an empty HOME and the machine's default PATH (no uv, no
  pipx, no pyenv shims; a writable folder first on it, standing in for the ``/usr/local/bin`` a fresh
  machine's user can write to), with the machine's own pip configuration. Then, in the same shell,
  ``tfrebuild rollback --yes``. It checks what the README promises: the env is on the newest TensorFlow for
  its Python as generation 2, generation 1 is kept, the rollback returns to it.
* ``test_first_command_refuses_bad_input_before_creating_the_env`` (offline, fast): the same command on a fresh
  machine with a bad ``--to``, ``--model``, or an index option the bundled profile's build cannot take: exit 2,
  one paragraph, and no ``./.venv`` built first.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from rebuild.errors import UserError

try:  # typer 0.28 carries its own copy of click (typer._click); earlier versions use click itself
    from typer import _click as click
except ImportError:  # pragma: no cover - typer < 0.28
    import click

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # /etc/profile's, for root


def console_blocks(text: str) -> list[list[str]]:
    """The ``$ `` command lines of each ```console block, in order."""
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [[line[2:] for line in block.splitlines() if line.startswith("$ ")] for block in blocks]


def first_command() -> str:
    blocks = [b for b in console_blocks(README.read_text()) if b]
    assert blocks, "README.md has no console block"
    assert len(blocks[0]) == 1, f"the README's first block should be one command: {blocks[0]}"
    return blocks[0][0]


def _tfrebuild_parts(line: str) -> list[list[str]]:
    """Each ``tfrebuild …`` command of a shell line (split on ``&&``, ``;``, ``|``), without the program name."""
    words, parts, current = shlex.split(line), [], []
    for word in words + ["&&"]:
        if word in ("&&", ";", "||", "|"):
            if current and current[0] == "tfrebuild":
                parts.append(current[1:])
            current = []
        else:
            current.append(word)
    return parts


def _click_app():
    from rebuild.cli.app import app

    return typer.main.get_command(app)


def test_readme_commands_parse(monkeypatch):
    """Each README command line parses with the real app: command, options and values."""
    monkeypatch.chdir(ROOT)  # paths the README names (profiles/…) are relative to the checkout
    group = _click_app()
    seen = 0
    for block in console_blocks(README.read_text()):
        for line in block:
            for args in _tfrebuild_parts(line):
                name, rest = args[0], args[1:]
                command = group.get_command(click.Context(group), name)
                assert command is not None, f"README runs `tfrebuild {name}`, which does not exist ({line})"
                try:
                    command.make_context(name, list(rest), parent=click.Context(group, info_name="tfrebuild"))
                except (click.ClickException, UserError) as exc:
                    shown = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
                    pytest.fail(f"README command `tfrebuild {' '.join(args)}` does not parse: {shown}")
                seen += 1
    assert seen >= 6, f"only {seen} tfrebuild commands found in README.md's console blocks"
    # The Commands table: each synopsis names a command and options it has.
    cells = [
        re.split(r"(?<!\\)\|", line)[1] for line in README.read_text().splitlines() if line.startswith("| `tfrebuild ")
    ]
    rows = [re.findall(r"`(tfrebuild [^`]*)`", cell) for cell in cells]
    assert len(rows) >= 10, rows
    for row in rows:
        for synopsis in row:
            words = synopsis.split()
            command = group.get_command(click.Context(group), words[1])
            assert command is not None, f"the Commands table names `{synopsis}`, but there is no `{words[1]}`"
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis):
                assert option in known, (
                    f"the Commands table shows `{option}` for `{words[1]}`, which has no such option"
                )


def test_readme_first_block_is_the_install_and_the_main_job():
    """The first block installs apart (the script in this checkout) and runs the main job."""
    line = first_command()
    parts = _tfrebuild_parts(line)
    assert parts and parts[-1][0] == "upgrade" and "--yes" in parts[-1], line
    script = shlex.split(line)[1]
    assert (ROOT / script).is_file(), f"the README's first command runs {script}, which is not in the checkout"


# --------------------------------------------------------------------------- a fresh machine (real PyPI)


def _fresh_copy(dest: Path) -> None:
    """The checkout's files as a clone would have them (tracked and untracked-not-ignored, as they are now)."""
    listed = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


@pytest.mark.network
@pytest.mark.slow
def test_readme_first_command_on_a_fresh_machine(tmp_path):
    from tests.test_e2e_pypi import newest_release_for_this_python

    if shutil.which("python3", path=MACHINE_PATH) is None:
        pytest.skip(f"no python3 on the machine's default PATH {MACHINE_PATH}")
    clone, home, bindir = tmp_path / "clone", tmp_path / "home", tmp_path / "bin"
    for folder in (clone, home, bindir):
        folder.mkdir()
    _fresh_copy(clone)
    path = f"{bindir}:{MACHINE_PATH}"
    assert shutil.which("uv", path=path) is None and shutil.which("pipx", path=path) is None, "uv on the default PATH"
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "TFREBUILD_", "PYENV", "XDG_", "CONDA", "POETRY"))
        and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")
    }
    environ.update(HOME=str(home), PATH=path)  # pip's configuration (files, PIP_*) stays the machine's
    command = first_command()
    script = (
        f"set -e\ncd {shlex.quote(str(clone))}\n{command}\necho '=== rollback'\ntfrebuild rollback --yes\n"
        "tfrebuild history --json > history.json\n"
    )
    try:
        done = subprocess.run(["bash", "-c", script], env=environ, capture_output=True, text=True, timeout=3000)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-6000:]
        newest = newest_release_for_this_python("tensorflow-cpu")
        assert "created " in out and "from the bundled profile" in out, out[-4000:]
        assert f"to generation 2 (tensorflow-cpu {newest})" in out, out[-4000:]
        assert "Generation 1 is kept" in out and "pass --env PATH" in out, out[-4000:]
        assert f"linked {bindir / 'tfrebuild'}" in out, out[:4000]
        tail = out.split("=== rollback", 1)[1]
        assert "back from generation 2 to 1 (tensorflow-cpu 2.15.1" in tail, tail
        import json

        history = json.loads((clone / "history.json").read_text())
        gens = {g["number"]: g for g in history["rows"]}
        assert gens[1]["tensorflow"].endswith("2.15.1") and gens[2]["tensorflow"].endswith(str(newest)), gens
        assert gens[1]["current"] and gens[2]["previous"] and gens[2]["present"], gens
        # tfrebuild lives apart: its own venv under the empty HOME, not in the env it manages
        assert (home / ".local/share/tfrebuild/venv/bin/tfrebuild").exists()
        venv_python = clone / ".venv/bin/python"
        listing = subprocess.run(
            [str(venv_python), "-c", "import importlib.util as u; print(u.find_spec('rebuild'))"],
            capture_output=True,
            text=True,
            env={"PATH": MACHINE_PATH},
            cwd=home,
        )
        assert listing.stdout.strip() == "None", listing
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # the TensorFlow envs and the empty HOME's caches (GBs)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--to", "garbage"], "'garbage' is not a TensorFlow version"),
        (["--model", "no-such-model.keras"], "does not exist"),
        (["--index-url", "https://user:secret@mirror.invalid/simple"], "does not take --index-url"),
        (
            [
                "--extra-index-url",
                "https://mirror.invalid/simple",
                "--constraint",
                "c.txt",
                "--build-constraint",
                "c.txt",
            ],
            "does not take --extra-index-url, --constraint, --build-constraint",
        ),
    ],
)
def test_first_command_refuses_bad_input_before_creating_the_env(tmp_path, args, said):
    """``tfrebuild upgrade --yes`` with no env here builds ./.venv from the bundled profile, but only after the
    input that needs no env is checked; index options that build cannot take are refused, not dropped."""
    import sys

    (tmp_path / "c.txt").write_text("numpy<3\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    done = subprocess.run(
        [sys.executable, "-m", "rebuild", "upgrade", "--yes", "--offline", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and said in done.stderr, done.stderr + done.stdout
    assert "bundled profile" not in done.stdout and "secret" not in done.stdout + done.stderr
    assert not os.path.lexists(tmp_path / ".venv") and sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
