"""Issue 24: the model-parity gate, offline against the test kit.

The kit's fake TensorFlow has a tiny model format (tests/kit/catalog.py ``_TF_FAKEMODEL``): a JSON linear model that
Keras files and SavedModel folders hold, with a TensorFlow-version-dependent refusal (``min_tf``/``max_tf``) and
numeric drift (``drift``). Keras 3 (the kit's TF >= 2.16) refuses Keras-2 SavedModel folders in ``load_model``, as
the real one does; tf-keras, ``tf.saved_model.load`` and ``keras.layers.TFSMLayer`` load them. Real uv, real venvs,
the real ``_models.py`` in each env's interpreter.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from rebuild.core import models
from rebuild.env import profile as prof
from rebuild.store.location import state_dir
from tests.kit.cli import run_cli as cli
from tests.kit.cli import tree_state

W = [[0.5, -1.0], [2.0, 0.25], [1.5, 1.0]]
B = [0.1, -0.2]


def fake_model(path: Path, **extra) -> Path:
    """A Keras file (.h5/.keras) holding the kit's linear model."""
    path.write_text(json.dumps({"fake_model": 1, "weights": W, "bias": B, **extra}))
    return path


def keras2_saved_model(folder: Path, **extra) -> Path:
    """A SavedModel folder as Keras 2 writes it (keras_metadata.pb beside saved_model.pb)."""
    folder.mkdir()
    (folder / "saved_model.pb").write_text(json.dumps({"fake_model": 1, "weights": W, "bias": B, **extra}))
    (folder / "keras_metadata.pb").write_text("")
    (folder / "variables").mkdir()
    return folder


def files_of(*paths: Path) -> dict:
    return {str(p): tree_state(p) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


@pytest.fixture
def envs(make_venv):
    """The current env (TF 2.15.1, Keras 2) and new ones (2.18.0 and 2.21.0, Keras 3), like upgrade's staging."""
    return {v: make_venv(f"tf{v}", [f"tensorflow-cpu=={v}"]) for v in ("2.15.1", "2.18.0", "2.21.0")}


def gate_rows(current, new, tf_new, listed, tmp_path, kit_index=None, **gate):
    index = prof.Index(find_links=[str(kit_index)], no_index=True) if kit_index else None
    g = models.Gate(listed, current=current, index=index, offline=True, timeout=120, **gate)
    g.start(tmp_path / "op" / "models")
    return g.check(new, tf_new)


def test_auto_loader_picks_what_user_code_uses(tmp_path):
    assert models.auto_loader(fake_model(tmp_path / "m.h5")) == "keras"
    assert models.auto_loader(fake_model(tmp_path / "m.keras")) == "keras"
    assert models.auto_loader(keras2_saved_model(tmp_path / "k2")) == "keras"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "saved_model.pb").write_text("{}")
    assert models.auto_loader(plain) == "saved_model"
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    assert models.auto_loader(tmp_path / "m.tflite") == "tflite"
    assert models.auto_loader(tmp_path / "notes.txt") == ""


def test_reference_then_match_within_tolerance_nothing_written_beside(envs, tmp_path):
    """Same answers (a drift of 1e-7 is within float32 tolerance): match, with the differences measured."""
    model = fake_model(tmp_path / "m.h5", drift={"2.18": 1e-7})
    before = files_of(model, envs["2.15.1"], envs["2.18.0"])
    (row,) = gate_rows(envs["2.15.1"], envs["2.18.0"], "2.18.0", [prof.SmokeModel(str(model))], tmp_path)
    assert row.verdict == "match", models.describe(row)
    assert row.loader == "keras" and row.outputs_compared == 1 and row.ok
    assert 0 < row.max_abs < 1e-6 and row.load_seconds is not None and row.reference_load_seconds is not None
    assert row.outputs[0].shape == [8, 2]  # seeded inputs: batch of 8 from the signature (None, 3)
    assert files_of(model, envs["2.15.1"], envs["2.18.0"]) == before, "nothing written in an env or beside the model"
    kept = sorted(p.name for p in (tmp_path / "op" / "models").iterdir())
    assert len(kept) == 1 and {"inputs.json", "reference.json", "reference-meta.json", "staged.json"} <= {
        p.name for p in (tmp_path / "op" / "models" / kept[0]).iterdir()
    }


