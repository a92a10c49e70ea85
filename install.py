#!/usr/bin/env python3
"""Install tfrebuild from this checkout, apart from the environments it manages (stdlib only).

    python3 install.py [--prefix DIR] [--bin-dir DIR]

1. creates (or refreshes) an isolated venv of its own: ``$XDG_DATA_HOME/tfrebuild/venv``
   (default ``~/.local/share/tfrebuild/venv``), or ``--prefix DIR``;
2. installs this checkout into it with that venv's pip, which reads this machine's pip configuration
   as it is (index, mirrors, find-links, constraints): tfrebuild and its dependencies, uv among them;
3. compiles the bytecode of tfrebuild's own modules (``PYTHONDONTWRITEBYTECODE`` would otherwise make
   Python compile them again at every start);
4. puts a ``tfrebuild`` link in the first folder on ``PATH`` this user can write to (``sbin`` folders
   pyenv's shims and the ``bin`` of any venv or conda env skipped: ``tfrebuild upgrade`` swaps those envs away), or
   in ``--bin-dir DIR``, so the next command in the same shell finds it.
   A ``tfrebuild`` there that is not this installer's link is never replaced.

Exit status 0 when ``tfrebuild`` is ready on PATH; 1 when the install failed; 3 when it is installed but
no folder on PATH could take the link (the message says which line to add to the shell's start-up file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def say(text: str) -> None:
    print(f"install.py: {text}", flush=True)


def fail(text: str, code: int = 1) -> None:
    print(f"install.py: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def home() -> Path:
    """This user's home folder: ``$HOME`` when set and not empty, else the password database's; refused when it
    is not an absolute path or is ``/`` (an empty ``HOME`` would otherwise put the venv in ``/.local``)."""
    path = os.environ.get("HOME") or ""
    if not path:
        import pwd

        try:
            path = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            path = ""
    if not os.path.isabs(path) or os.path.normpath(path) in ("/", "//"):
        fail(f"cannot tell your home folder (HOME={os.environ.get('HOME', '')!r}, password database: {path!r}); "
             "set HOME to it, or pass --prefix DIR and --bin-dir DIR")
    return Path(path)


def default_prefix() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or ""
    if not os.path.isabs(data):  # unset, empty or relative: the XDG default
        data = os.path.join(home(), ".local", "share")
    return Path(data) / "tfrebuild" / "venv"


def make_venv(prefix: Path) -> Path:
    """A venv of tfrebuild's own at ``prefix`` (created with this Python's venv module and its pip)."""
    python = prefix / "bin" / "python"
    if (prefix / "pyvenv.cfg").is_file() and python.exists():
        say(f"using the venv {prefix} (made by an earlier install)")
        return python
    if prefix.exists() and any(prefix.iterdir()):
        fail(f"{prefix} exists and is not a venv; move it away or pass --prefix DIR")
    say(f"creating a venv of tfrebuild's own: {prefix} (Python {sys.version.split()[0]}, {sys.executable})")
    try:
        venv.EnvBuilder(with_pip=True, symlinks=True).create(prefix)
    except (OSError, subprocess.CalledProcessError) as exc:
        fail(f"could not create the venv {prefix}: {exc} (on Debian/Ubuntu: apt install python3-venv)")
    return python


def pip_install(python: Path) -> None:
    """This checkout into the venv, with the machine's own pip configuration (nothing passed but the path)."""
    say(f"installing tfrebuild from {ROOT} with pip (your pip configuration applies)")
    cmd = [str(python), "-m", "pip", "install", "--upgrade", "--compile", str(ROOT)]
    if subprocess.run(cmd).returncode != 0:
        fail("pip could not install tfrebuild (see pip's output above)")
    # pip compiles the files it installs; this makes sure tfrebuild's own are, whatever pip's version did.
    code = "import compileall, rebuild, sys; sys.exit(not compileall.compile_dir(rebuild.__path__[0], quiet=1))"
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if subprocess.run([str(python), "-c", code], env=env).returncode != 0:
        fail("compiling tfrebuild's bytecode failed")


