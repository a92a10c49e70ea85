"""Real PyPI, this machine's own pip configuration (not switched off): an env with an editable project that
depends on tensorflow-cpu (2.15.1 installed) and a package from a local wheel file, upgraded to the latest TensorFlow;
the project stays editable from its folder and the wheel comes from its file, never from the index by name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_e2e_pypi import clean_environ, run, tfrebuild

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX venv layout and Linux wheels assumed"),
]


def _project(root: Path, name: str, deps: list[str]) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("VALUE = 1\n")
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.1.0"
        dependencies = {json.dumps(deps)}
        [tool.setuptools]
        packages = ["{name}"]
        """)
    )
    return root


def test_editable_project_and_local_wheel_survive_an_upgrade_to_latest(pypi_reachable, tmp_path) -> None:
    env = tmp_path / "tf"
    run([sys.executable, "-m", "venv", env], cwd=tmp_path, timeout=300)
    pip = [env / "bin" / "pip", "install", "--disable-pip-version-check", "-q"]
    project = _project(tmp_path / "mymodel", "mymodel", ["tensorflow-cpu"])
    wheel_src = _project(tmp_path / "mywheel", "mywheel", [])
    run(
        [
            env / "bin" / "pip",
            "wheel",
            "--disable-pip-version-check",
            "-q",
            "--no-deps",
            "-w",
            tmp_path / "dist",
            wheel_src,
        ],
        cwd=tmp_path,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("mywheel-*.whl")
    run(pip + ["tensorflow-cpu==2.15.1", "-e", project, wheel], cwd=tmp_path, timeout=1800)

    res = tfrebuild("upgrade", "--env", env, "--to", "latest", "--yes", "--json", cwd=tmp_path, timeout=1800)
    doc = json.loads(res.out)
    assert doc["changed"] is True and doc["plan"]["tf_new"] != "2.15.1", doc["plan"]
    check = subprocess.run(
        [
            env / "bin" / "python",
            "-c",
            "import mymodel, mywheel, tensorflow as tf; print(mymodel.__file__, tf.__version__)",
        ],
        capture_output=True,
        text=True,
        env=clean_environ(),
        timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.split()[0] == str(project / "mymodel" / "__init__.py"), check.stdout
    (info,) = env.glob("lib/python3.*/site-packages/mymodel-*.dist-info")
    assert json.loads((info / "direct_url.json").read_text()) == {
        "url": project.as_uri(),
        "dir_info": {"editable": True},
    }
    (winfo,) = env.glob("lib/python3.*/site-packages/mywheel-*.dist-info")
    assert json.loads((winfo / "direct_url.json").read_text())["url"] == wheel.as_uri()