def test_drift_beyond_tolerance_differs_and_names_the_output(envs, tmp_path):
    model = fake_model(tmp_path / "m.h5", drift={"2.18": 0.5})
    (row,) = gate_rows(envs["2.15.1"], envs["2.18.0"], "2.18.0", [prof.SmokeModel(str(model))], tmp_path)
    assert row.verdict == "differs" and not row.ok
    assert row.max_abs == pytest.approx(0.5, rel=1e-6)
    text = models.describe(row)
    assert "output_0 [8, 2]: largest difference abs 0.5" in text and "outside the tolerance" in text
    # a looser tolerance in [[smoke.models]] lets the same drift pass
    (loose,) = gate_rows(
        envs["2.15.1"], envs["2.18.0"], "2.18.0", [prof.SmokeModel(str(model), atol=1.0)], tmp_path / "loose"
    )
    assert loose.verdict == "match"


def test_new_env_refuses_with_innermost_line_and_keras2_retry_fails_too(envs, tmp_path, kit_index):
    """A refusal that is not Keras 3's: the retry with Keras 2 kept is tried and reported as failing."""
    model = fake_model(tmp_path / "m.h5", max_tf="2.15")
    (row,) = gate_rows(
        envs["2.15.1"], envs["2.21.0"], "2.21.0", [prof.SmokeModel(str(model))], tmp_path, kit_index=kit_index
    )
    assert row.verdict == "does not load" and row.stage == "load"
    assert row.error.startswith("ValueError: Unable to load") and "removed after TensorFlow 2.15" in row.error
    assert row.keras2_passed is False and [a.way for a in row.tried] == [
        "keras 2 kept (tf-keras, TF_USE_LEGACY_KERAS=1)"
    ]


def test_old_env_cannot_load_is_skipped_not_blamed(envs, tmp_path):
    model = fake_model(tmp_path / "m.h5", min_tf="2.18")
    (row,) = gate_rows(envs["2.15.1"], envs["2.18.0"], "2.18.0", [prof.SmokeModel(str(model))], tmp_path)
    assert row.verdict == "skipped" and row.ok
    assert "the current env cannot load it either" in row.reason and "FakeGelu2.18" in row.reason


def test_keras2_saved_model_refused_by_keras3_ways_out_tried(envs, tmp_path, kit_index):
    """Keras 3 refuses a Keras-2 SavedModel: Keras 2 kept (tf-keras fetched beside, not into the env),
    tf.saved_model.load and TFSMLayer are each tried and pass; the gate still blocks (the code the user runs fails)."""
    folder = keras2_saved_model(tmp_path / "k2model")
    before = files_of(envs["2.21.0"])
    (row,) = gate_rows(
        envs["2.15.1"], envs["2.21.0"], "2.21.0", [prof.SmokeModel(str(folder))], tmp_path, kit_index=kit_index
    )
    assert row.verdict == "does not load" and not row.ok and "File format not supported" in row.error
    assert row.keras.startswith("keras 3")
    assert [(a.way, a.ok) for a in row.tried] == [
        ("keras 2 kept (tf-keras, TF_USE_LEGACY_KERAS=1)", True),
        ("tf.saved_model.load", True),
        ("keras.layers.TFSMLayer", True),
    ]
    assert row.keras2_passed is True
    assert "upgrade with --keras legacy" in models.describe(row)
    assert files_of(envs["2.21.0"]) == before, "the retry's tf-keras is not installed into the env"
    assert (tmp_path / "op" / "models" / "tf-keras" / "tf_keras").is_dir()


def test_a_crash_is_that_models_answer_and_the_others_still_run(envs, tmp_path):
    """All models of an env run in one process; one that kills it gets the crash, the next ones a new process."""
    crash = fake_model(tmp_path / "crash.h5", crash_tf="2.18")
    fine = fake_model(tmp_path / "fine.h5")
    rows = gate_rows(
        envs["2.15.1"], envs["2.18.0"], "2.18.0", [prof.SmokeModel(str(crash)), prof.SmokeModel(str(fine))], tmp_path
    )
    assert [r.verdict for r in rows] == ["does not load", "match"]
    assert rows[0].stage == "process" and "Segmentation fault" in rows[0].error


def test_plain_saved_model_through_tf_saved_model_load(envs, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "saved_model.pb").write_text(json.dumps({"fake_model": 1, "weights": W, "bias": B}))
    (row,) = gate_rows(envs["2.15.1"], envs["2.21.0"], "2.21.0", [prof.SmokeModel(str(plain))], tmp_path)
    assert row.loader == "saved_model" and row.verdict == "match" and row.max_abs == 0.0


