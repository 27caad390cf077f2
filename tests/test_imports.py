"""The import graph of ``offrl/`` has no cycles (docs/architecture.md, "Rules of the house").

Every ``import`` and ``from ... import`` in a module counts, also those inside functions: a
function-level import that closes a cycle is a cycle that only shows later. Imports under
``if TYPE_CHECKING:`` do not run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "offrl"


def module_name(path: Path) -> str:
    """``offrl/io/json_reader.py`` -> ``offrl.io.json_reader``; a package is its ``__init__``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of every offrl module (or module attribute) ``tree`` imports."""
    skip = {id(n) for n in ast.walk(tree) if isinstance(n, ast.If) and is_type_checking(n)}
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            skipped.update(id(child) for child in ast.walk(node) if child is not node)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    return {n for n in names if n == "offrl" or n.startswith("offrl.")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the offrl modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = imported_names(tree, name, path.name == "__init__.py")
        # "from offrl.io import sources" names a module; "from offrl.batch import X" names
        # an attribute of the module offrl.batch: keep the longest prefix that is a module.
        edges = set()
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        state[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                path = [n for n, _ in stack]
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_a_cycle_and_passes_a_dag() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_resolve_to_modules() -> None:
    tree = ast.parse("from . import sources\nfrom ..batch import SampleBatch\n")
    names = imported_names(tree, "offrl.io.reader", is_package=False)
    assert {"offrl.io.sources", "offrl.batch.SampleBatch"} <= names


def test_type_checking_imports_are_left_out() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import offrl.cli\n")
    assert imported_names(tree, "offrl.x", is_package=False) == set()


def test_offrl_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def imported_closure(graph: dict[str, set[str]], root: str) -> set[str]:
    """Every offrl module ``root`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_bottom_layer_imports_no_other_offrl_module() -> None:
    graph = import_graph()
    for module in ("offrl.errors", "offrl.batch", "offrl.seeding", "offrl.returns"):
        assert graph[module] == set(), f"{module} imports {sorted(graph[module])}"


def test_only_the_command_line_imports_the_command_line() -> None:
    graph = import_graph()
    top = {m for m in graph if m == "offrl.cli" or m.startswith("offrl.commands")}
    for module, targets in graph.items():
        if module not in top:
            assert not targets & top, f"{module} imports {sorted(targets & top)}"


def test_validating_a_config_loads_no_reader() -> None:
    # offrl.config checks input specs through io/specs.py only: no orjson, lz4 or readers.
    allowed = {"offrl", "offrl.batch", "offrl.errors", "offrl.io", "offrl.io.specs"}
    allowed.add("offrl.io.sources")
    closure = imported_closure(import_graph(), "offrl.config")
    assert closure <= allowed, sorted(closure - allowed)


# docs/architecture.md, "Layers": a module imports from its own layer or below.
LAYERS: list[tuple[str, ...]] = [
    ("offrl", "offrl.errors", "offrl.batch", "offrl.seeding", "offrl.returns"),
    (
        "offrl.imports",
        "offrl.preprocess",
        "offrl.io",
        "offrl.io.sources",
        "offrl.io.specs",
        "offrl.config",
        "offrl.signals",
        "offrl.results",
        "offrl.progress",
        "offrl.tensorboard",
        "offrl.plot",
    ),
    (
        "offrl.io.*",
        "offrl.spaces",
        "offrl.algos*",
        "offrl.estimators*",
        "offrl.envs",
        "offrl.restore",
        "offrl.rollout",
    ),
    ("offrl.trainer", "offrl.workers*", "offrl.datatools*"),
    ("offrl.batch_sources", "offrl.runspec", "offrl.wiring"),
    ("offrl.commands*", "offrl.cli"),
]


def layer_of(module: str) -> int:
    """The layer of ``module``: an exact name first, then the longest matching prefix*."""
    for i, names in enumerate(LAYERS):
        if module in names:
            return i
    best, best_len = -1, -1
    for i, names in enumerate(LAYERS):
        for pattern in names:
            stem = pattern.rstrip("*")
            if pattern.endswith("*") and module.startswith(stem) and len(stem) > best_len:
                best, best_len = i, len(stem)
    return best


def test_every_module_has_a_layer_and_imports_nothing_above_it() -> None:
    graph = import_graph()
    unplaced = sorted(m for m in graph if layer_of(m) < 0)
    assert not unplaced, f"add these modules to LAYERS (and docs/architecture.md): {unplaced}"
    upward = [
        f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)
    ]
    assert not upward, "imports from a higher layer: " + ", ".join(sorted(upward))


def test_layer_of_prefers_exact_names_and_longer_prefixes() -> None:
    assert layer_of("offrl.io.specs") == 1 and layer_of("offrl.io.json_reader") == 2
    assert layer_of("offrl.commands.train") == 5 and layer_of("offrl.nowhere") == -1
