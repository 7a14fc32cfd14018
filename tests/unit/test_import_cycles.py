"""No import cycle among vcube's modules (nor workflows'), counting imports inside functions too.

A function-level import only hides a cycle from Python's import machinery; the modules still
depend on each other. The walk reads the source with `ast`, so it sees every import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "src" / "vcube"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The vcube modules a module's source imports, wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                out.add(node.module)
            # `from vcube import storage` imports the module vcube.storage
            out |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return out


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    modules = {_module_name(p, root) for p in files}
    graph = {}
    for p in files:
        name = _module_name(p, root)
        graph[name] = _imports(ast.parse(p.read_text()), modules) - {name, root.name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*path[path.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 10, "the walk found too few modules: wrong root?"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_workflows_package_has_no_import_cycle() -> None:
    graph = import_graph(REPO / "workflows")
    assert {"workflows.parts", "workflows.group", "workflows.build"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "vcube"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vcube import b\n")
    (pkg / "b.py").write_text("def f():\n    from vcube.c import g\n")
    (pkg / "c.py").write_text("import vcube.a\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle == ["vcube.a", "vcube.b", "vcube.c", "vcube.a"]


@pytest.mark.parametrize("text", ["from vcube import d\n", "from vcube.d import x\n"])
def test_no_cycle_when_the_imports_go_one_way(tmp_path: Path, text: str) -> None:
    pkg = tmp_path / "vcube"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(text)
    (pkg / "d.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg)) is None
    assert import_graph(pkg)["vcube.a"] == {"vcube.d"}
