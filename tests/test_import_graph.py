"""The package's import graph, read with `ast` (nothing is imported): no cycle, and no arrow from the library up to
the project's scripts (train.py, distill.py, search.py, app.py, dataset_scripts/, benchmarks/)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "modeling_mckd"
SCRIPTS = {"dataset_scripts", "benchmarks", "train", "distill", "search", "app"}


def _module_name(path: Path) -> str:
    parts = ["modeling_mckd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module imported anywhere in the file (function-level imports too), as absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            # `from . import x` / `from .pkg import mod`: x may be a submodule
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in modules and m != name} | {"external:" + m for m in _imports(path, name) if m.split(".")[0] in SCRIPTS}
            for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target.startswith("external:"):
                continue
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    # known arrows, so that a parser that reads nothing cannot pass the other tests
    assert "modeling_mckd.objectives" in graph["modeling_mckd.runner"]
    assert "modeling_mckd.losses" in graph["modeling_mckd.objectives"]
    assert "modeling_mckd.data_prep.common" in graph["modeling_mckd.data_prep.features"]


def test_the_package_import_graph_has_no_cycle():
    assert _find_cycle(import_graph()) is None, " -> ".join(_find_cycle(import_graph()))


def test_a_cycle_is_found():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_library_never_imports_the_scripts():
    upward = {name: sorted(t[len("external:"):] for t in targets if t.startswith("external:"))
              for name, targets in import_graph().items()}
    assert {name: found for name, found in upward.items() if found} == {}
