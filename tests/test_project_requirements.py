"""Requirement-file projects (issue 13, point 3): ``requirements.in`` + a ``requirements.txt`` compiled by
``uv pip compile``, in a real env made the way users make it (``python -m venv`` + ``pip install -r``, or
``uv venv`` + ``uv pip sync``), offline against the kit index. The real CLI runs in a subprocess.

After ``upgrade`` only the TensorFlow line of the ``.in`` differs, the ``.txt`` is what its own header's
command compiles (running it again changes nothing), with its header and hashes, and the env is exactly the
``.txt`` (``uv pip sync --dry-run`` and ``pip install -r`` change nothing); after ``rollback`` both files
are the old ones byte for byte and the env matches the old ``.txt``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import uv_bin
from tests.kit.cli import run_cli

from rebuild.project import requirements as reqfiles

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")

IN_TEXT = "# what the model needs\ntensorflow-cpu==2.15.1  # the one we ship with\n\nscipy\n"
TF_LINE = 1


def _run(cmd, env, cwd) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done


def _project(
    tmp_path: Path, kit_env, python: Path, *, hashes: bool, creator: str, in_text: str = IN_TEXT
) -> tuple[Path, Path]:
    """A project folder with requirements.in, a compiled requirements.txt and .venv installed from it."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "requirements.in").write_text(in_text)
    _run(
        [
            uv_bin(),
            "pip",
            "compile",
            "requirements.in",
            "-o",
            "requirements.txt",
            "--python-version",
            "3.11",
            *(["--generate-hashes"] if hashes else []),
        ],
        kit_env,
        root,
    )
    if creator == "venv":  # python -m venv + pip install -r requirements.txt
        _run([python, "-m", "venv", ".venv"], kit_env, root)
        _run([root / ".venv/bin/pip", "install", "-r", "requirements.txt"], kit_env, root)
    else:  # uv venv + uv pip sync requirements.txt
        _run([uv_bin(), "venv", "--python", python, ".venv"], kit_env, root)
        _run([uv_bin(), "pip", "sync", "requirements.txt", "--python", ".venv/bin/python"], kit_env, root)
    return root, root / ".venv"


def _dry_run(root: Path, env: Path, kit_env) -> str:
    done = _run(
        [uv_bin(), "pip", "sync", "--dry-run", "requirements.txt", "--python", env / "bin/python"], kit_env, root
    )
    return done.stderr


def _tf(env: Path, kit_env) -> str:
    return _run(
        [env / "bin/python", "-c", "import tensorflow; print(tensorflow.__version__)"], kit_env, env
    ).stdout.strip()


def _header_command(txt: str) -> list[str]:
    header = reqfiles.read_header(txt)
    assert not isinstance(header, str), header
    return ["uv", "pip", "compile", *header.args]


