"""Real PyPI, issue 13: a uv project made as a user makes it, upgraded to the newest TensorFlow and rolled back.

``uv init --app --no-package`` then ``uv add tensorflow-cpu==2.15.1 scipy==1.11.4`` (from PyPI, the
project's default index), ``tfrebuild upgrade --yes`` in the project, then the project's own tool is the
judge: ``uv run --locked python -c "import tensorflow as tf; print(tf.__version__)"`` prints the new
version and installs nothing; ``tfrebuild rollback --yes``, and it prints 2.15.1 again. The machine's own
pip and uv configuration stays in force (tfrebuild's plan reads pip's; uv reads the project's and uv's).
Skipped, with the reason, when PyPI does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from tests.kit.venvs import find_python
from tests.test_e2e_pypi import TF_MIN_NEW, run, tfrebuild
from rebuild.util.uv import uv_bin

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels assumed"),
]

TF_CHECK = "import tensorflow as tf; print(tf.__version__)"


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True, env=env).stdout


def test_uv_project_upgrade_and_rollback_with_real_tensorflow(pypi_reachable, tmp_path):
    python = find_python("3.11")
    if python is None:
        pytest.skip("Python 3.11 is not installed here")
    uv = uv_bin()
    run([uv, "init", "--app", "--no-package", "--python", python, "--no-python-downloads", "p"], cwd=tmp_path)
    root = tmp_path / "p"
    run([uv, "add", "--no-python-downloads", "tensorflow-cpu==2.15.1", "scipy==1.11.4"], cwd=root, timeout=1800)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "uv init + uv add")

    # uv locks for every Python requires-python admits (">=3.11": 3.14 too), where scipy==1.11.4 (numpy<1.28) and
    # the newest TensorFlow's ml-dtypes (numpy>=2.1 on Python >= 3.13) meet no solution: the plan says so, names
    # the newest release that does lock, and what to change. Do what it says, as a user would.
    plan = tfrebuild("plan", "--to", "latest", "--json", cwd=root, timeout=1800).json()["plan"]
    print(f"\n$ tfrebuild plan --to latest   (TensorFlow {plan['tf_new']})\n" + "\n".join(plan["notes"]))
    if Version(plan["tf_new"]) < TF_MIN_NEW:
        assert any("cannot be locked for every Python" in n and "requires-python" in n for n in plan["notes"]), plan
        text = (root / "pyproject.toml").read_text()
        (root / "pyproject.toml").write_text(
            text.replace('requires-python = ">=3.11"', 'requires-python = ">=3.11,<3.13"')
        )
        run([uv, "lock"], cwd=root, timeout=600)
        git(root, "commit", "-qam", "requires-python: the Pythons we use")
    before = {n: (root / n).read_bytes() for n in ("pyproject.toml", "uv.lock")}

    up = tfrebuild("upgrade", "--to", "latest", "--yes", cwd=root, timeout=1800)
    done = run([uv, "run", "--locked", "python", "-c", TF_CHECK], cwd=root, timeout=600)
    new = Version(done.stdout.strip().splitlines()[-1])
    assert new >= TF_MIN_NEW, up
    assert "Installed" not in done.stderr and "Uninstalled" not in done.stderr, done.stderr
    check = run([uv, "sync", "--locked", "--check"], cwd=root)
    assert "Would make no changes" in check.stderr, check.stderr
    diff = git(root, "diff", "--", "pyproject.toml")
    assert f'-    "tensorflow-cpu==2.15.1",\n+    "tensorflow-cpu=={new}",' in diff, diff
    assert sorted(git(root, "status", "--porcelain", "--untracked-files=all").splitlines()) == [
        " M pyproject.toml",
        " M uv.lock",
    ]
    print(f"\n$ tfrebuild upgrade --to latest --yes\n{up.out[-3000:]}\n$ git diff -- pyproject.toml\n{diff}")

    back = tfrebuild("rollback", "--yes", cwd=root)
    done = run([uv, "run", "--locked", "python", "-c", TF_CHECK], cwd=root, timeout=600)
    assert done.stdout.strip().splitlines()[-1] == "2.15.1", back
    assert "Installed" not in done.stderr, done.stderr
    assert {n: (root / n).read_bytes() for n in before} == before
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    print(f"$ tfrebuild rollback --yes\n{back.out}")
