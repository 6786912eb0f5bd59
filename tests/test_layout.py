"""The packages' layout: no import circle, one declared seam between production and the testing toolkit, short modules.

The imports are read from the source, not from `sys.modules`, so that every import counts: at the
top of a module, inside a function (a lazy import runs later, but it still makes the importing
module depend on the imported one), and under `if TYPE_CHECKING:` (read only by type checkers,
but a circle there still ties two modules to each other). A submodule does not depend on its
parent package just because Python imports the package first.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import fastapi_tasks

# Where the packages are imported from: the checkout, or an installed copy (scripts/check_versions.sh and
# check_wheel.sh run the tests against one, away from the sources).
ROOT = Path(fastapi_tasks.__file__).resolve().parent.parent
PACKAGES = ("fastapi_tasks", "fastapi_tasks_testing")

TYPE_ONLY_BACK_EDGES = {
    # A config names the handler a task is handed to (`TaskErrorHandler` takes a `Task`), and a task
    # holds its config: the two types refer to each other. The reference from the config to the task
    # is for the type checker only; at run time `task` imports `config` and never the reverse.
    ("fastapi_tasks.config", "fastapi_tasks.task"),
}
"""Edges allowed to close a circle, each only under `if TYPE_CHECKING:`, with the reason."""

SEAM = "fastapi_tasks._seam"

MAX_MODULE_LINES = 400
"""A module longer than this holds more than one concept: split it (issue 19)."""

LONG_MODULES: dict[str, str] = {}
"""Modules allowed over `MAX_MODULE_LINES` (path from the project root -> why), each with its reason."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    kind: str  # "top", "lazy" (inside a function) or "type" (under `if TYPE_CHECKING:`)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    is_package = path.name == "__init__.py"

    def add(target: str, line: int, kind: str) -> None:
        # The deepest module of ours that the name denotes (`a.b.c` may be a module, or a name in `a.b`).
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(f"{target}."):
            found.append(Import(name, target, line, kind))

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and kind == "top":
                child_kind = "lazy"
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit_statement(statement, "type")
                for statement in child.orelse:
                    visit_statement(statement, kind)
                continue
            visit_statement(child, child_kind)

    def visit_statement(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, kind)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno, kind)
        visit(node, kind)

    visit(ast.parse(path.read_text(encoding="utf-8")), "top")
    return found


def import_graph() -> list[Import]:
    modules = all_modules()
    return [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]


def circles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_reader_sees_every_kind_of_import() -> None:
    # The reader itself, on a module that imports in all three ways: a check that cannot see a lazy or
    # a type-only import would pass vacuously.
    modules = all_modules()
    kinds = {
        (edge.imported, edge.kind)
        for edge in imports_of("fastapi_tasks.config", modules["fastapi_tasks.config"], modules)
    }
    assert ("fastapi_tasks.task", "type") in kinds
    definition = {
        (edge.imported, edge.kind)
        for edge in imports_of("fastapi_tasks.definition", modules["fastapi_tasks.definition"], modules)
    }
    assert ("fastapi_tasks.dispatchers._registry", "lazy") in definition
    assert ("fastapi_tasks.task", "top") in definition
    assert circles([Import("a", "b", 1, "top"), Import("b", "c", 1, "lazy"), Import("c", "a", 1, "type")]) == [
        ["a", "b", "c"]
    ]


def test_no_import_circle_in_either_package() -> None:
    edges = [edge for edge in import_graph() if (edge.importer, edge.imported) not in TYPE_ONLY_BACK_EDGES]
    found = circles(edges)
    described = [
        " -> ".join(component)
        + ": "
        + "; ".join(
            f"{edge.importer} imports {edge.imported} (line {edge.line}, {edge.kind})"
            for edge in edges
            if edge.importer in component and edge.imported in component
        )
        for component in found
    ]
    assert not found, "Import circles:\n" + "\n".join(f"- {line}" for line in described)


@pytest.mark.parametrize(("importer", "imported"), sorted(TYPE_ONLY_BACK_EDGES))
def test_each_allowed_back_edge_is_for_the_type_checker_only(importer: str, imported: str) -> None:
    kinds = {edge.kind for edge in import_graph() if (edge.importer, edge.imported) == (importer, imported)}
    assert kinds == {"type"}, f"{importer} must import {imported} only under `if TYPE_CHECKING:`, not {kinds}"


def test_the_testing_toolkit_reaches_production_internals_only_through_the_seam() -> None:
    crossing = sorted(
        f"{edge.importer} imports {edge.imported} (line {edge.line})"
        for edge in import_graph()
        if edge.importer.startswith("fastapi_tasks_testing")
        and edge.imported.startswith("fastapi_tasks.")
        and edge.imported != SEAM
        and any(part.startswith("_") for part in edge.imported.split(".")[1:])
    )
    assert not crossing, "Private production modules imported outside the seam:\n" + "\n".join(
        f"- {line}" for line in crossing
    )


def test_production_never_imports_the_testing_toolkit() -> None:
    upward = sorted(
        f"{edge.importer} imports {edge.imported}"
        for edge in import_graph()
        if edge.importer.startswith("fastapi_tasks.") or edge.importer == "fastapi_tasks"
        if edge.imported.startswith("fastapi_tasks_testing")
    )
    assert not upward


def test_the_seam_declares_itself_the_contract() -> None:
    import fastapi_tasks._seam

    assert fastapi_tasks._seam.__doc__ is not None
    assert "contract" in fastapi_tasks._seam.__doc__
    assert len(set(fastapi_tasks._seam.__all__)) == len(fastapi_tasks._seam.__all__)
    for name in fastapi_tasks._seam.__all__:
        assert hasattr(fastapi_tasks._seam, name)


def _module_lengths() -> dict[str, int]:
    return {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in all_modules().values()
    }


def test_no_module_is_longer_than_the_limit() -> None:
    long = sorted(
        f"{path}: {lines} lines"
        for path, lines in _module_lengths().items()
        if lines > MAX_MODULE_LINES and path not in LONG_MODULES
    )
    assert not long, (
        f"Modules longer than {MAX_MODULE_LINES} lines (split each by concept, or list it in "
        "tests/test_layout.py's LONG_MODULES with the reason):\n" + "\n".join(f"- {line}" for line in long)
    )


def test_each_long_module_exception_is_still_needed() -> None:
    lengths = _module_lengths()
    stale = sorted(path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_MODULE_LINES)
    assert not stale, f"LONG_MODULES lists modules that are gone or no longer over {MAX_MODULE_LINES} lines: {stale}"
    assert all(reason.strip() for reason in LONG_MODULES.values()), "each entry of LONG_MODULES needs its reason"
