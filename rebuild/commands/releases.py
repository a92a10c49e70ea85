"""``tfrebuild releases``: the release table of :mod:`rebuild.knowledge.tf`, marking the env's TensorFlow (probed) and the
newest release (asked of the index)."""

from __future__ import annotations

from dataclasses import dataclass

from rebuild.knowledge.tf import TF_DISTRIBUTIONS, Release, releases


@dataclass
class ReleaseTable:
    rows: list[Release]
    installed: str  # "tensorflow-cpu 2.15.1" or ""
    installed_minor: str
    latest: str  # newest final release on the index, or the table's newest when the index was not asked
    latest_source: str  # "index" | "table"


def release_table(env=None, *, offline: bool = False) -> ReleaseTable:
    """``tfrebuild releases``: the table, marking the env's TensorFlow and the newest release."""
    from rebuild.index import config as indexconf
    from rebuild.index import simple as indexinfo
    from rebuild.env import probe
    from rebuild.env.locate import locate
    from rebuild.errors import UserError

    rows = releases()
    installed, dist = "", "tensorflow"
    if env is not None or _default_env_exists():
        loc = locate(env)
        for d in probe.run(loc.python).distributions:
            if d["canonical"] in TF_DISTRIBUTIONS:
                installed, dist = f"{d['canonical']} {d['version']}", d["canonical"]
                break
    latest, source = rows[-1].newest, "table"
    if not offline:
        index = indexconf.discover()
        try:
            files = indexinfo.list_files(
                dist, indexinfo.Sources(index_urls=[index.index_url], find_links=[], offline=False), timeout=10
            )
            found = indexinfo.versions(files)
            if found:
                latest, source = str(found[0]), "index"
        except (UserError, OSError):
            pass
    minor = ".".join(installed.split()[-1].split(".")[:2]) if installed else ""
    return ReleaseTable(rows, installed, minor, latest, source)


def _default_env_exists() -> bool:
    from rebuild.env.locate import default_env_path, env_python

    return env_python(default_env_path()) is not None
