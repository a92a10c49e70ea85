"""Where each installed distribution came from, as the requirement that installs it from there again.

A distribution installed from an index is resolved on the index by name. Every other one
(``direct_url.json``: an editable folder, a local folder or wheel/sdist file, a VCS checkout,
a direct URL) is passed to uv as a direct reference, so uv never looks its name up on an
index (where an unrelated project of the same name may exist), and its own requirements take
part in the resolution:

* editable: ``-e /path`` (installed editable again: an edit shows on the next import);
* a local folder or file: ``name @ file:///path``;
* VCS: ``name @ git+URL@commit`` (the recorded commit, not the branch);
* a direct URL: ``name @ URL#sha256=...`` (the recorded hash when ``direct_url.json`` has one).

tfrebuild itself is never carried into an env it builds: it is a tool installed apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rebuild import SELF as SELF  # tfrebuild itself: never requested, never carried into a new env
from rebuild.env.probed import Probed
from rebuild.errors import UserError
from rebuild.knowledge.tf import bundled_seed

INSTALL_APART = (
    "install tfrebuild apart from the environments it manages: `python3 install.py` in a clone of "
    "tfrebuild (Python and pip are enough; `uv tool install --compile-bytecode .` or `pipx install .` "
    "there do the same)"
)


@dataclass(frozen=True)
class DirectSource:
    """One distribution that does not come from an index."""

    name: str  # canonical
    version: str  # installed
    kind: str  # editable | path | vcs | url
    url: str  # as direct_url.json records it (unredacted: it is passed to uv, never printed)
    requirement: str  # the line for uv: ``-e /path`` or ``name @ ...``
    local: Path | None = None  # the folder, file or repository on this machine it needs

    @property
    def shown(self) -> str:
        from rebuild.index import config as indexconf

        where = str(self.local) if self.local is not None else indexconf.redact(self.url)
        return {
            "editable": f"editable from {where}",
            "path": f"from {where}",
            "vcs": f"from {where} at {self.requirement.rsplit('@', 1)[-1][:12]}",
            "url": f"from {where}",
        }[self.kind]


def file_path(url: str) -> Path | None:
    """The local path a ``file:`` URL names (``None`` for any other URL)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


def of(dist: dict[str, Any]) -> DirectSource | None:
    """The direct source of one probed distribution (``None``: it came from an index)."""
    direct = dist.get("direct_url")
    if not isinstance(direct, dict) or not direct.get("url"):
        return None
    name, version, url = dist["canonical"], dist.get("version", ""), str(direct["url"])
    if bundled_seed(name, url):
        return None
    if direct.get("dir_info", {}).get("editable"):
        path = file_path(url)
        return DirectSource(name, version, "editable", url, f"-e {path if path is not None else url}", path)
    if "vcs_info" in direct:
        vcs = direct.get("vcs_info") or {}
        kind = vcs.get("vcs") or "git"
        commit = vcs.get("commit_id") or vcs.get("requested_revision") or ""
        base = url if url.startswith(f"{kind}+") else f"{kind}+{url}"
        plain = base[len(kind) + 1 :]
        return DirectSource(
            name, version, "vcs", url, f"{name} @ {base}" + (f"@{commit}" if commit else ""), file_path(plain)
        )
    path = file_path(url)
    if path is not None:
        return DirectSource(name, version, "path", url, f"{name} @ {url}", path)
    archive = direct.get("archive_info") or {}
    hashes = archive.get("hashes") or {}
    digest = hashes.get("sha256") or ""
    legacy = archive.get("hash") or ""  # PEP 610's older form: "sha256=<hex>"
    fragment = f"#sha256={digest}" if digest else (f"#{legacy}" if "=" in legacy else "")
    return DirectSource(name, version, "url", url, f"{name} @ {url.split('#', 1)[0]}{fragment}")


def direct_sources(data: Probed) -> dict[str, DirectSource]:
    """Every env distribution of a probe report that came from no index (tfrebuild itself left out)."""
    out: dict[str, DirectSource] = {}
    for dist in data.distributions:
        if dist.get("location") != "env" or dist.get("canonical") in SELF:
            continue
        source = of(dist)
        if source is not None:
            out.setdefault(source.name, source)
    return dict(sorted(out.items()))


def check_present(sources: dict[str, DirectSource], env: str | os.PathLike[str]) -> None:
    """Refuse, before any resolution or build, when a local source an env needs has gone."""
    gone = [s for s in sources.values() if s.local is not None and not s.local.exists()]
    if not gone:
        return
    names = ", ".join(f"{s.name} {s.version} ({s.shown})" for s in gone)
    first = gone[0]
    raise UserError(
        f"{len(gone)} package(s) in {env} were installed from local sources that are gone: {names}. "
        "tfrebuild reinstalls such packages from where they were installed, never from an index by name. "
        "Nothing was changed.",
        f"Put {first.local} back; or reinstall {first.name} from where it is now (e.g. "
        f"`uv pip install --python {Path(env) / 'bin' / 'python'} {'-e ' if first.kind == 'editable' else ''}NEW_PATH`); "
        f"or, if it is no longer needed, uninstall it (`uv pip uninstall --python {Path(env) / 'bin' / 'python'} "
        f"{first.name}`); then plan again.",
        exit_code=1,
    )


def running_from(env: str | os.PathLike[str]) -> bool:
    """Whether this tfrebuild runs from (is installed in) the env at ``env``."""
    import sys

    try:
        return Path(sys.prefix).resolve() == Path(env).resolve()
    except OSError:
        return False


def refuse_self_upgrade(env: str | os.PathLike[str]) -> None:
    """tfrebuild cannot replace the env it runs from: say how to install it apart, before any work."""
    if not running_from(env):
        return
    import sys

    raise UserError(
        f"This tfrebuild runs from {env}, the environment it would replace: the swap would pull the tool out "
        f"from under itself (it runs as {sys.executable}). Nothing was changed.",
        f"{INSTALL_APART[0].upper() + INSTALL_APART[1:]}, then run that `tfrebuild` with `--env {env}`. "
        "The new env leaves tfrebuild out; `pip uninstall tfrebuild` removes it from this one.",
        exit_code=1,
    )
