"""Issue 20 on real stacks from PyPI, with this machine's pip/uv configuration in force (its constraints file,
``file://`` mirrors and find-links are used by pip to build the env and by tfrebuild to upgrade it).

tensorflow-cpu 2.14.1 + tensorflow-addons 0.23.0 (end of life: TensorFlow < 2.16, Keras 2 internals) +
tensorflow-probability 0.22.1 (paired with TF 2.14 by its release notes; its metadata names no TensorFlow). The
expert's answer: TensorFlow 2.15.1 with tensorflow-probability 0.23.0, tensorflow-addons kept. The default
``tfrebuild upgrade --yes`` must land there, both packages must work afterwards (one real call each), and rollback
must give back exactly the env that was there. tensorflow-addons' CUDA-linked op libraries fail to load under
tensorflow-cpu already before the upgrade: the op-library check says so and does not block.

tensorflow 2.18.0 + tensorflow-decision-forests 1.11.0 (which pins tensorflow==2.18.0; its newest, 1.12.0, pins
==2.19.0): the expert's answer is TensorFlow 2.19.0 with tfdf 1.12.0 and tf-keras 2.19. 2.21, 2.20 and 2.19.1 do not
resolve, so the default upgrade tries them without building and lands on 2.19.0.
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
from packaging.version import Version

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
    for cmd in ([sys.executable, "-m", "venv", str(env)], [str(env / "bin" / "pip"), "install", "-q", *STACK]):
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"could not build the real env with pip: {proc.stderr.strip()[-300:]}")
    yield env
    shutil.rmtree(root, ignore_errors=True)  # real TensorFlow envs are large: every generation goes


def _freeze(env: Path) -> list[str]:
    proc = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "freeze", "--all"],
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.splitlines())


def _tfrebuild(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rebuild", *args], env=_environ(), capture_output=True, text=True, timeout=1800
    )


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

    calls = subprocess.run(
        [str(stack / "bin" / "python"), "-c", CALLS], env=_environ(), capture_output=True, text=True, timeout=600
    )
    assert calls.returncode == 0, calls.stderr[-3000:]
    got = json.loads(calls.stdout.strip().splitlines()[-1])
    assert (got["tf"], got["tfp"], got["tfa"], got["sample"]) == (expected["tf_new"], "0.23.0", "0.23.0", [3])
    assert got["gelu"][0] == 0.0 and 0.84 < got["gelu"][1] < 0.85

    back = _tfrebuild("rollback", "--env", str(stack), "--yes")
    assert back.returncode == 0, back.stderr
    assert _freeze(stack) == before


TFDF_CALL = """
import json, numpy as np
import tensorflow as tf, tf_keras, tensorflow_decision_forests as tfdf
x = {"f": np.arange(20, dtype="float32")}
y = (np.arange(20) % 2).astype("int64")
model = tfdf.keras.RandomForestModel(num_trees=3, verbose=0)
model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(20), verbose=0)
print(json.dumps({"tf": tf.__version__, "tfdf": tfdf.__version__, "tf_keras": tf_keras.__version__,
                  "rows": int(model.predict(tf.data.Dataset.from_tensor_slices(x).batch(20), verbose=0).shape[0])}))
"""


@pytest.fixture(scope="module")
def forests(tmp_path_factory):
    reason = _reachable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("real-forests")
    env = root / "tfenv"
    environ = _environ()
    for cmd in (
        [sys.executable, "-m", "venv", str(env)],
        [str(env / "bin" / "pip"), "install", "-q", "tensorflow==2.18.0", "tensorflow-decision-forests==1.11.0"],
    ):
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"could not build the real env with pip: {proc.stderr.strip()[-300:]}")
    yield env
    shutil.rmtree(root, ignore_errors=True)


def _imports(env: Path, name: str) -> bool:
    return (
        subprocess.run(
            [str(env / "bin" / "python"), "-B", "-c", f"import {name}"],
            env=_environ(),
            capture_output=True,
            text=True,
            timeout=600,
        ).returncode
        == 0
    )


def test_default_upgrade_searches_past_releases_that_do_not_resolve(forests: Path):
    before = _freeze(forests)
    worked = _imports(forests, "tensorflow_decision_forests")  # ydf 0.16 + protobuf 5.29 fail already (2026-12)
    res = _tfrebuild("upgrade", "--env", str(forests), "--yes", "--json")
    assert res.returncode == 0, res.stderr[-4000:]
    doc = json.loads(res.stdout)
    assert doc["plan"]["tf_new"] == "2.19.0"
    tries = [(t["target"], t["passed"], t["built"]) for t in doc["tries"]]
    assert tries[-1] == ("tensorflow 2.19.0", True, True), tries
    assert [t for t in tries[:-1] if t[2]] == [], tries  # the newer ones did not resolve: nothing built for them
    assert "tensorflow 2.21.0" in tries[0][0] and all("does not resolve" in t["why"] for t in doc["tries"][:-1])
    changes = {c["name"]: (c["old"], c["new"]) for c in doc["plan"]["changes"]}
    assert changes["tensorflow-decision-forests"] == ("1.11.0", "1.12.0")
    assert changes["tf-keras"][1].startswith("2.19.")
    checks = {c["name"]: c for c in doc["checks"]}
    assert all(c["ok"] for c in doc["checks"]), doc["checks"]
    ops = [n for n in checks if n.startswith("op libraries load: tensorflow-decision-forests")]
    assert ops, checks.keys()  # inference.so and training.so, found by their DT_NEEDED libtensorflow_framework
    # ydf is held below 0.16 for TensorFlow 2.19 (the companion table: 0.16 needs protobuf >= 6.31.1), so the
    # upgrade also repairs an env that pip left with ydf 0.16 + protobuf 5.29 (its import failed before: `worked`)
    assert Version(changes.get("ydf", ("", "0.15"))[1]) < Version("0.16"), changes.get("ydf")
    calls = subprocess.run(
        [str(forests / "bin" / "python"), "-c", TFDF_CALL], env=_environ(), capture_output=True, text=True, timeout=900
    )
    assert calls.returncode == 0, (worked, calls.stderr[-3000:])
    got = json.loads(calls.stdout.strip().splitlines()[-1])
    assert (got["tf"], got["tfdf"], got["rows"]) == ("2.19.0", "1.12.0", 20)
    back = _tfrebuild("rollback", "--env", str(forests), "--yes")
    assert back.returncode == 0, back.stderr
    assert _freeze(forests) == before