def test_profile_models_round_trip_and_validation(tmp_path):
    p = prof.Profile()
    p.smoke.models = [
        prof.SmokeModel("/m/a.h5"),
        prof.SmokeModel("/m/sm", inputs="/m/x.npz", loader="saved_model", rtol=1e-3, atol=0, imports=["mypkg.layers"]),
    ]
    assert prof.loads(prof.dumps(p)) == p
    bad = [
        ('path = "rel/a.h5"', "an absolute path"),
        ('path = "/a.h5"\nloader = "onnx"', "one of auto"),
        ('path = "/a.h5"\nrtol = -1', "a number of 0 or more"),
        ('path = "/a.h5"\ninputs = "/x.csv"', ".npy or .npz"),
        ('path = "/a.h5"\nimports = ["os; rm"]', "a module name"),
    ]
    for body, words in bad:
        with pytest.raises(Exception) as info:
            prof.loads(f"schema = 1\n[[smoke.models]]\n{body}\n")
        assert words in str(getattr(info.value, "message", info.value)), body


def test_foreign_profile_models_and_their_imports_need_consent():
    """Loading a model can run code (a Keras-2 Lambda layer, a SavedModel's file ops): a foreign profile's models
    need --allow-commands like its commands, and so do their imports."""
    from rebuild.core import consent

    p = prof.Profile()
    assert consent.requests(p)["commands"] == []
    p.smoke.models = [prof.SmokeModel("/m/a.h5")]
    assert consent.requests(p)["commands"] == ["model to load: /m/a.h5"]
    p.smoke.models.append(prof.SmokeModel("/m/b.h5", imports=["mypkg.layers"]))
    assert consent.requests(p)["commands"] == [
        "model to load: /m/a.h5",
        "model to load: /m/b.h5",
        "model imports (/m/b.h5): mypkg.layers",
    ]
    with pytest.raises(Exception) as info:
        consent.check(
            p, "/x/foreign.toml", trusted=False, allowed=consent.Allowed(), kinds=("commands",), command="upgrade"
        )
    assert "--allow-commands" in info.value.hint and "model to load: /m/a.h5" in info.value.details
    consent.check(
        p,
        "/x/foreign.toml",
        trusted=False,
        allowed=consent.Allowed(commands=True),
        kinds=("commands",),
        command="upgrade",
    )


# --------------------------------------------------------------------------- through the CLI


def upgrade(kit_env, kit_index, venv, *extra, overrides=None):
    args = ("upgrade", "--env", venv, "--offline", "--find-links", str(kit_index), "--yes", "--json")
    return cli(kit_env, *args, *extra, overrides=overrides)


