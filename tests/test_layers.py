"""The layer contract of docs/design.md, enforced: every ``import`` in ``rebuild/`` (those inside functions and
``if TYPE_CHECKING:`` blocks included) points to its own layer or one below, and nothing imports in a circle.

    cli → commands → core → doctor / project / store / env / index / knowledge → util → errors, the package root

The sibling packages of the middle layer may import each other, but never in a circle. Cycles are looked for
between modules and between the sibling packages, among the imports that run (``if TYPE_CHECKING:`` blocks never
do). What is still wrong is listed below in ``KNOWN``, each with its reason; the test fails on any new violation
and on a listed one that has gone (then delete its line). ``python tests/test_layers.py`` prints the contract.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "rebuild"

LAYERS: list[tuple[str, ...]] = [
    ("rebuild.__main__",),
    ("rebuild.cli",),
    ("rebuild.commands",),
    ("rebuild.core",),
    ("rebuild.doctor", "rebuild.project", "rebuild.store", "rebuild.env", "rebuild.index", "rebuild.knowledge"),
    ("rebuild.util",),
    ("rebuild.errors", "rebuild"),  # the package root holds __version__ and SELF
]

#: Imports that break the contract today, each with why; a later session removes them (and their lines here).
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    runs: bool  # False inside ``if TYPE_CHECKING:``
    nested: bool  # inside a function, class or block, not at the module's top level


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _owner(name: str) -> str | None:
    """The module of ``rebuild`` that ``name`` (a module or a name inside one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, source: str | None = None) -> list[Import]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target) if target.startswith("rebuild") else None
            if owner is not None and owner != name:
                found.append(Import(name, owner, node.lineno, id(node) not in typing_only, id(node) not in top))
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    best = None
    for i, members in enumerate(LAYERS):
        for member in members:
            if name == member or name.startswith(member + "."):
                if best is None or len(member) > best[1]:
                    best = (i, len(member))
    assert best is not None, f"{name} is in no layer of the contract: add it to LAYERS (and docs/design.md)"
    return best[0]


def sibling_package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def layer_violations() -> list[Import]:
    return [imp for imports in GRAPH.values() for imp in imports if layer_of(imp.target) < layer_of(imp.source)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def runtime_edges(skip: set[tuple[str, str]]) -> dict[str, set[str]]:
    return {
        name: {imp.target for imp in imports if imp.runs and (name, imp.target) not in skip}
        for name, imports in GRAPH.items()
    }


def module_cycles(skip: set[tuple[str, str]]) -> list[list[str]]:
    return _cycles(runtime_edges(skip))


def package_cycles(skip: set[tuple[str, str]]) -> list[list[str]]:
    """Cycles between the sibling packages of one layer (a layer violation is reported as such, not here)."""
    packages: dict[str, set[str]] = {}
    for name, targets in runtime_edges(skip).items():
        for target in targets:
            a, b = sibling_package(name), sibling_package(target)
            if a != b and layer_of(a) == layer_of(b):
                packages.setdefault(a, set()).add(b)
    return _cycles(packages)


def report() -> list[str]:
    known = set(KNOWN)
    lines = ["layers (an import may point to its own layer or one below):"]
    lines += [f"  {i}. {' | '.join(members)}" for i, members in enumerate(LAYERS)]
    count = sum(len(v) for v in GRAPH.values())
    inside = sum(1 for imports in GRAPH.values() for imp in imports if imp.nested)
    lines.append(f"{len(MODULES)} modules, {count} imports of rebuild modules ({inside} inside functions or blocks)")
    bad = [i for i in layer_violations() if (i.source, i.target) not in known]
    lines.append(f"layer violations: {len(bad)} new, {sum(1 for v in KNOWN.values() if v == 'layer')} known")
    lines += [f"  NEW {i.source} -> {i.target} (line {i.line})" for i in bad]
    lines.append(f"module cycles: {module_cycles(known) or 'none'} (known, excluded: {len(module_cycles(set()))})")
    lines.append(
        f"sibling package cycles: {package_cycles(known) or 'none'} (known, excluded: {package_cycles(set())})"
    )
    lines += [f"  known: {a} -> {b} ({why})" for (a, b), why in KNOWN.items()]
    return lines


# ---------------------------------------------------------------------------------------------------------------


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_point_down_the_layers():
    bad = [f"{i.source} -> {i.target} (line {i.line})" for i in layer_violations() if (i.source, i.target) not in KNOWN]
    assert not bad, "imports that point up the layers of docs/design.md:\n" + "\n".join(bad)


def test_no_import_cycles():
    known = set(KNOWN)
    assert module_cycles(known) == [], "modules that import each other (move what they share down a layer)"
    assert package_cycles(known) == [], "sibling packages that import each other"


def test_the_known_exceptions_still_exist():
    """A listed exception that has been fixed must leave the list, so that it cannot come back unnoticed."""
    edges = {(imp.source, imp.target) for imports in GRAPH.values() for imp in imports}
    gone = [edge for edge in KNOWN if edge not in edges]
    assert not gone, f"fixed: remove them from KNOWN: {gone}"
    needed = {edge for edge, why in KNOWN.items() if why == "cycle"}
    for edge in needed:  # each cycle exception still closes a cycle (else it would hide nothing)
        rest = set(KNOWN) - {edge}
        assert module_cycles(rest) or package_cycles(rest), f"{edge} no longer closes a cycle"


def test_the_contract_sees_imports_inside_functions_and_relative_ones():
    """An upward import hidden in a function body or spelled relatively is found; a typing-only one is marked."""
    source = (
        MODULES["rebuild.util.versions"].read_text(encoding="utf-8")
        + "\n\ndef _hidden():\n    from ..core import plan\n    import rebuild.cli.render as r\n"
        + "\nif TYPE_CHECKING:\n    from rebuild.store.store import Store\n"
    )
    found = {(i.target, i.runs, i.nested) for i in imports_of("rebuild.util.versions", source)}
    assert {
        ("rebuild.core.plan", True, True),
        ("rebuild.cli.render", True, True),
        ("rebuild.store.store", False, True),
    } <= found
    assert layer_of("rebuild.core.plan") < layer_of("rebuild.util.versions")


if __name__ == "__main__":
    print("\n".join(report()))
