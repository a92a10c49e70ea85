"""The index settings a profile records and uv is given: the model both ``env/`` (profiles) and ``index/``
(discovery, uv's arguments) use, here so that ``index/`` needs nothing from ``env/``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexSetting:
    origin: str
    key: str
    value: str


@dataclass
class Index:
    index_url: str = ""
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    index_strategy: str = ""
    constraints: list[str] = field(default_factory=list)  # constraint files (paths or URLs)
    constraint_lines: list[str] = field(default_factory=list)  # their requirements, and uv's constraint-dependencies
    settings: list[IndexSetting] = field(default_factory=list)
