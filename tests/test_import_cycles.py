"""relulint's modules import each other in one direction: no cycle, TYPE_CHECKING imports included.

A cycle hidden behind ``if TYPE_CHECKING:`` still says two modules each know the other's types, which is
the coupling the module layout is meant to prevent (CONTRIBUTING.md); imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx

import relulint

PACKAGE = Path(relulint.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its body (``from a import b`` names the
    module ``a.b`` when that is one, else ``a``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path = PACKAGE) -> networkx.DiGraph:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    graph = networkx.DiGraph()
    graph.add_nodes_from(modules)
    for path in paths:
        graph.add_edges_from((module_name(path, root), target) for target in imported_modules(path, modules, root))
    return graph


def test_relulint_has_no_import_cycle():
    graph = import_graph()
    assert graph.number_of_nodes() > 60 and graph.number_of_edges() > 150  # the walk saw the package
    cycles = [sorted(component) for component in networkx.strongly_connected_components(graph) if len(component) > 1]
    assert not cycles, f"modules that import each other (directly or around a loop): {cycles}"


def test_the_walk_sees_a_cycle_behind_type_checking(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("", encoding="utf-8")
    (root / "a.py").write_text("from pkg.b import thing\n", encoding="utf-8")
    (root / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\nthing = 1\n", encoding="utf-8"
    )
    (root / "c.py").write_text("def later():\n    from . import a\n", encoding="utf-8")
    graph = import_graph(root)
    assert set(graph.edges) == {("pkg.a", "pkg.b"), ("pkg.b", "pkg.a"), ("pkg.c", "pkg.a")}
    assert [sorted(c) for c in networkx.strongly_connected_components(graph) if len(c) > 1] == [["pkg.a", "pkg.b"]]
