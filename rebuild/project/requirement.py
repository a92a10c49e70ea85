"""Move a TensorFlow requirement to a new version the way its author would have written it.

``tensorflow-cpu==2.15.1`` becomes ``tensorflow-cpu==2.18.0`` (a pin stays a pin); a range that
already admits the new version is left alone; one that does not moves as little as possible:
``>=2.15,<2.16`` becomes ``>=2.15,<2.19``, ``~=2.15.0`` becomes ``~=2.18.0``, ``==2.15.*``
becomes ``==2.18.*``. Extras, markers, spacing and quotes stay as they were.

Poetry's own constraints (``[tool.poetry.dependencies] tensorflow-cpu = "^2.15"``) move the same way
(:func:`move_poetry_constraint`: ``2.15.1`` → ``2.18.0``, ``~2.15`` → ``~2.18``, a caret that admits
the new version stays), and :func:`edit_toml_string` changes that one value in the file's text.
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


_REQ = re.compile(
    r"^(?P<head>\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*)(?P<open>\(?)(?P<spec>[^;@()]*?)"
    r"(?P<close>\)?)(?P<tail>\s*(;.*)?)$",
    re.DOTALL,
)


def move_requirement(text: str, new: str) -> str:
    """The PEP 508 requirement ``text`` with its version specifier moved to admit ``new``."""
    req = Requirement(text)
    if req.url:
        raise UserError(
            f"The project asks for {req.name} from a URL ({text}); tfrebuild will not change it.",
            "Change that requirement to a version range, or upgrade the project yourself.",
        )
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
    """``pyproject.toml`` text with the dependency string ``old`` replaced by ``new`` and every other byte as it
    was; refused when ``old`` is written anywhere else too (another table, a comment), where a text edit could
    not tell them apart. Checked by parsing both versions: only those dependency strings differ."""
    if old == new:
        return text
    before = tomllib.loads(text)
    expected = _count_in_dependencies(before, old)
    quoted = [f'"{old}"', f"'{old}'"]
    if expected == 0 or sum(text.count(q) for q in quoted) == 0:
        raise UserError(
            f'tfrebuild could not find the requirement "{old}" written plainly in pyproject.toml.',
            "Write it as a plain quoted string (no escapes), or change it yourself.",
        )
    if sum(text.count(q) for q in quoted) != expected:
        raise UserError(
            "Changing the TensorFlow requirement in pyproject.toml would change more than that "
            f'requirement ("{old}" is also written elsewhere in the file, e.g. in a comment or '
            "another table).",
            "Change the requirement yourself, then run tfrebuild again.",
        )
    out = text
    for q in quoted:
        out = out.replace(q, q.replace(old, new))
    if _swap_dependencies(before, old, new) != tomllib.loads(out):
        raise UserError(
            f'Changing the TensorFlow requirement in pyproject.toml would change more than that requirement ("{old}").',
            "Change the requirement yourself, then run tfrebuild again.",
        )
    return out


def _dependency_lists(data: dict):
    """Every list of requirement strings uv reads in a pyproject (as (table, key) pairs to rebuild them)."""
    project = data.get("project") if isinstance(data.get("project"), dict) else {}
    if isinstance(project.get("dependencies"), list):
        yield project, "dependencies"
    for table in (project.get("optional-dependencies"), data.get("dependency-groups")):
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, list):
                    yield table, key
    tool_uv = (data.get("tool") or {}).get("uv") if isinstance(data.get("tool"), dict) else None
    if isinstance(tool_uv, dict) and isinstance(tool_uv.get("dev-dependencies"), list):
        yield tool_uv, "dev-dependencies"


def _count_in_dependencies(data: dict, old: str) -> int:
    return sum(table[key].count(old) for table, key in _dependency_lists(data))


def _swap_dependencies(data: dict, old: str, new: str) -> dict:
    import copy

    out = copy.deepcopy(data)
    for table, key in _dependency_lists(out):
        table[key] = [new if item == old else item for item in table[key]]
    return out


# --- Poetry's own constraint syntax ([tool.poetry.dependencies] tensorflow-cpu = "^2.15")

_POETRY_CLAUSE = re.compile(r"^(\^|~(?!=)|===|==|!=|~=|<=|>=|<|>|=)?\s*(\*|[0-9][0-9A-Za-z.*+!-]*)$")


def _poetry_clauses(part: str) -> list[str]:
    """The clauses of one ``||`` alternative: separated by commas or spaces (``>=2.15, <2.16``, ``>=2.15 <2.16``)."""
    part = re.sub(r"(\^|~(?!=)|===|==|!=|~=|<=|>=|<|>|=)\s+", r"\1", part.strip())
    return [c for c in re.split(r"[,\s]+", part) if c]


def _poetry_clause_pep440(clause: str) -> str:
    m = _POETRY_CLAUSE.match(clause)
    if m is None:
        raise ValueError(f"cannot read the Poetry constraint {clause!r}")
    op, value = m.group(1) or "", m.group(2)
    if value == "*":
        return ""
    if op in ("", "=") and "*" in value:
        return f"=={value}"
    if op in ("", "="):
        return f"=={value}"
    if op in ("^", "~"):
        release = list(Version(value).release)
        if op == "^":  # the first non-zero part stays (^0.0 and ^0 as Poetry reads them)
            first = next((i for i, n in enumerate(release) if n != 0), len(release) - 1)
            upper = release[: first + 1]
        else:  # ~2 -> <3, ~2.15 -> <2.16, ~2.15.1 -> <2.16
            upper = release[: 1 if len(release) == 1 else 2]
        upper[-1] += 1
        return f">={value},<{_text(upper)}"
    return f"{op}{value}"


def poetry_specifiers(constraint: str) -> list[str]:
    """A Poetry constraint as PEP 440 specifier sets, one per ``||`` alternative (``""``: any version)."""
    out = []
    for part in constraint.split("||"):
        out.append(",".join(s for s in (_poetry_clause_pep440(c) for c in _poetry_clauses(part)) if s))
    return out


def poetry_admits(constraint: str, version: str) -> bool:
    new = Version(version)
    return any(SpecifierSet(s).contains(new, prereleases=True) for s in poetry_specifiers(constraint))


def _move_poetry_clause(clause: str, new: Version) -> str | None:
    m = _POETRY_CLAUSE.match(clause)
    if m is None:
        raise ValueError(f"cannot read the Poetry constraint {clause!r}")
    op, value = m.group(1) or "", m.group(2)
    if value == "*" or SpecifierSet(_poetry_clause_pep440(clause)).contains(new, prereleases=True):
        return clause
    if op in ("^", "~"):
        return f"{op}{_text(_parts(new, len(Version(value).release)))}"
    if op in ("", "="):
        if "*" in value:
            return f"{op}{_text(_parts(new, len(value.split('.')) - 1))}.*"
        return f"{op}{new}"
    return _move_clause(op, value, new)


def move_poetry_constraint(constraint: str, new: str) -> str:
    """A Poetry version constraint moved as little as possible to admit ``new``: ``2.15.1`` → ``2.18.0``
    (a pin stays a pin), ``~2.15`` → ``~2.18``, ``^2.15`` stays (it admits 2.18), ``>=2.15,<2.16`` →
    ``>=2.15,<2.19``; an ``||`` union is moved in its last alternative. Separators stay as written."""
    version = Version(new)
    if poetry_admits(constraint, new):
        return constraint
    head, sep, last = constraint.rpartition("||")
    lead = last[: len(last) - len(last.lstrip())]
    trail = last[len(last.rstrip()) :]
    body = last.strip()
    comma = ", " if ", " in body else ("," if "," in body else " ")
    moved = [c for c in (_move_poetry_clause(c, version) for c in _poetry_clauses(body)) if c is not None]
    result = head + sep + lead + (comma.join(moved) or new) + trail
    if not poetry_admits(result, new):  # never write a constraint that excludes it
        result = head + sep + lead + new + trail
    return result


def edit_toml_string(text: str, keys: tuple, old: str, new: str) -> str:
    """``text`` (TOML) with the string value at ``keys`` changed from ``old`` to ``new``: the one quoted
    occurrence of ``old`` whose replacement changes exactly that value (checked by parsing both)."""
    if old == new:
        return text
    expected = _set(tomllib.loads(text), keys, new)
    for quote in ('"', "'"):
        literal = f"{quote}{old}{quote}"
        start = text.find(literal)
        while start >= 0:
            out = text[:start] + f"{quote}{new}{quote}" + text[start + len(literal) :]
            try:
                if tomllib.loads(out) == expected:
                    return out
            except tomllib.TOMLDecodeError:
                pass
            start = text.find(literal, start + 1)
    raise UserError(
        f'tfrebuild could not find the requirement "{old}" written plainly in pyproject.toml.',
        "Write it as a plain quoted string (no escapes), or change it yourself.",
    )


def _set(data: dict, keys: tuple, value):
    import copy

    out = copy.deepcopy(data)
    node = out
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return out
