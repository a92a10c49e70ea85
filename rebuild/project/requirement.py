"""Move a TensorFlow requirement to a new version the way its author would have written it.

``tensorflow-cpu==2.15.1`` becomes ``tensorflow-cpu==2.18.0`` (a pin stays a pin); a range that
already admits the new version is left alone; one that does not moves as little as possible:
``>=2.15,<2.16`` becomes ``>=2.15,<2.19``, ``~=2.15.0`` becomes ``~=2.18.0``, ``==2.15.*``
becomes ``==2.18.*``. Extras, markers, spacing and quotes stay as they were.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.version import Version

from rebuild.errors import UserError

_CLAUSE = re.compile(r"^(\s*)(===|==|!=|~=|<=|>=|<|>)(\s*)([^\s,]+)(\s*)$")


def _parts(version: Version, count: int) -> list[int]:
    release = list(version.release) + [0] * count
    return release[:count]


def _text(numbers: list[int]) -> str:
    return ".".join(str(n) for n in numbers)


def _move_clause(op: str, value: str, new: Version) -> str | None:
    """The clause ``op value`` moved to admit ``new`` (``None``: drop it)."""
    if Specifier(f"{op}{value}").contains(new, prereleases=True):
        return f"{op}{value}"
    wildcard = value.endswith(".*")
    count = len(value[:-2].split(".")) if wildcard else len(Version(value).release)
    if op == "==" and wildcard:
        return f"=={_text(_parts(new, count))}.*"
    if op in ("==", "==="):
        return f"{op}{new}"
    if op == "~=":
        return f"~={_text(_parts(new, count))}"
    if op == "!=":
        return None
    if op == "<=":
        return f"<={_text(_parts(new, max(count, len(new.release))))}"
    if op == "<":  # the next bound of the same granularity above the new version
        bound = _parts(new, count)
        bound[-1] += 1
        return f"<{_text(bound)}"
    return f">={new}" if op in (">=", ">") else None  # a lower bound above the new version (a downgrade)


def move_specifier(spec: str, new: str) -> str:
    """``spec`` (a PEP 440 specifier set as written) moved as little as possible to admit ``new``."""
    version = Version(new)
    if not spec.strip() or SpecifierSet(spec).contains(version, prereleases=True):
        return spec
    sep = ", " if ", " in spec else ","
    out = []
    for clause in spec.split(","):
        m = _CLAUSE.match(clause)
        if m is None:
            raise ValueError(f"cannot read the clause {clause!r}")
        moved = _move_clause(m.group(2), m.group(4), version)
        if moved is not None:
            out.append(moved)
    result = sep.join(out) or f"=={new}"
    if not SpecifierSet(result).contains(version, prereleases=True):  # never write a range that excludes it
        result = f"=={new}"
    return result


_REQ = re.compile(r"^(?P<head>\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*)(?P<open>\(?)(?P<spec>[^;@()]*?)"
                  r"(?P<close>\)?)(?P<tail>\s*(;.*)?)$", re.DOTALL)


def move_requirement(text: str, new: str) -> str:
    """The PEP 508 requirement ``text`` with its version specifier moved to admit ``new``."""
    req = Requirement(text)
    if req.url:
        raise UserError(f"The project asks for {req.name} from a URL ({text}); tfrebuild will not change it.",
                        "Change that requirement to a version range, or upgrade the project yourself.")
    m = _REQ.match(text)
    if m is None:
        raise ValueError(f"cannot read the requirement {text!r}")
    spec = m.group("spec")
    moved = move_specifier(spec, new)
    if moved == spec:
        return text
    head = m.group("head")
    if not spec.strip() and not m.group("open"):
        head = head.rstrip()
    return f"{head}{m.group('open')}{moved}{m.group('close')}{m.group('tail')}"


def edit_pyproject(text: str, old: str, new: str) -> str:
    """``pyproject.toml`` text with every string literal ``old`` replaced by ``new`` (the TOML otherwise
    byte for byte as it was); checked by parsing both: only those strings differ."""
    if old == new:
        return text
    out = text
    for quote in ('"', "'"):
        out = out.replace(f"{quote}{old}{quote}", f"{quote}{new}{quote}")
    if out == text:
        raise UserError(f"tfrebuild could not find the requirement \"{old}\" written plainly in pyproject.toml.",
                        "Write it as a plain quoted string (no escapes), or change it yourself.")
    if _swap_strings(tomllib.loads(text), old, new) != tomllib.loads(out):
        raise UserError("Changing the TensorFlow requirement in pyproject.toml would change more than that "
                        f"requirement (\"{old}\" appears elsewhere in the file).",
                        "Change the requirement yourself, then run tfrebuild again.")
    return out


def _swap_strings(value, old: str, new: str):
    if isinstance(value, dict):
        return {k: _swap_strings(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_strings(v, old, new) for v in value]
    return new if value == old else value
