"""The import graph of ``nemo_rence`` has no cycle.

The graph is read from the source with ``ast`` (nothing is imported): one node per module
(a package is its ``__init__``), one edge per ``import`` / ``from ... import`` anywhere in the
file - at module level, inside functions and under ``if TYPE_CHECKING:`` alike, because a lazy
import hides a cycle without removing it. Importing ``a.b.c`` also runs the ``__init__`` of
``a.b`` and ``a``, so the importer gets an edge to each such package too, except to its own
enclosing packages (which Python has already started importing when it reaches the module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "nemo_rence"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The module ``name`` refers to: itself, or its nearest enclosing module (an attribute)."""
    known = set(modules)
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted module name a file imports (relative imports resolved)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> modules it imports`` over the package at ``root`` (see module doc)."""
    package = root.name
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = set(_ancestors(name))
        edges: set[str] = set()
        for imported in _imported_names(tree, name, path.name == "__init__.py"):
            if imported != package and not imported.startswith(package + "."):
                continue
            target = _resolve(imported, modules)
            if target is None:
                continue
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a not in own)
        edges.discard(name)
        edges -= own
        graph[name] = edges
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); only components of more than one module are returned."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first), for messages."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if nxt not in parent:
                    parent[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{component} is not strongly connected")  # pragma: no cover


def _describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    """Per component: a shortest cycle, then every import edge inside the component."""
    lines = []
    for c in components:
        lines.append(f"  cycle: {' -> '.join(shortest_cycle(graph, c))}")
        lines += [f"    {a} imports {b}" for a in c for b in sorted(graph[a] & set(c))]
    return "\n".join(lines)


def test_reader_sees_function_level_and_relative_imports() -> None:
    source = "import os\n\ndef f():\n    from nemo_rence.a import b\n\nfrom . import c\nfrom .d import e\n"
    names = _imported_names(ast.parse(source), "nemo_rence.pkg.mod", is_package=False)
    assert {"nemo_rence.a", "nemo_rence.a.b", "nemo_rence.pkg.c", "nemo_rence.pkg.d"} <= names
    assert "os" in names


def test_tarjan_finds_the_cycle_and_leaves_out_what_only_points_into_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected_components(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_package_init_and_a_lazy_import_is_found(tmp_path: Path) -> None:
    # The shape of the cycle this test was written against: ``ckpt.mapping`` imports a neutral
    # class from ``pol.model``, which runs ``pol/__init__``, which imports ``pol.policy``, whose
    # function imports ``ckpt.mapping``.
    pkg = tmp_path / "pkg"
    _write(
        pkg,
        {
            "__init__.py": "",
            "ckpt/__init__.py": "",
            "ckpt/mapping.py": "from pkg.pol.model import Arch\n",
            "pol/__init__.py": "from pkg.pol.policy import Policy\n",
            "pol/model.py": "class Arch: ...\n",
            "pol/policy.py": "from . import model\n\ndef f():\n    from pkg.ckpt import mapping\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.ckpt.mapping"] == {"pkg.pol", "pkg.pol.model"}
    assert "pkg.pol" not in graph["pkg.pol.policy"]  # its own package: no edge
    assert strongly_connected_components(graph) == [
        ["pkg.ckpt.mapping", "pkg.pol", "pkg.pol.policy"]
    ]


def test_nemo_rence_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "nemo_rence.checkpoint.mapping" in graph and any(graph.values())
    components = strongly_connected_components(graph)
    assert not components, "import cycle(s) inside nemo_rence:\n" + _describe(graph, components)
