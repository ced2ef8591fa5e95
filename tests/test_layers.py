"""The package's layer rule (docs/architecture.md), read from the source's imports.

Every ``import pluralign...`` / ``from pluralign... import`` in src/pluralign,
at module level or inside a function (``if TYPE_CHECKING:`` blocks excepted:
they never run), must point to a lower layer, or stay inside its own package.
``train`` and ``eval`` are siblings over ``beliefs`` and never import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pluralign"

#: Longest matching prefix wins. Same number: may not import each other (only itself).
LAYERS: dict[str, int] = {
    "pluralign": 0, "pluralign.registry": 0, "pluralign.paths": 0, "pluralign._quiet": 0,
    "pluralign.resources": 0,
    "pluralign.config": 1,
    "pluralign.models": 2, "pluralign.runs": 2, "pluralign.data.records": 2,
    "pluralign.llm": 3, "pluralign.run_folder": 3, "pluralign.data.toy": 3,
    "pluralign.beliefs": 4,
    "pluralign.data": 5, "pluralign.train": 5, "pluralign.eval": 5, "pluralign.generation": 5,
    "pluralign.gpa": 6,
    "pluralign.serve": 6, "pluralign.demo": 6,
    "pluralign.cli": 7,
    "pluralign.__main__": 8,
}
#: The top package only re-exports a few names lazily (``pluralign.load_model``); it is
#: the facade above everything, though it sits in layer 0 for its submodules' sake.
FACADE = "pluralign"


def owner(module: str) -> str:
    """The LAYERS key a module belongs to (its longest matching prefix)."""
    keys = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    if not keys:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and to "
                             "docs/architecture.md")
    return max(keys, key=len)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every pluralign import that can run."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("pluralign"):
                yield node.lineno, node.module
                # ``from pluralign.eval import judges`` imports the submodule too; names
                # that are not modules drop out where the graph keeps modules only.
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pluralign"):
                    yield node.lineno, alias.name
        stack.extend(ast.iter_child_nodes(node))


def all_imports() -> dict[str, list[tuple[int, str]]]:
    return {module_name(path): sorted(runtime_imports(ast.parse(path.read_text())))
            for path in sorted(SRC.rglob("*.py"))}


_TOP_MODULES = {key.split(".")[1] for key in LAYERS if key.count(".") >= 1}


def layer_violations(imports: dict[str, list[tuple[int, str]]]) -> list[str]:
    found = []
    for module, targets in imports.items():
        if module == FACADE:
            continue
        source = owner(module)
        for line, target in targets:
            if target.count(".") == 1 and target.split(".")[1] not in _TOP_MODULES:
                continue  # ``from pluralign import __version__``: the top package itself
            dest = owner(target)
            if dest == source or dest == "pluralign":
                continue
            if LAYERS[dest] >= LAYERS[source]:
                found.append(f"{module}:{line} imports {target} "
                             f"(layer {LAYERS[dest]} from layer {LAYERS[source]})")
    return found


def import_cycles(imports: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Cycles among modules (Tarjan's strongly connected components of size > 1)."""
    graph = {m: {t for _, t in targets if t in imports and t != m}
             for m, targets in imports.items()}
    for module in list(graph):  # importing a package's submodule runs the package first
        graph[module] -= {p for p in graph[module] if module.startswith(p + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_every_import_points_down_a_layer():
    assert layer_violations(all_imports()) == []


def test_train_and_eval_never_import_each_other():
    imports = all_imports()
    crossing = [f"{m} imports {t}" for m, targets in imports.items() for _, t in targets
                if (m.startswith("pluralign.eval") and t.startswith("pluralign.train"))
                or (m.startswith(("pluralign.train", "pluralign.data"))
                    and t.startswith("pluralign.eval"))]
    assert crossing == []


def test_no_import_cycles():
    assert import_cycles(all_imports()) == []


def test_the_checks_catch_a_violation_and_a_cycle():
    # The rule and the cycle finder on hand-made graphs, so the tests above can fail.
    bad = {"pluralign.eval.metrics": [(3, "pluralign.train.losses")],
           "pluralign.beliefs.tokenize": [(9, "pluralign.data.builders.reviews")]}
    assert layer_violations(bad) == [
        "pluralign.eval.metrics:3 imports pluralign.train.losses (layer 5 from layer 5)",
        "pluralign.beliefs.tokenize:9 imports pluralign.data.builders.reviews "
        "(layer 5 from layer 4)",
    ]
    loop = {"pluralign.eval.a": [(1, "pluralign.eval.b")],
            "pluralign.eval.b": [(1, "pluralign.eval.c")],
            "pluralign.eval.c": [(1, "pluralign.eval.a")],
            "pluralign.eval.d": [(1, "pluralign.eval.a")]}
    assert import_cycles(loop) == [["pluralign.eval.a", "pluralign.eval.b", "pluralign.eval.c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from pluralign.train import api\ndef f():\n"
                     "    import pluralign.eval.metrics\n")
    assert list(runtime_imports(tree)) == [(5, "pluralign.eval.metrics")]
    tree = ast.parse("from pluralign.eval import judges\n")
    assert list(runtime_imports(tree)) == [(1, "pluralign.eval"), (1, "pluralign.eval.judges")]


@pytest.mark.parametrize("module", ["pluralign.beliefs.formats", "pluralign.data.builders.mmoqa",
                                    "pluralign.eval.report", "pluralign.cli.main"])
def test_every_module_has_a_layer(module):
    assert owner(module) in LAYERS