@pytest.mark.parametrize("creator,hashes", [("venv", True), ("uv", False)])
@pytest.mark.slow
def test_upgrade_edits_the_in_line_recompiles_the_txt_and_rollback_restores_both(
    tmp_path, kit_env, kit_index, require_python, creator, hashes
):
    python = require_python("3.11")
    root, env = _project(tmp_path, kit_env, python, hashes=hashes, creator=creator)
    old_in, old_txt = (root / "requirements.in").read_bytes(), (root / "requirements.txt").read_bytes()

    plan = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--json", cwd=root)
    assert plan.code == 0, plan
    project = plan.json()["plan"]["project"]
    assert project["manager"] == "requirements" and project["drivable"], project
    assert project["files"] == ["requirements.in", "requirements.txt"]
    assert "recompiled with `uv pip compile requirements.in -o requirements.txt" in project["text"], project
    assert ("hashes kept" in project["text"]) == hashes

    up = run_cli(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", cwd=root)
    assert up.code == 0, up
    assert "uv pip sync --dry-run requirements.txt: no changes" in up.out, up

    # the .in: its TensorFlow line moved, every other byte as it was
    new_in = (root / "requirements.in").read_text()
    old_lines, new_lines = old_in.decode().splitlines(keepends=True), new_in.splitlines(keepends=True)
    assert len(new_lines) == len(old_lines)
    assert [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b] == [TF_LINE]
    assert new_lines[TF_LINE] == "tensorflow-cpu==2.21.0  # the one we ship with\n"

    # the .txt: recompiled by its own header's command (header kept, hashes kept when it had them)
    new_txt = (root / "requirements.txt").read_text()
    assert new_txt.splitlines()[:2] == old_txt.decode().splitlines()[:2]
    assert reqfiles.pins(new_txt)["tensorflow-cpu"] == "2.21.0"
    pinned = [line for line in new_txt.splitlines() if "==" in line and not line.startswith(("#", " "))]
    assert pinned and all(line.endswith("\\") for line in pinned) == hashes, new_txt
    again = _run([uv_bin(), *_header_command(new_txt)[1:]], kit_env, root)  # the user's next compile
    assert (root / "requirements.txt").read_text() == new_txt, again.stderr

    # the env is exactly the .txt
    assert "Would make no changes" in _dry_run(root, env, kit_env)
    assert _tf(env, kit_env) == "2.21.0"
    if creator == "venv":  # pip stays, and `pip install -r` has nothing to do
        done = _run([env / "bin/pip", "install", "-r", "requirements.txt"], kit_env, root)
        assert "Successfully installed" not in done.stdout and "Uninstalling" not in done.stdout, done.stdout
    else:
        assert not list(env.glob("lib/python3.11/site-packages/pip-*.dist-info"))

    history = run_cli(kit_env, "history", "--env", env)
    assert "requirements.in: tensorflow-cpu==2.21.0" in history.out, history

    back = run_cli(kit_env, "rollback", "--env", env, "--yes", cwd=root)
    assert back.code == 0, back
    assert (root / "requirements.in").read_bytes() == old_in
    assert (root / "requirements.txt").read_bytes() == old_txt
    assert "Would make no changes" in _dry_run(root, env, kit_env)
    assert _tf(env, kit_env) == "2.15.1"
    assert not list(root.parent.glob(".proj.tfrebuild-*")), "the work folder beside the project is gone"


@pytest.mark.slow
def test_hand_edited_txt_is_the_starting_point_and_rollback_over_edits_is_refused_without_force(
    tmp_path, kit_env, kit_index, require_python
):
    root, env = _project(tmp_path, kit_env, require_python("3.11"), hashes=False, creator="uv")
    up = run_cli(
        kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--to", "2.18", "--yes", cwd=root
    )
    assert up.code == 0, up
    edited_in = (root / "requirements.in").read_text() + "# my note\n"
    (root / "requirements.in").write_text(edited_in)

    # upgrade starts from the edited files, says so, and the new generation's files keep the edit
    again = run_cli(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", cwd=root)
    assert again.code == 0, again
    assert "your edits since generation 2 (requirements.in: now # my note)" in " ".join(again.out.split()), again.out
    assert "# my note" in (root / "requirements.in").read_text()
    assert _tf(env, kit_env) == "2.21.0"
    back = run_cli(kit_env, "rollback", "--env", env, "--yes", cwd=root)  # to generation 2, with the edited .in
    assert back.code == 0, back
    assert (root / "requirements.in").read_text() == edited_in and _tf(env, kit_env) == "2.18.0"

    # rollback over hand edits would put older files back: refused under --yes, --force saves them first
    edited = (root / "requirements.txt").read_text() + "pandas==2.2.3\n"
    (root / "requirements.txt").write_text(edited)
    refused = run_cli(kit_env, "rollback", "--env", env, "--yes", cwd=root)
    assert refused.code == 1 and (root / "requirements.txt").read_text() == edited, refused
    assert "uv pip compile" in refused.err and "+pandas==2.2.3" in refused.err, refused  # this manager's tools
    forced = run_cli(kit_env, "rollback", "--env", env, "--yes", "--force", cwd=root)
    assert forced.code == 0, forced
    assert reqfiles.pins((root / "requirements.txt").read_text())["tensorflow-cpu"] == "2.21.0"
    saved = [p.read_text() for p in (env.parent / "..venv.tfrebuild" / "project-edits").glob("*/requirements.txt")]
    assert edited in saved, saved


@pytest.mark.slow
def test_hand_made_txt_is_not_driven_and_force_upgrades_the_env_alone(tmp_path, kit_env, kit_index, require_python):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "requirements.txt").write_text("tensorflow-cpu==2.15.1\nscipy\n")
    _run([uv_bin(), "venv", "--python", require_python("3.11"), ".venv"], kit_env, root)
    _run([uv_bin(), "pip", "install", "-r", "requirements.txt", "--python", ".venv/bin/python"], kit_env, root)
    env = root / ".venv"

    plan = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--json", cwd=root)
    project = plan.json()["plan"]["project"]
    assert project["manager"] == "requirements" and not project["drivable"], project
    assert "hand-written pins" in project["fix"] and "--force" in project["text"], project

    refused = run_cli(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", cwd=root)
    assert refused.code == 1, refused
    assert "pip install -r requirements.txt" in refused.err and "hand-written pins" in refused.err, refused
    assert _tf(env, kit_env) == "2.15.1"

    forced = run_cli(
        kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", "--force", cwd=root
    )
    assert forced.code == 0, forced
    assert _tf(env, kit_env) == "2.21.0"
    assert (root / "requirements.txt").read_text() == "tensorflow-cpu==2.15.1\nscipy\n"


def test_env_with_packages_the_txt_does_not_list_is_not_driven(tmp_path, kit_env, kit_index, require_python):
    root, env = _project(tmp_path, kit_env, require_python("3.11"), hashes=False, creator="uv")
    _run([uv_bin(), "pip", "install", "pandas==2.2.3", "--python", env / "bin/python"], kit_env, root)
    plan = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--json", cwd=root)
    project = plan.json()["plan"]["project"]
    assert not project["drivable"], project
    assert "pandas" in project["fix"] and "requirements.txt does not list" in project["fix"], project
    refused = run_cli(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--yes", cwd=root)
    assert refused.code == 1 and "pandas" in refused.err, refused


def test_header_reading():
    uv = reqfiles.read_header(
        "# This file was autogenerated by uv via the following command:\n"
        "#    uv pip compile --python-version 3.11 requirements.in -o requirements.txt "
        "--generate-hashes -c constraints.txt\nnumpy==1.26.4\n"
    )
    assert not isinstance(uv, str)
    assert (uv.tool, uv.inputs, uv.output, uv.python_version) == ("uv", ["requirements.in"], "requirements.txt", "3.11")
    pip_compile = reqfiles.read_header(
        "#\n# This file is autogenerated by pip-compile with Python 3.11\n"
        "# by the following command:\n#\n"
        "#    pip-compile --generate-hashes --output-file=requirements.txt "
        "requirements.in\n#\n"
    )
    assert not isinstance(pip_compile, str)
    assert (pip_compile.tool, pip_compile.inputs, pip_compile.output) == (
        "pip-compile",
        ["requirements.in"],
        "requirements.txt",
    )
    custom = reqfiles.read_header(
        "# This file was autogenerated by uv via the following command:\n#    make requirements\n"
    )
    assert isinstance(custom, str) and "make requirements" in custom
    assert isinstance(reqfiles.read_header("tensorflow==2.15.1\n"), str)
    by_uv = reqfiles.read_header(
        "# This file was autogenerated by uv via the following command:\n"
        "#    pip-compile --output-file=requirements.txt requirements.in\n"
    )
    assert not isinstance(by_uv, str) and by_uv.tool == "pip-compile"


def test_edit_in_changes_that_line_only():
    text = "-c constraints.txt\r\n  tensorflow-cpu >=2.15, <2.16 ; python_version >= '3.9'  # keep\r\nscipy\r\n"
    out = reqfiles.edit_in(
        text,
        "tensorflow-cpu >=2.15, <2.16 ; python_version >= '3.9'",
        "tensorflow-cpu >=2.15, <2.19 ; python_version >= '3.9'",
    )
    assert out == "-c constraints.txt\r\n  tensorflow-cpu >=2.15, <2.19 ; python_version >= '3.9'  # keep\r\nscipy\r\n"
    assert (
        json.dumps(reqfiles.pins("numpy==1.26.4 \\\n    --hash=sha256:ab\n# via x\nscipy\n"))
        == '{"numpy": "1.26.4", "scipy": ""}'
    )


PIP_COMPILE_HEADER = (
    "#\n# This file is autogenerated by pip-compile with Python 3.11\n# by the following command:\n#\n"
    "#    pip-compile --output-file=requirements.txt requirements.in\n#\n"
)


@pytest.mark.slow
def test_pip_compile_header_is_recompiled_by_uv_with_its_command(tmp_path, kit_env, kit_index, require_python):
    """A pip-tools project (header written as pip-compile writes it; pip-tools is not in the offline kit)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "requirements.in").write_text("tensorflow-cpu~=2.15.0\nscipy\n")
    _run(
        [uv_bin(), "pip", "compile", "requirements.in", "-o", "body.txt", "--no-header", "--python-version", "3.11"],
        kit_env,
        root,
    )
    (root / "requirements.txt").write_text(PIP_COMPILE_HEADER + (root / "body.txt").read_text())
    (root / "body.txt").unlink()
    _run([uv_bin(), "venv", "--python", require_python("3.11"), ".venv"], kit_env, root)
    _run([uv_bin(), "pip", "sync", "requirements.txt", "--python", ".venv/bin/python"], kit_env, root)
    env, old_txt = root / ".venv", (root / "requirements.txt").read_bytes()

    plan = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--to", "2.18", "--json")
    project = plan.json()["plan"]["project"]
    assert project["drivable"] and "the header and layout become uv's" in project["text"], project
    up = run_cli(kit_env, "upgrade", "--env", env, "--offline", "--find-links", kit_index, "--to", "2.18", "--yes")
    assert up.code == 0, up
    assert (root / "requirements.in").read_text() == "tensorflow-cpu~=2.18.0\nscipy\n"
    txt = (root / "requirements.txt").read_text()
    assert txt.splitlines()[1] == "#    pip-compile --output-file=requirements.txt requirements.in", txt
    assert "Would make no changes" in _dry_run(root, env, kit_env)
    again = run_cli(kit_env, "plan", "--env", env, "--offline", "--find-links", kit_index, "--json")
    assert again.json()["plan"]["project"]["drivable"], again  # uv's header with pip-compile's command
    back = run_cli(kit_env, "rollback", "--env", env, "--yes")
    assert back.code == 0 and (root / "requirements.txt").read_bytes() == old_txt, back
