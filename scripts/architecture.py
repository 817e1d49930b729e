"""The package's import graph, read from the code: folder-level Mermaid for docs/architecture.md, and cycles.

``python scripts/architecture.py`` prints the diagram that docs/architecture.md embeds (a test checks
the page still shows the code as it is); ``--cycles`` lists module import cycles (a test wants none).
Imports inside functions count: a lazy import still makes one module depend on the other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedmnist"
# Drawn top to bottom: entry points first, shared plumbing last.
# Every part may use these two; drawing their arrows would hide the others.
EVERYWHERE = {"common", "settings"}
LAYERS = [
    "launch",
    "dashboard",
    "sweep",
    "runtimes",
    "server",
    "client",
    "privacy",
    "results",
    "model",
    "data",
    "settings",
    "common",
]


def module_name(path: Path) -> str:
    """``fedmnist/server/run.py`` -> ``fedmnist.server.run`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """Each fedmnist module and the fedmnist modules it imports (anywhere in its code)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedmnist"):
                for alias in node.names:  # `from fedmnist.server import run` imports the module run.
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("fedmnist"))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (imports for the type checker only)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def part(module: str) -> str:
    """The architecture part a module belongs to: its folder, or ``sweep`` for fedmnist/sweep.py."""
    name = module.split(".")[1] if module.count(".") else "fedmnist"
    return "sweep" if name == "sweep" else name


def part_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Which part imports which (a part's modules importing each other do not count)."""
    return {(part(a), part(b)) for a, targets in graph.items() for b in targets if part(a) != part(b)}


def mermaid(graph: dict[str, set[str]]) -> str:
    """The parts and their imports as a Mermaid flowchart, an arrow from importer to imported."""
    lines = ["```mermaid", "flowchart TD"]
    order = {name: i for i, name in enumerate(LAYERS)}
    edges = {(a, b) for a, b in part_edges(graph) if b not in EVERYWHERE or a in EVERYWHERE}
    for a, b in sorted(edges, key=lambda e: (order.get(e[0], 99), order.get(e[1], 99))):
        lines.append(f"    {a} --> {b}")
    lines.append("```")
    return "\n".join(lines)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle between modules, each as the modules around it (Tarjan's components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


if __name__ == "__main__":
    imports = module_imports()
    if "--cycles" in sys.argv:
        for cycle in cycles(imports):
            print(" <-> ".join(cycle))
    else:
        print(mermaid(imports))