def test_upgrade_blocked_by_keras3_refusal_then_passes_with_keras_legacy(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    folder = keras2_saved_model(tmp_path / "k2model")
    h5 = fake_model(tmp_path / "m.h5", drift={"2.21": 1e-7})
    before = tree_state(venv)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.21", "--model", str(folder), "--model", str(h5))
    assert res.code == 1, str(res)
    doc = res.json()
    assert (
        "Your environment was not changed" in doc["error"] and f"model {folder} (keras): does not load" in doc["error"]
    )
    assert "File format not supported" in doc["details"] and "tried keras 2 kept" in doc["details"]
    rows = {r["path"]: r for r in doc["models"]}
    assert rows[str(folder)]["keras2_passed"] is True and rows[str(h5)]["verdict"] == "match"
    assert tree_state(venv) == before and not state_dir(venv).exists()

    ok = upgrade(
        kit_env, kit_index, venv, "--to", "2.21", "--keras", "legacy", "--model", str(folder), "--model", str(h5)
    )
    assert ok.code == 0, str(ok)
    rows = {r["path"]: r for r in ok.json()["models"]}
    assert rows[str(folder)]["verdict"] == "match" and rows[str(folder)]["keras"].startswith("tf_keras 2.21")
    assert rows[str(h5)]["verdict"] == "match" and rows[str(h5)]["outputs_compared"] == 1
    # the reference answers ran in the old env beside the new env's checks: the model check waited for a part of
    # them only
    side = ok.json()["overlap"]["model_reference"]
    assert 0 <= side["waited_seconds"] < side["seconds"], side
    assert {"build", "checks", "models"} <= set(ok.json()["stages"]), ok.json()["stages"]
    gen = ok.json()["generation"]
    kept = prof.load(state_dir(venv) / "generations" / str(gen) / "profile.toml").smoke.models
    assert sorted(m.path for m in kept) == sorted([str(folder), str(h5)]), "carried forward in the profile"
    hist = cli(kit_env, "history", "--env", venv, "--json")
    by_gen = {r["number"]: r["models"] for r in hist.json()["rows"]}
    assert by_gen[gen] == "2 models: 2 match" and by_gen[1] == ""
    text = cli(kit_env, "history", "--env", venv)
    assert "Model-checked before the swap" in text.out and "2 models: 2 match" in text.out

    # rollback runs no model; `rollback --check import` to a model-checked generation loads them
    back = cli(kit_env, "rollback", "--env", venv, "--yes", "--json")
    assert back.code == 0, str(back)
    assert not any(c["name"].startswith("model ") for c in back.json()["checks"])
    again = cli(kit_env, "rollback", "--env", venv, "--yes", "--json", "--check", "import")
    assert again.code == 0, str(again)
    loaded = [c for c in again.json()["checks"] if c["name"].startswith("model ")]
    assert len(loaded) == 2 and all(c["ok"] and c["name"].endswith(": loads") for c in loaded), loaded


def test_upgrade_text_prints_one_row_per_model(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    h5 = fake_model(tmp_path / "m.h5")
    res = cli(
        kit_env,
        "upgrade",
        "--env",
        venv,
        "--offline",
        "--find-links",
        str(kit_index),
        "--yes",
        "--to",
        "2.18",
        "--model",
        str(h5),
        overrides={"COLUMNS": "250"},
    )
    assert res.code == 0, str(res)
    line = next(x for x in res.out.splitlines() if str(h5) in x and "│" in x)
    assert "keras" in line and "match" in line and "s │" in line


def test_bad_model_path_is_refused_before_anything(make_venv, kit_env, kit_index, tmp_path):
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    res = upgrade(kit_env, kit_index, venv, "--model", str(tmp_path / "nope.h5"))
    assert res.code == 2 and "does not exist" in res.json()["error"]
    (tmp_path / "notes.txt").write_text("x")
    res = upgrade(kit_env, kit_index, venv, "--model", str(tmp_path / "notes.txt"))
    assert res.code == 2 and "not a model format" in res.json()["error"]
    assert not state_dir(venv).exists()


# --------------------------------------------------------------------------- apply


def test_apply_foreign_models_need_consent_and_existing_env_compares(make_venv, kit_os_env, kit_index, tmp_path):
    from rebuild.commands import apply as applying
    from rebuild.commands import snapshot as snapshotting
    from rebuild.env import snapshot
    from rebuild.store.store import Store

    src = make_venv("src", ["tensorflow-cpu==2.15.1"])
    profile = snapshotting.run(src, tmp_path / "profiles" / "src.toml").written_to
    h5 = fake_model(tmp_path / "m.h5")
    p = prof.load(profile)
    p.smoke.models = [prof.SmokeModel(str(h5), imports=["no_such_module_tfrebuild"])]
    snapshot.write(p, profile)

    def run(env, **kw):
        return applying.run(
            applying.Options(profile=profile, env=env, find_links=[str(kit_index)], offline=True, yes=True, **kw)
        )

    # a foreign profile: its models are not loaded (loading can run code), nor their imports, without
    # --allow-commands; a --model the user gives is
    mine = fake_model(tmp_path / "mine.h5")
    r = run(tmp_path / "new" / "venv", models=[str(mine)])
    assert [(m.path, m.verdict) for m in r.models] == [(str(mine), "loads")]
    assert any("[[smoke.models]] are not loaded" in n and "--allow-commands" in n for n in r.notes), r.notes
    kept = prof.load(Store.open(tmp_path / "new" / "venv").generation_dir(1) / "profile.toml").smoke.models
    assert [m.path for m in kept] == [str(mine)], "a foreign profile's models are never laundered into a trusted one"
    with pytest.raises(Exception) as info:  # with consent they run: this one does not exist, so the model fails
        run(tmp_path / "new2" / "venv", allow_commands=True)
    assert (
        "no_such_module_tfrebuild" in str(getattr(info.value, "details", ""))
        and not (tmp_path / "new2" / "venv").exists()
    )

    # an existing env: its answers are the reference (TF 2.18.0 there, 2.15.1 from the profile)
    other = make_venv("other", ["tensorflow-cpu==2.18.0"])
    r = run(other, models=[str(fake_model(tmp_path / "n.h5", drift={"2.18": -1e-7}))])
    assert {Path(m.path).name: m.verdict for m in r.models} == {"n.h5": "match"}  # the profile's m.h5: no consent
    assert (Store.open(other).generation_dir(2) / "models.json").is_file()


def test_target_search_lands_where_the_models_pass(make_venv, kit_env, kit_index, tmp_path):
    """--to latest: a model Keras 3 refuses is one more check the landing point must pass (the search of issue 20
    keeps Keras 2, and the model then matches)."""
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    folder = keras2_saved_model(tmp_path / "k2model")
    res = upgrade(kit_env, kit_index, venv, "--model", str(folder))
    assert res.code == 0, str(res)
    doc = res.json()
    (row,) = doc["models"]
    assert row["verdict"] == "match" and row["keras"].startswith("tf_keras")
    assert [t["passed"] for t in doc["tries"]][-1] is True and not doc["tries"][0]["passed"], doc["tries"]


def test_foreign_profile_models_refused_by_upgrade_without_allow_commands(make_venv, kit_env, kit_index, tmp_path):
    from rebuild.env import snapshot

    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    profile = tmp_path / "foreign.toml"
    p = snapshot.take(venv)
    marker = tmp_path / "ran"
    p.smoke.models = [
        prof.SmokeModel(str(fake_model(tmp_path / "m.h5")), imports=["theirpkg.layers"]),
        prof.SmokeModel(str(fake_model(tmp_path / "plain.h5", touch=str(marker)))),
    ]
    snapshot.write(p, profile)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--profile", str(profile))
    assert res.code == 2, str(res)
    doc = res.json()
    assert (
        "--allow-commands" in doc["hint"] and f"model imports ({tmp_path / 'm.h5'}): theirpkg.layers" in doc["details"]
    )
    assert f"model to load: {tmp_path / 'plain.h5'}" in doc["details"], "a model without imports needs consent too"
    assert not state_dir(venv).exists() and not marker.exists()


# --------------------------------------------------------------------------- who owns the model (loading runs code)


NOBODY = 65534


def test_untrusted_model_paths(tmp_path):
    """A stranger's file, a file or folder others can write, a stranger's parent folder, a link: each is named with
    its owner; the user's own model in the user's own folder is fine."""
    import os

    mine = fake_model(tmp_path / "mine.h5")
    assert models.untrusted(mine, tmp_path) == ""
    theirs = fake_model(tmp_path / "theirs.h5")
    os.chown(theirs, NOBODY, NOBODY)
    assert models.untrusted(theirs, tmp_path) == f"{theirs} belongs to nobody (uid {NOBODY})"
    loose = fake_model(tmp_path / "loose.h5")
    loose.chmod(0o666)
    why = models.untrusted(loose, tmp_path)
    assert why.startswith(f"{loose} can be written by other users (mode -rw-rw-rw-)") and "owner is root" in why
    folder = tmp_path / "theirdir"
    folder.mkdir()
    inside = fake_model(folder / "m.h5")
    os.chown(folder, NOBODY, NOBODY)
    assert models.untrusted(inside, tmp_path) == f"{folder} belongs to nobody (uid {NOBODY})"
    saved = keras2_saved_model(tmp_path / "sm")
    os.chown(saved / "variables", NOBODY, NOBODY)
    assert models.untrusted(saved, tmp_path) == f"{saved / 'variables'} belongs to nobody (uid {NOBODY})"
    link = tmp_path / "link.h5"
    link.symlink_to(mine)
    assert models.untrusted(link, tmp_path).startswith(f"{link} is a symbolic link")
    # root acting on another user's env trusts that user's files
    env = tmp_path / "their-env"
    env.mkdir()
    os.chown(env, NOBODY, NOBODY)
    assert models.untrusted(theirs, env) == ""


def test_stranger_or_writable_model_refused_before_anything_nothing_loaded(make_venv, kit_env, kit_index, tmp_path):
    import os

    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    marker = tmp_path / "payload-ran"
    theirs = fake_model(tmp_path / "theirs.h5", touch=str(marker))
    os.chown(theirs, NOBODY, NOBODY)
    before = tree_state(venv)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--model", str(theirs))
    assert res.code == 2, str(res)
    doc = res.json()
    assert f"will not load the model {theirs}" in doc["error"] and f"nobody (uid {NOBODY})" in doc["error"]
    assert "Nothing was built or changed" in doc["error"]
    assert not marker.exists() and tree_state(venv) == before and not state_dir(venv).exists()

    loose = fake_model(tmp_path / "loose.h5", touch=str(marker))
    os.chown(loose, 0, 100)  # a shared group (gid 100) can write it
    loose.chmod(0o664)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--model", str(loose))
    assert res.code == 2, str(res)
    assert f"{loose} can be written by other users (mode -rw-rw-r--)" in res.json()["error"]
    assert not marker.exists() and tree_state(venv) == before and not state_dir(venv).exists()

    # listed in the env's own profile (a trusted one): refused after the plan, before the build
    from rebuild.env import snapshot

    profile = tmp_path / "mine.toml"
    p = snapshot.take(venv)
    p.smoke.models = [prof.SmokeModel(str(theirs))]
    snapshot.write(p, profile)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--profile", str(profile), "--allow-commands")
    assert res.code == 2 and f"will not load the model {theirs}" in res.json()["error"], str(res)
    assert not marker.exists() and tree_state(venv) == before and not state_dir(venv).exists()


def test_gate_checks_ownership_again_before_loading(make_venv, tmp_path):
    """The gate itself never loads a model that became a stranger's after the command checked it."""
    import os

    env = make_venv("tf2.15.1", ["tensorflow-cpu==2.15.1"])
    marker = tmp_path / "payload-ran"
    model = fake_model(tmp_path / "m.h5", touch=str(marker))
    os.chown(model, NOBODY, NOBODY)
    ran = tmp_path / "mine-ran"
    mine = fake_model(tmp_path / "mine.h5", touch=str(ran))  # the payload does run when a model is loaded
    refused, loaded = gate_rows(env, env, "2.15.1", [prof.SmokeModel(str(model)), prof.SmokeModel(str(mine))], tmp_path)
    assert refused.verdict == "refused" and not refused.ok and f"nobody (uid {NOBODY})" in refused.reason
    assert not marker.exists()
    assert loaded.verdict == "match" and ran.exists()
    assert "refused" in models.as_checks([refused])[0].name and not models.as_checks([refused])[0].ok


def _processes_with(text: str) -> list[int]:
    import os

    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_stop_kills_the_running_reference_and_joins(make_venv, tmp_path):
    """A failed try stops the gate: the reference process (a model that takes a minute to load) is killed with its
    group and the thread joined, so nothing runs on into the next try with its folder removed."""
    import time

    env = make_venv("tf2.15.1", ["tensorflow-cpu==2.15.1"])
    slow = fake_model(tmp_path / "slow.h5", sleep=60)
    gate = models.Gate([prof.SmokeModel(str(slow))], current=env, timeout=120)
    folder = tmp_path / "op" / "models"
    gate.start(folder)
    deadline = time.monotonic() + 60
    while not _processes_with(str(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(str(folder)), "the reference run started"
    start = time.monotonic()
    gate.stop()
    assert _processes_with(str(folder)) == [], "no process of the reference run survives"
    assert time.monotonic() - start < 10 and gate._thread is None, "stop() kills and joins at once"
    assert gate.references == {} or not gate.references[0].answer.get("ok")


def test_apply_refuses_a_strangers_model_before_anything(make_venv, kit_os_env, kit_index, tmp_path):
    import os

    from rebuild.commands import apply as applying
    from rebuild.commands import snapshot
    from rebuild.errors import UserError

    src = make_venv("src", ["tensorflow-cpu==2.15.1"])
    profile = snapshot.run(src, tmp_path / "profiles" / "src.toml").written_to
    marker = tmp_path / "payload-ran"
    theirs = fake_model(tmp_path / "theirs.h5", touch=str(marker))
    os.chown(theirs, NOBODY, NOBODY)
    target = tmp_path / "new" / "venv"
    with pytest.raises(UserError) as info:
        applying.run(
            applying.Options(
                profile=profile, env=target, find_links=[str(kit_index)], offline=True, yes=True, models=[str(theirs)]
            )
        )
    assert f"will not load the model {theirs}" in info.value.message and f"nobody (uid {NOBODY})" in info.value.message
    assert not target.exists() and not marker.exists()


@pytest.mark.slow
def test_one_new_env_process_for_tensorflow_and_models_crash_and_hang_fail_those_models_only(
    make_venv, kit_env, kit_index, tmp_path
):
    """The new env's TensorFlow check and its models run in one process (TensorFlow imported once, core/models_run.py
    Checked). A model that crashes that process or hangs past its timeout is that model's failure: TensorFlow's check
    and the import checks keep their own results, and the models after it still run (in a new process)."""
    venv = make_venv("v", ["tensorflow-cpu==2.15.1", "numpy==1.26.4"])
    crash = fake_model(tmp_path / "crash.h5", crash_tf="2.18")
    hang = fake_model(tmp_path / "hang.h5", sleep=600, sleep_tf="2.18")  # loads at once in 2.15, hangs in 2.18
    fine = fake_model(tmp_path / "fine.h5")
    before = tree_state(venv)
    given = [arg for m in (crash, hang, fine) for arg in ("--model", str(m))]
    started = time.monotonic()
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", *given, overrides={"TFREBUILD_SMOKE_TIMEOUT": "20"})
    took = time.monotonic() - started
    assert res.code == 1, str(res)
    doc = res.json()
    rows = {r["path"]: r for r in doc["models"]}
    assert rows[str(crash)]["verdict"] == "does not load" and "Segmentation fault" in rows[str(crash)]["error"]
    assert rows[str(hang)]["verdict"] == "does not load" and rows[str(hang)]["stage"] == "process"
    assert "timed out after 20 s" in rows[str(hang)]["error"], rows[str(hang)]
    assert rows[str(fine)]["verdict"] == "match", rows[str(fine)]
    assert took < 120, "the hang was ended by its own timeout"
    assert f"model {crash} (keras): does not load" in doc["error"] and f"model {hang} (keras)" in doc["error"]
    assert f"model {fine}" not in doc["error"] and "numpy" not in doc["error"] and "tensorflow 2.18" not in doc["error"]
    log = Path(re.search(r"the log (\S+)\.", doc["hint"]).group(1)).read_text(encoding="utf-8")
    assert "jobs-checks.json" in log and "reduce_sum" not in log, "TensorFlow's check ran in the models' process"
    assert "tf-check.json" not in doc["error"]
    assert tree_state(venv) == before and not state_dir(venv).exists()


@pytest.mark.slow
def test_no_reference_checks_runs_nothing_in_the_current_env(make_venv, kit_env, kit_index, tmp_path):
    """``--no-reference-checks``: no import check and no model runs in the env as it is; an import that already fails
    there fails the new env too, and a model is only loaded and run in the new env (``loads``)."""
    broken = make_venv("broken", ["tensorflow-cpu==2.15.1", "numpy==1.26.4", "protodep==1.0.0"])
    res = upgrade(kit_env, kit_index, broken, "--to", "2.18", "--no-reference-checks")
    assert res.code == 1, str(res)
    assert "imports: protodep" in res.json()["error"] and "already failing" not in res.json()["error"]

    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    h5 = fake_model(tmp_path / "m.h5", min_tf="2.18")  # the current env (2.15) cannot load it: no reference to compare
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--no-reference-checks", "--model", str(h5))
    assert res.code == 0, str(res)
    doc = res.json()
    assert [(r["verdict"], r["outputs_compared"]) for r in doc["models"]] == [("loads", 0)], doc["models"]
    assert doc["overlap"]["baseline"]["ran"] is False and doc["overlap"]["model_reference"]["seconds"] < 1


@pytest.mark.slow
def test_model_setting_tensorflow_threads_on_load_passes_in_both_envs(make_venv, kit_env, kit_index, tmp_path):
    """A model whose code sets ``tf.config`` when loaded (a custom layer's module calling
    ``tf.config.threading.set_intra_op_parallelism_threads``: refused once an op has run) loads in the new env's one
    process as in the current env's reference run (a new process): TensorFlow's check computes only after the models,
    and still does (its answer is checked)."""
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    h5 = fake_model(tmp_path / "threads.h5", threads=2)
    res = upgrade(kit_env, kit_index, venv, "--to", "2.18", "--model", str(h5))
    assert res.code == 0, str(res)
    doc = res.json()
    assert [r["verdict"] for r in doc["models"]] == ["match"], doc["models"]
    tf_check = next(c for c in doc["checks"] if c["name"] == "tensorflow 2.18.0 imports and computes")
    assert tf_check["ok"] and '"total": 3.0' in tf_check["output"], tf_check


@pytest.mark.slow
def test_on_the_cuda_route_tensorflow_checks_alone_and_the_models_run_after_the_smoke_checks(
    make_venv, kit_env, kit_index, tmp_path
):
    """Where a GPU is used (the plan's CUDA route), no long-lived process of the new env holds the GPU's memory while
    the other smoke checks run: TensorFlow's check is its own process, the models run after the smoke checks."""
    from tests.kit.nvidia import fake_nvidia_smi

    fake_nvidia_smi(tmp_path / "smi", "h100-590")
    gpu_env = dict(kit_env, PATH=f"{tmp_path / 'smi'}{os.pathsep}{kit_env['PATH']}", FAKE_TF_GPUS="1")
    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    h5 = fake_model(tmp_path / "m.h5")
    res = upgrade(gpu_env, kit_index, venv, "--to", "2.18", "--model", str(h5))
    assert res.code == 0, str(res)
    doc = res.json()
    assert doc["plan"]["gpu_route"] == "cuda" and [r["verdict"] for r in doc["models"]] == ["match"], doc["models"]
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["TensorFlow sees a GPU"]["ok"] and checks["tensorflow 2.18.0 imports and computes"]["ok"]
    log = Path(doc["log"]).read_text(encoding="utf-8")
    assert "jobs-checks.json" not in log and "jobs-staged.json" in log, log[-3000:]  # the models: their own process
    assert '"total": 3.0' in checks["tensorflow 2.18.0 imports and computes"]["output"]  # the check: a whole one


def test_new_env_process_failures_are_the_tensorflow_checks_answer(make_venv, tmp_path):
    """The thread that runs the new env's one process fails (its jobs file cannot be written: a full disk): TensorFlow's
    check says why, not "stopped". Jobs that cannot be handed over end the waiting process at once (Checked.stop)."""
    import threading

    from rebuild.core.models_run import Checked

    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    lost = Checked(
        venv, tmp_path / "gone", tf_version="2.15.1", timeout=60, models=1, log=None, cancel=threading.Event()
    )
    check, _ = lost.tf_check("tensorflow 2.15.1 imports and computes", 60)
    assert not check.ok and "FileNotFoundError" in check.output and "jobs-checks.json" in check.output, check

    (tmp_path / "op").mkdir()
    (tmp_path / "op" / "go.json").write_text("[]")  # a previous try's: not this one's jobs
    waiting = Checked(
        venv, tmp_path / "op", tf_version="2.15.1", timeout=60, models=1, log=None, cancel=threading.Event()
    )
    check, _ = waiting.tf_check("tensorflow 2.15.1 imports and computes", 60)
    assert check.ok, check
    started = time.monotonic()
    waiting.stop(OSError(28, "No space left on device"))
    assert waiting.answers([]) == [] and time.monotonic() - started < 30 and waiting.result.cancelled


def test_no_model_to_run_the_new_env_process_still_ends_and_tensorflow_computes(make_venv, tmp_path):
    """Every model missing (none to run in the new env): check() still waits for the new env's one process, which
    has TensorFlow compute after the (no) models; the check holds that answer."""
    current = make_venv("old", ["tensorflow-cpu==2.15.1"])
    new = make_venv("new", ["tensorflow-cpu==2.18.0"])
    gate = models.Gate([prof.SmokeModel(str(tmp_path / "gone.h5"))], current=current, timeout=60)
    gate.start(tmp_path / "op" / "models")
    gate.begin(new, "2.18.0")
    probe = gate.tf_probe()
    assert probe is not None
    check, stdout = probe("tensorflow 2.18.0 imports and computes", 60)
    assert check.ok and json.loads(stdout) == {"version": "2.18.0"}, check
    rows = gate.check(new, "2.18.0")
    assert [r.verdict for r in rows] == ["missing"]
    assert not gate._checked.thread.is_alive() and check.ok and json.loads(check.output)["total"] == 3.0, check
    gate._checked.computed.write_text('{"version": "2.18.0", "total": 2.0}')  # a TensorFlow that computes wrong
    gate._checked.verify()
    assert not check.ok and "expected tensorflow 2.18.0 computing 3.0" in check.output, check


def test_stop_before_the_threads_started(tmp_path):
    """A Ctrl-C between a thread's creation and its start: stop() joins only the threads that started."""
    import threading

    gate = models.Gate([prof.SmokeModel(str(tmp_path / "m.h5"))], current=tmp_path, timeout=60)
    gate._handed = threading.Thread(target=lambda: None)  # as begin() leaves it when interrupted before .start()
    gate.stop()
    assert gate.stopped and gate._handed is None


def test_new_env_process_dying_while_it_waits_is_no_models_failure(make_venv, tmp_path):
    """The new env's one process dies before it was given its model jobs: no model is blamed for it, they run in a
    new process (and TensorFlow computes in one)."""
    import signal
    import threading

    from rebuild.core.models_run import Checked, Job

    venv = make_venv("v", ["tensorflow-cpu==2.15.1"])
    folder = tmp_path / "op"
    folder.mkdir()
    checked = Checked(venv, folder, tf_version="2.15.1", timeout=60, models=1, log=None, cancel=threading.Event())
    check, _ = checked.tf_check("tensorflow 2.15.1 imports and computes", 60)
    assert check.ok, check
    for pid in _processes_with(str(folder / "jobs-checks.json")):
        os.kill(pid, signal.SIGKILL)
    job = Job(folder / "m", prof.SmokeModel(str(fake_model(tmp_path / "m.h5"))), "keras", "load", "staged")
    checked.release([job])
    [answer] = checked.answers([job])
    assert answer["ok"] and answer["stage"] == "done", answer
    checked.verify()
    assert check.ok and json.loads(check.output)["total"] == 3.0, check
