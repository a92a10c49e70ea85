"""util/uv runs uv through util/proc: scrubbed environment, redacted log, worded failures.

A stand-in ``uv`` (a shell script named by ``$TFREBUILD_UV``) prints what it was given.
"""

import stat

import pytest

from rebuild.util import uv as uvcmd
from rebuild.errors import UserError


@pytest.fixture
def fake_uv(tmp_path, monkeypatch):
    exe = tmp_path / "uv"
    exe.write_text(
        "#!/bin/sh\n"
        'echo "args: $*"\n'
        'echo "PYTHONPATH=${PYTHONPATH-unset} UV_INDEX_URL=${UV_INDEX_URL-unset}"\n'
        'echo "PIP_INDEX_URL=${PIP_INDEX_URL-unset} HTTPS_PROXY=${HTTPS_PROXY-unset} NO_COLOR=${NO_COLOR-unset}"\n'
        'case "$*" in *fail*) echo "no solution" >&2; exit 2;; *sleep*) exec sleep 5;; esac\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("TFREBUILD_UV", str(exe))
    return exe


def test_environment_scrubbed_of_pythonpath_but_index_and_proxy_kept(fake_uv, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("UV_INDEX_URL", "https://idx.example/simple")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip.example/simple")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_COLOR", raising=False)
    result = uvcmd.run(["pip", "compile", "x.in"])
    assert result.ok and result.args[0] == str(fake_uv)
    assert "args: --no-python-downloads pip compile x.in" in result.stdout
    assert "PYTHONPATH=unset UV_INDEX_URL=https://idx.example/simple" in result.stdout
    assert "PIP_INDEX_URL=https://pip.example/simple HTTPS_PROXY=http://proxy.example:3128 NO_COLOR=1" in result.stdout
    assert "args: python find 3.12" in uvcmd.run(["python", "find", "3.12"], allow_python_downloads=True).stdout


def test_log_redacts_credentials_and_failure_carries_uv_words(fake_uv, tmp_path):
    log = tmp_path / "logs" / "uv.log"
    with pytest.raises(uvcmd.UvFailed) as info:
        uvcmd.run(["fail", "--index-url", "https://alice:s3cret@idx.example/simple"], log=log, what="uv pip compile")
    assert info.value.result.returncode == 2 and info.value.log == log
    assert str(info.value) == "uv pip compile failed (exit 2): no solution"
    text = log.read_text()
    assert "s3cret" not in text and "https://alice:****@idx.example/simple" in text
    assert "no solution" in text and "[exit 2 after" in text
    assert not uvcmd.run(["fail"], check=False).ok


def test_timeout_and_missing_binary_are_user_errors(fake_uv, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="did not finish within 1 s"):
        uvcmd.run(["sleep"], timeout=1, what="uv pip compile")
    monkeypatch.setenv("TFREBUILD_UV", str(tmp_path / "no-such-uv"))
    with pytest.raises(UserError, match="cannot be started"):
        uvcmd.run(["--version"])
