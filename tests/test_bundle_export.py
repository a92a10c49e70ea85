"""``tfrebuild export`` and ``tfrebuild bundle`` on the offline kit; the fleet roll-out example; a real-PyPI round trip.

The offline apply of a bundle runs with the network really gone where the machine allows it
(``unshare -rn``: a new network namespace with only a downed loopback), with an empty uv
cache and without the kit's ``UV_FIND_LINKS``: the bundle folder is all uv has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
import tomli_w

from rebuild.commands import apply as applying
from rebuild.commands import bundle as bundling
from rebuild.commands import export as exporting
from rebuild.core import lockfile as locks
from rebuild.env import profile as prof
from rebuild.errors import UserError
from rebuild.index.tags import profile_target, supported_tags
from rebuild.store.store import Store
from tests.kit import uv_bin
from tests.test_apply import _with_lock as _locked_profile
from tests.test_apply import (  # noqa: F401  (fixtures)
    ROOT,
    assert_nothing_created,
    freeze,
    launcher,
    opts,
    source_env,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout assumed")
SEEDS = {"pip", "setuptools", "wheel"}


def _no_network_prefix() -> list[str]:
    """``unshare -rn`` when this machine lets us drop the network for a command, else nothing."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    probe = subprocess.run([exe, "-rn", "true"], capture_output=True)
    return [exe, "-rn"] if probe.returncode == 0 else []


# --------------------------------------------------------------------------- export


