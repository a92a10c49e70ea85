"""Issue 20 on a real stack from PyPI, with this machine's pip/uv configuration in force (its constraints file,
``file://`` mirrors and find-links are used by pip to build the env and by tfrebuild to upgrade it).

tensorflow-cpu 2.14.1 + tensorflow-addons 0.23.0 (end of life: TensorFlow < 2.16, Keras 2 internals) +
tensorflow-probability 0.22.1 (paired with TF 2.14 by its release notes; its metadata names no TensorFlow). The
expert's answer: TensorFlow 2.15.1 with tensorflow-probability 0.23.0, tensorflow-addons kept. The default
``tfrebuild upgrade --yes`` must land there, both packages must work afterwards (one real call each), and rollback
must give back exactly the env that was there. tensorflow-addons' CUDA-linked op libraries fail to load under
tensorflow-cpu already before the upgrade: the op-library check says so and does not block.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.network, pytest.mark.slow]

STACK = ["tensorflow-cpu==2.14.1", "tensorflow-addons", "tensorflow-probability==0.22.1"]
CALLS = """
import json
import tensorflow as tf, tensorflow_probability as tfp, tensorflow_addons as tfa
sample = tfp.distributions.Normal(0.0, 1.0).sample(3, seed=1)
gelu = tfa.activations.gelu(tf.constant([0.0, 1.0])).numpy().tolist()
print(json.dumps({"tf": tf.__version__, "tfp": tfp.__version__, "tfa": tfa.__version__,
                  "sample": list(sample.shape), "gelu": gelu}))
"""


def _reachable() -> str | None:
    try:
        urllib.request.urlopen(urllib.request.Request("https://pypi.org/simple/", method="HEAD"), timeout=5).close()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip"
        return f"PyPI is unreachable ({type(exc).__name__}: {exc})"


def _environ() -> dict[str, str]:
    """This machine's configuration in force (pip.conf, PIP_*/UV_* as set here); only the venv markers go."""
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    return environ


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = _reachable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("real-stack")
    env = root / "tfenv"
    environ = _environ()
    for cmd in ([sys.executable, "-m", "venv", str(env)],
                [str(env / "bin" / "pip"), "install", "-q", *STACK]):
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"could not build the real env with pip: {proc.stderr.strip()[-300:]}")
    yield env
    shutil.rmtree(root, ignore_errors=True)  # real TensorFlow envs are large: every generation goes


def _freeze(env: Path) -> list[str]:
    proc = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "freeze", "--all"], env=_environ(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.splitlines())


def _tfrebuild(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rebuild", *args], env=_environ(), capture_output=True, text=True,
                          timeout=1800)


def test_default_upgrade_lands_where_an_expert_would_and_rolls_back_exactly(stack: Path):
    before = _freeze(stack)
    plan = _tfrebuild("plan", "--env", str(stack), "--json")
    assert plan.returncode == 0, plan.stderr
    expected = json.loads(plan.stdout)["plan"]
    assert expected["tf_new"].startswith("2.15."), expected  # named without building
    assert "tensorflow-addons 0.23.0 works with TensorFlow below 2.16 only" in expected["landing_note"]

    res = _tfrebuild("upgrade", "--env", str(stack), "--yes", "--json")
    assert res.returncode == 0, res.stderr[-4000:]
    doc = json.loads(res.stdout)
    assert doc["plan"]["tf_new"] == expected["tf_new"]
    changes = {c["name"]: c for c in doc["plan"]["changes"]}
    assert (changes["tensorflow-probability"]["old"], changes["tensorflow-probability"]["new"]) == ("0.22.1", "0.23.0")
    assert "pairs with TensorFlow 2.15" in changes["tensorflow-probability"]["reason"]
    assert "tensorflow-addons" not in changes  # kept: its last release supports 2.15
    checks = {c["name"]: c for c in doc["checks"]}
    assert all(c["ok"] for c in doc["checks"]), doc["checks"]
    ops = [c for name, c in checks.items() if name.startswith("op libraries load: tensorflow-addons")]
    assert ops and "already failing before the upgrade" in ops[0]["name"], checks.keys()
    assert [t["passed"] for t in doc["tries"]] == [True]

    calls = subprocess.run([str(stack / "bin" / "python"), "-c", CALLS], env=_environ(), capture_output=True,
                           text=True, timeout=600)
    assert calls.returncode == 0, calls.stderr[-3000:]
    got = json.loads(calls.stdout.strip().splitlines()[-1])
    assert (got["tf"], got["tfp"], got["tfa"], got["sample"]) == (expected["tf_new"], "0.23.0", "0.23.0", [3])
    assert got["gelu"][0] == 0.0 and 0.84 < got["gelu"][1] < 0.85

    back = _tfrebuild("rollback", "--env", str(stack), "--yes")
    assert back.returncode == 0, back.stderr
    assert _freeze(stack) == before