def _ours(link: Path, target: Path) -> bool:
    return link.is_symlink() and os.path.realpath(link) == os.path.realpath(target)


def _in_an_env(folder: str) -> bool:
    """Whether ``folder`` is the ``bin`` of a venv or conda env (the active one's included): a link there would
    go with the env when ``tfrebuild upgrade`` swaps it for its rebuilt copy."""
    real = os.path.realpath(folder)
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if prefix and os.path.realpath(os.path.join(prefix, "bin")) == real:
            return True
    parents = {os.path.dirname(os.path.normpath(folder)), os.path.dirname(real)}
    return any(os.path.exists(os.path.join(parent, marker)) for parent in parents for marker in ("pyvenv.cfg",
                                                                                                "conda-meta"))


def bin_dirs() -> list[Path]:
    """The folders on PATH this user can write to, in PATH order (sbin folders, pyenv shims and the ``bin`` of
    a venv or conda env skipped)."""
    seen, found = set(), []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or not os.path.isabs(entry) or entry in seen:
            continue
        seen.add(entry)
        name = os.path.basename(entry.rstrip("/"))
        if name == "sbin" or name == "shims" or "/shims" in entry or _in_an_env(entry):
            continue
        if os.path.isdir(entry) and os.access(entry, os.W_OK | os.X_OK):
            found.append(Path(entry))
    return found


def place_link(target: Path, bin_dir: Path | None) -> int:
    """Link ``tfrebuild`` into a folder on PATH; the exit status (0 ready, 3 not on PATH)."""
    candidates = [bin_dir] if bin_dir is not None else bin_dirs()
    for folder in candidates:
        link = folder / "tfrebuild"
        if os.path.lexists(link) and not _ours(link, target):
            if link.is_symlink() and os.readlink(link).endswith("/tfrebuild/venv/bin/tfrebuild"):
                link.unlink()  # this installer's link to an earlier install (another prefix, or removed)
            else:
                say(f"{link} exists and is not this installer's link: left as it is")
                continue
        if not os.path.lexists(link):
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
        say(f"linked {link} -> {target}")
        on_path = str(folder) in os.environ.get("PATH", "").split(os.pathsep)
        first = _which_first()
        if on_path and first is not None and os.path.realpath(first) != os.path.realpath(target):
            say(f"warning: {first} comes first on your PATH and is another tfrebuild; run {link} or remove it")
            return 3
        if not on_path:
            say(f"{folder} is not on your PATH: add `export PATH=\"{folder}:$PATH\"` to your shell's start-up file")
            return 3
        return 0
    fallback = home() / ".local" / "bin"
    if bin_dir is None and fallback not in candidates:
        say("no folder on your PATH is writable for you")
        return place_link(target, fallback)
    return 3


def _which_first() -> str | None:
    import shutil

    return shutil.which("tfrebuild")


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 install.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=None, help="the venv tfrebuild is installed in "
                        "(default: $XDG_DATA_HOME/tfrebuild/venv, else ~/.local/share/tfrebuild/venv)")
    parser.add_argument("--bin-dir", type=Path, default=None, help="where the `tfrebuild` link goes (default: the "
                        "first folder on PATH you can write to)")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):
        fail(f"tfrebuild needs Python 3.11 or newer; this is {sys.version.split()[0]} ({sys.executable}). "
             "Run the installer with a newer python3 (e.g. python3.11 install.py)")
    prefix = (args.prefix or default_prefix()).expanduser().absolute()
    python = make_venv(prefix)
    pip_install(python)
    target = prefix / "bin" / "tfrebuild"
    if not target.exists():
        fail(f"the install did not create {target}")
    status = place_link(target, args.bin_dir.expanduser().absolute() if args.bin_dir else None)
    version = subprocess.run([str(target), "--version"], capture_output=True, text=True).stdout.strip()
    if status == 0:
        say(f"{version or 'tfrebuild'} is installed apart from your environments; `tfrebuild --help` lists the commands")
    else:
        say(f"{version or 'tfrebuild'} is installed in {prefix}, but `tfrebuild` is not on your PATH yet (see above)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
