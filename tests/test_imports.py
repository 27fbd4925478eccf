"""The package's import graph, read from the source with `ast`: no cycle, no provider module
imported from outside `providers/`, and the version where low modules can read it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import llm_magic

PACKAGE = Path(llm_magic.__file__).parent
ROOT = PACKAGE.parent
# What modules outside providers/ may import from it: the registry and the shared vocabulary.
PROVIDERS_PUBLIC = {"llm_magic.providers", "llm_magic.providers.base"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside a function, except those that only a
    type checker runs (`if TYPE_CHECKING:`)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that importing `name` can import (a submodule brings its parents)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
            continue
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:  # `from . import x`: module x, or a name of the package
            sub = f"{base}.{alias.name}"
            targets.add(sub if sub in modules else base)
    edges = set()
    for target in targets:
        explicit = True
        while target:
            # Importing a.b.c runs a.b first: a subpackage's __init__ counts. The package's own
            # __init__ only when named: every module sits below it, and it imports lazily.
            if target in modules and target != name and (explicit or target != "llm_magic"):
                edges.add(target)
            target, explicit = target.rpartition(".")[0], False
    return edges


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    edges = graph()
    # A few edges known to exist, so that an empty graph cannot pass the tests below.
    assert "llm_magic.providers" in edges["llm_magic._backends"]
    assert "llm_magic.providers.base" in edges["llm_magic.providers._ollama"]
    assert "llm_magic._redaction" in edges["llm_magic.providers.base"]


def test_cycles_are_found_when_there_are_some() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    assert _cycles(graph()) == []


def test_only_providers_imports_a_provider_module() -> None:
    wrong = {
        (name, target)
        for name, targets in graph().items()
        if not name.startswith("llm_magic.providers")
        for target in targets
        if target.startswith("llm_magic.providers") and target not in PROVIDERS_PUBLIC
    }
    assert wrong == set()


def test_the_version_is_in_a_low_module_and_matches_the_project() -> None:
    from llm_magic._version import __version__

    assert llm_magic.__version__ == __version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == __version__
    assert graph()["llm_magic._version"] == set()