def test_export_pylock_reproduces_with_uv_sync(source_env, kit_index, tmp_path):
    src, _ = source_env
    out = tmp_path / "team" / "pylock.toml"
    r = exporting.run(env=src, fmt="pylock", output=out)
    assert r.output == str(out) and r.hashed and r.packages == len(freeze(src))
    data = tomllib.loads(out.read_text())
    assert all(w["hashes"]["sha256"] for p in data["packages"] for w in p["wheels"])
    target = tmp_path / "by-uv"
    subprocess.run([uv_bin(), "venv", "-q", "--python", str(src / "bin" / "python"), str(target)], check=True)
    proc = subprocess.run(
        [
            uv_bin(),
            "pip",
            "sync",
            str(out),
            "--python",
            str(target / "bin" / "python"),
            "--offline",
            "--no-index",
            "--require-hashes",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert freeze(target) == freeze(src)


@pytest.mark.slow
def test_export_requirements_reproduce_with_pip(source_env, make_venv, kit_index, tmp_path):
    src, _ = source_env
    out = tmp_path / "requirements.txt"
    r = exporting.run(env=src, fmt="requirements", output=out)
    text = out.read_text()
    assert r.hashed and text.count("--hash=sha256:") >= len(freeze(src))
    assert any("--find-links" in n for n in r.notes)
    target = make_venv(tmp_path / "by-pip", [], python="3.11", seed=True)
    proc = subprocess.run(
        [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(kit_index),
            "--require-hashes",
            "-r",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = {k: v for k, v in freeze(target).items() if k not in SEEDS}
    assert got == {k: v for k, v in freeze(src).items() if k not in SEEDS}
    # a tampered hash is refused by pip
    bad = tmp_path / "bad.txt"
    first = text.split("--hash=sha256:")[1][:64]
    bad.write_text(text.replace(first, "0" * 64))
    other = make_venv(tmp_path / "by-pip-bad", [], python="3.11", seed=True)
    proc = subprocess.run(
        [
            str(other / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(kit_index),
            "--require-hashes",
            "-r",
            str(bad),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "HASHES" in (proc.stdout + proc.stderr).upper()


@pytest.mark.slow
def test_export_profile_to_stdout_and_from_generation_lock(source_env, kit_index, tmp_path):
    src, profile = source_env
    r = exporting.run(profile=profile, fmt="requirements", find_links=[str(kit_index)], offline=True)
    assert r.output is None and "tensorflow-cpu==2.15.1 \\" in r.text and "--hash=sha256:" in r.text
    assert "locked with uv" in r.lock_source
    env = tmp_path / "managed" / "venv"
    applying.run(opts(profile, env, kit_index))
    r = exporting.run(env=env, fmt="pylock")
    assert "generation 1's lock" in r.lock_source and tomllib.loads(r.text)["created-by"] == "tfrebuild"
    r = exporting.run(env=env, fmt="pylock", output=tmp_path / "env.lock.toml")
    assert any("pylock.toml or pylock.<name>.toml" in n for n in r.notes)
    with pytest.raises(UserError, match="already exists"):
        exporting.run(env=env, fmt="pylock", output=tmp_path / "env.lock.toml")
    with pytest.raises(UserError, match="Unknown format"):
        exporting.run(env=env, fmt="conda")
    with pytest.raises(UserError, match="not both"):
        exporting.run(env=env, profile=profile)


def test_requirements_need_hashes(tmp_path):
    lock = locks.parse_lock(
        'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.17.0"\n'
        'wheels = [{ url = "https://x.example/six-1.17.0-py3-none-any.whl", hashes = {} }]\n',
        "test lock",
    )
    with pytest.raises(UserError, match="no sha256"):
        locks.to_requirements(lock)


# --------------------------------------------------------------------------- bundle


@pytest.mark.slow
def test_bundle_then_offline_apply_without_network(source_env, kit_env, kit_index, tmp_path):
    src, profile = source_env
    made = tmp_path / "made" / "bundle"
    r = bundling.run(profile, made, find_links=[str(kit_index)], offline=True)
    names = {f.filename for f in r.files}
    assert len(r.files) == len(freeze(src)) and all(f.how == "copied" for f in r.files)
    assert r.size == sum((made / n).stat().st_size for n in os.listdir(made))
    assert {"profile.toml", "pylock.toml", "SHA256SUMS"} <= set(os.listdir(made)) and names <= set(os.listdir(made))
    assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=made).returncode == 0
    lock = tomllib.loads((made / "pylock.toml").read_text())
    assert all(w["path"] == w["name"] and "url" not in w for p in lock["packages"] for w in p["wheels"])
    assert prof.load(made / "profile.toml").lock == "pylock.toml"
    # carried elsewhere (another machine: another path), applied with no network, no cache, no kit
    moved = tmp_path / "shared" / "tf-bundle"
    moved.parent.mkdir()
    shutil.move(made, moved)
    env = {k: v for k, v in kit_env.items() if k not in ("UV_FIND_LINKS", "PIP_FIND_LINKS")}
    env["UV_CACHE_DIR"] = str(tmp_path / "empty-cache")
    target = tmp_path / "node" / "tf"
    prefix = _no_network_prefix()
    proc = subprocess.run(
        prefix
        + [
            sys.executable,
            str(launcher(tmp_path)),
            "apply",
            str(moved / "profile.toml"),
            "--env",
            str(target),
            "--find-links",
            str(moved),
            "--offline",
            "--yes",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["changed"] and doc["hashes"].startswith("required") and doc["generation"] == 1
    assert freeze(target) == freeze(src)
    if not prefix:
        pytest.skip("applied offline, but this machine cannot drop the network for a command (unshare -rn)")


@pytest.mark.slow
def test_bundle_missing_wheel_and_tampered_wheel(source_env, kit_index, tmp_path):
    _, profile = source_env
    out = tmp_path / "b"
    r = bundling.run(profile, out, find_links=[str(kit_index)], offline=True)
    victim = next(f for f in r.files if f.package == "numpy")
    saved = (out / victim.filename).read_bytes()
    (out / victim.filename).unlink()
    target = tmp_path / "t" / "venv"
    with pytest.raises(UserError, match="not here") as exc:
        applying.run(opts(out / "profile.toml", target, out, find_links=[str(out)]))
    assert "numpy" in exc.value.message and victim.filename in exc.value.details
    assert_nothing_created(target)
    (out / victim.filename).write_bytes(saved + b"\0")
    with pytest.raises(UserError, match="do not match the hashes") as exc:
        applying.run(opts(out / "profile.toml", target, out, find_links=[str(out)]))
    assert "numpy" in exc.value.message
    assert_nothing_created(target)
    # bundling again repairs the folder: the wrong file is fetched again
    (out / victim.filename).write_bytes(saved + b"\0")
    locked = _locked_profile(profile, tmp_path, kit_index)
    r = bundling.run(locked, out, find_links=[str(kit_index)], offline=True)
    assert (out / victim.filename).read_bytes() == saved
    assert next(f for f in r.files if f.package == "numpy").how == "copied"
    assert {f.how for f in r.files if f.package != "numpy"} == {"present"}


@pytest.mark.slow
def test_bundle_checks_and_records_hashes(source_env, kit_index, tmp_path):
    _, profile = source_env
    locked = _locked_profile(profile, tmp_path, kit_index)
    lock_path = locked.with_name("pylock.toml")
    data = tomllib.loads(lock_path.read_text())
    six = next(p for p in data["packages"] if p["name"] == "six")
    numpy = next(p for p in data["packages"] if p["name"] == "numpy")
    good = numpy["wheels"][0]["hashes"]["sha256"]
    text = lock_path.read_text()
    lock_path.write_text(text.replace(good, "f" * 64))
    with pytest.raises(UserError, match="does not match the lock's hash") as exc:
        bundling.run(locked, tmp_path / "b1", offline=True)
    assert "numpy" in exc.value.message
    assert not any(n.startswith("numpy") for n in os.listdir(tmp_path / "b1"))
    # no hash at all for six: computed and recorded
    digest = six["wheels"][0]["hashes"]["sha256"]
    six["wheels"][0]["hashes"] = {}
    lock_path.write_text(tomli_w.dumps(data))
    r = bundling.run(locked, tmp_path / "b2", offline=True)
    assert [f.package for f in r.files if f.hash_recorded] == ["six"]
    assert any("no sha256" in n for n in r.notes)
    bundled = tomllib.loads((tmp_path / "b2" / "pylock.toml").read_text())
    assert next(p for p in bundled["packages"] if p["name"] == "six")["wheels"][0]["hashes"]["sha256"] == digest
    res = applying.run(
        opts(tmp_path / "b2" / "profile.toml", tmp_path / "n" / "venv", kit_index, find_links=[str(tmp_path / "b2")])
    )
    assert res.changed and res.hashes.startswith("required")


def test_bundle_refuses_a_folder_that_is_not_a_bundle(source_env, kit_index, tmp_path):
    _, profile = source_env
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a bundle"):
        bundling.run(profile, out, find_links=[str(kit_index)], offline=True)
    assert os.listdir(out) == ["thesis.tex"]


def test_profile_without_python_version_is_a_user_error():
    with pytest.raises(UserError, match="does not record its Python version"):
        profile_target(prof.Profile(interpreter=prof.Interpreter(version="")))


def test_bundle_downloads_through_the_http_client_with_redacted_errors(tmp_path):
    import http.server
    import threading

    body = b"wheel bytes" * 1000
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            if self.path == "/f/six-1.0-py3-none-any.whl":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://user:s3cret@127.0.0.1:{server.server_address[1]}/f/"
        dest = tmp_path / "six-1.0-py3-none-any.whl"
        f = locks.LockedFile("wheel", dest.name, url=base + dest.name)
        assert bundling._fetch(f, None, dest, 10) == "downloaded"
        assert dest.with_name(dest.name + ".part").read_bytes() == body
        assert seen[0]["Authorization"].startswith("Basic ")
        gone = locks.LockedFile("wheel", "six-2.0-py3-none-any.whl", url=base + "six-2.0-py3-none-any.whl")
        with pytest.raises(UserError) as err:
            bundling._fetch(gone, None, tmp_path / gone.filename, 10)
        assert "HTTP 404" in err.value.message and "six-2.0-py3-none-any.whl" in err.value.message
        assert "s3cret" not in err.value.message + err.value.hint + err.value.details
        assert "files already in the bundle are kept" in err.value.hint
        assert not (tmp_path / (gone.filename + ".part")).exists()
    finally:
        server.shutdown()
        server.server_close()


def test_bundle_picks_the_wheel_for_the_profile_platform():
    lock = locks.parse_lock(
        'lock-version = "1.0"\n[[packages]]\nname = "numpy"\nversion = "1.26.4"\nwheels = [\n'
        '  { url = "https://x.example/numpy-1.26.4-cp311-cp311-macosx_11_0_arm64.whl", hashes = {} },\n'
        '  { url = "https://x.example/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", '
        "hashes = {} },\n"
        '  { url = "https://x.example/numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.whl", hashes = {} },\n]\n'
        'sdist = { url = "https://x.example/numpy-1.26.4.tar.gz", hashes = {} }\n',
        "t",
    )
    p = prof.Profile(
        interpreter=prof.Interpreter(version="3.11.7"),
        platform=prof.Platform(system="Linux", machine="x86_64", libc="glibc", libc_version="2.31"),
    )
    tags = supported_tags(profile_target(p))
    assert bundling.choose_file(lock.packages[0], tags).filename.startswith("numpy-1.26.4-cp311-cp311-manylinux")
    p.platform = prof.Platform(system="Linux", machine="x86_64", libc="glibc", libc_version="2.12")  # too old
    tags = supported_tags(profile_target(p))
    assert bundling.choose_file(lock.packages[0], tags).kind == "sdist"


# --------------------------------------------------------------------------- fleet roll-out example

EXAMPLES = ROOT / "docs" / "examples"


def _rollout(tmp_path, kit_env, bundle, template, hosts, canary=None):
    env = dict(kit_env)
    env["TFREBUILD"] = f"{sys.executable} {launcher(tmp_path)}"
    env["WORK"] = str(tmp_path / "work")
    args = ["bash", str(EXAMPLES / "rollout.sh"), "-r", "local", "-b", str(bundle), "-e", template, "-p", "2"]
    if canary:
        args += ["-c", canary]
    return subprocess.run(args + hosts, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def fleet(source_env, make_venv, kit_index, tmp_path):
    """A bundle and three 'hosts' (folders) holding an older env each."""
    src, profile = source_env
    bundle = tmp_path / "shared" / "bundle"
    bundling.run(profile, bundle, find_links=[str(kit_index)], offline=True)
    old = ["tensorflow-cpu==2.16.1", "numpy==1.26.4"]
    for host in ("h1", "h2", "h3"):
        make_venv(tmp_path / "hosts" / host / "tf", old, python="3.11")
    return src, bundle, str(tmp_path / "hosts" / "{host}" / "tf"), freeze(tmp_path / "hosts" / "h1" / "tf")


@pytest.mark.slow
def test_rollout_canary_then_rest(fleet, kit_env, tmp_path):
    src, bundle, template, _ = fleet
    res = _rollout(tmp_path, kit_env, bundle, template, ["h1", "h2", "h3"])
    assert res.returncode == 0, res.stderr
    assert res.stderr.index("canary: h1") < res.stderr.index("h2: generation 1 -> 2")
    for host in ("h1", "h2", "h3"):
        assert freeze(tmp_path / "hosts" / host / "tf") == freeze(src)
    res = _rollout(tmp_path, kit_env, bundle, template, ["h1", "h2", "h3"])
    assert res.returncode == 0 and res.stderr.count("already up to date") == 3


@pytest.mark.slow
def test_rollout_rolls_back_when_a_host_fails(fleet, kit_env, tmp_path):
    src, bundle, template, before = fleet
    broken = tmp_path / "hosts" / "h3" / "tf" / "bin" / "python"
    broken.unlink()  # h3's env is damaged: apply refuses it
    res = _rollout(tmp_path, kit_env, bundle, template, ["h1", "h2", "h3"])
    assert res.returncode == 2, res.stderr
    assert "h3: FAILED" in res.stderr and "h1: rolled back to generation 1" in res.stderr
    for host in ("h1", "h2"):
        assert freeze(tmp_path / "hosts" / host / "tf") == before
        assert Store.open(tmp_path / "hosts" / host / "tf").current_number == 1


@pytest.mark.slow
def test_rollout_stops_at_a_failed_canary(fleet, kit_env, tmp_path):
    src, bundle, template, before = fleet
    (tmp_path / "hosts" / "h2" / "tf" / "bin" / "python").unlink()
    res = _rollout(tmp_path, kit_env, bundle, template, ["h1", "h2", "h3"], canary="h2")
    assert res.returncode == 1, res.stderr
    assert "canary failed" in res.stderr
    for host in ("h1", "h3"):
        assert freeze(tmp_path / "hosts" / host / "tf") == before
        assert Store.open(tmp_path / "hosts" / host / "tf") is None


@pytest.mark.slow
def test_rollout_refuses_a_changed_bundle(fleet, kit_env, tmp_path):
    src, bundle, template, before = fleet
    wheel = next(bundle.glob("numpy-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    res = _rollout(tmp_path, kit_env, bundle, template, ["h1"])
    assert res.returncode == 3 and freeze(tmp_path / "hosts" / "h1" / "tf") == before


@pytest.mark.network
@pytest.mark.slow
def test_ansible_playbook_against_localhost(fleet, kit_env, tmp_path):
    """The example playbook, run with ansible-core against localhost (ansible_connection=local)."""
    src, bundle, template, before = fleet
    tools = tmp_path / "ansible-venv"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    made = subprocess.run(
        [uv_bin(), "venv", "-q", "--no-config", "--python", sys.executable, str(tools)],
        env=clean,
        capture_output=True,
        text=True,
    )
    inst = subprocess.run(
        [uv_bin(), "pip", "install", "-q", "--no-config", "--python", str(tools / "bin" / "python"), "ansible-core"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if made.returncode or inst.returncode:
        pytest.skip(f"ansible-core cannot be installed here: {inst.stderr.strip()[-300:]}")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[tf_nodes]\n"
        + "".join(
            f"{h} ansible_connection=local ansible_python_interpreter={sys.executable}\n" for h in ("h1", "h2", "h3")
        )
    )
    env = dict(kit_env)
    env.update(
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="0",
        LC_ALL="C.UTF-8",
    )
    tfrebuild = f"{sys.executable} {launcher(tmp_path)}"

    def play(*extra):
        return subprocess.run(
            [
                str(tools / "bin" / "ansible-playbook"),
                "-i",
                str(inventory),
                str(EXAMPLES / "rollout.yml"),
                "-e",
                json.dumps({"bundle": str(bundle), "env_path": template, "tfrebuild": tfrebuild}),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    (tmp_path / "hosts" / "h3" / "tf" / "bin" / "python").rename(tmp_path / "h3-python")
    res = play()
    assert res.returncode != 0, res.stdout
    assert "every host that had applied the bundle was rolled back" in res.stdout
    for host in ("h1", "h2"):  # applied (generation 2), then rolled back to generation 1
        store = Store.open(tmp_path / "hosts" / host / "tf")
        assert (store.current_number, store.previous_number) == (1, 2), res.stdout
        assert freeze(tmp_path / "hosts" / host / "tf") == before, res.stdout
    (tmp_path / "h3-python").rename(tmp_path / "hosts" / "h3" / "tf" / "bin" / "python")
    res = play()
    assert res.returncode == 0, res.stdout + res.stderr
    for host in ("h1", "h2", "h3"):
        assert freeze(tmp_path / "hosts" / host / "tf") == freeze(src)


# --------------------------------------------------------------------------- real PyPI


@pytest.mark.network
@pytest.mark.slow
def test_pypi_tensorflow_bundle_offline_round_trip(require_python, tmp_path):
    """Snapshot a real tensorflow-cpu 2.15.1 env, bundle it, apply it offline (no network) elsewhere."""
    py = require_python("3.11")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "PIP_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    clean.update(UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1", PIP_CONFIG_FILE=os.devnull)  # PyPI, nothing else
    src = tmp_path / "real" / "tf215"
    for cmd in (
        [uv_bin(), "venv", "-q", "--no-config", "--python", str(py), str(src)],
        [
            uv_bin(),
            "pip",
            "install",
            "-q",
            "--no-config",
            "--python",
            str(src / "bin" / "python"),
            "tensorflow-cpu==2.15.1",
        ],
    ):
        proc = subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            pytest.skip(f"cannot install tensorflow-cpu 2.15.1 from PyPI here: {proc.stderr.strip()[-300:]}")
    cli = [sys.executable, str(launcher(tmp_path))]

    def run(*args, env=clean, prefix=()):
        proc = subprocess.run(
            [*prefix, *cli, *args], env=env, capture_output=True, text=True, timeout=3600, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    run("snapshot", "--env", str(src), "-o", str(tmp_path / "tf215.toml"))
    doc = json.loads(run("bundle", str(tmp_path / "tf215.toml"), "-o", str(tmp_path / "bundle"), "--json").stdout)
    assert doc["size"] > 100 * 2**20 and len(doc["files"]) == len(freeze(src))
    # downloaded from PyPI over kept-alive connections, several files each, and timed per MiB
    assert doc["downloaded"] > 100 * 2**20 and doc["seconds_per_mib"] > 0, doc
    assert 0 < doc["connections"] < len(doc["files"]), doc["connections"]
    offline_env = dict(clean, UV_CACHE_DIR=str(tmp_path / "empty-cache"), UV_OFFLINE="1")
    doc = json.loads(
        run(
            "apply",
            str(tmp_path / "bundle" / "profile.toml"),
            "--env",
            str(tmp_path / "node" / "tf"),
            "--find-links",
            str(tmp_path / "bundle"),
            "--offline",
            "--yes",
            "--json",
            env=offline_env,
            prefix=_no_network_prefix(),
        ).stdout
    )
    assert doc["changed"] and all(c["ok"] for c in doc["checks"])
    assert freeze(tmp_path / "node" / "tf") == freeze(src)
