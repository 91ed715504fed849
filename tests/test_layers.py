"""The package's layers point down: a module imports only from lower layers (or its own package)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "fathom"

# Lowest first. Packages on one layer (data and model; train and demo) do not import each other either.
LAYERS = [
    {"errors", "fsutil", "labels"},
    {"config"},
    {"data", "model"},
    {"schedule"},
    {"estimate"},
    {"reports", "eval", "export"},
    {"train", "demo"},
    {"cli_parser"},
    {"cli"},
    {"__main__"},
]


def _unit(module: str) -> str:
    """fathom.data.cache -> data; fathom.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fathom"


def _module(path: Path) -> str:
    """src/fathom/data/cache.py -> fathom.data.cache; src/fathom/__init__.py -> fathom."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fathom."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fathom.")}
    return found


def test_every_module_sits_on_a_layer():
    units = {_unit(_module(p)) for p in PACKAGE.rglob("*.py")}
    assert units - {"fathom"} <= set().union(*LAYERS), "add the new module to LAYERS in tests/test_layers.py"


def test_imports_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(_module(path))
        if unit == "fathom":  # the package's __init__
            continue
        for target in _imports(path):
            other = _unit(target)
            if other != unit and _rank(other) >= _rank(unit):
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not upward, "lower layers import higher ones:\n" + "\n".join(upward)


def _import_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, at any depth of its code."""
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fathom"):
                # `from fathom.model import lora, rope` names modules; `from fathom.model.rope import x`, its own
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
                edges |= submodules or ({node.module} & modules)
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names} & modules
        graph[_module(path)] = edges - {_module(path)}
    return graph


def test_no_import_circle():
    """No module reaches itself through its imports (function-level imports too: they hide a circle, not
    remove it)."""
    graph, circles = _import_graph(), []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in trail:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in seen:
                seen.add(target)
                visit(target, [*trail, target])

    seen: set[str] = set()
    for start in sorted(graph):
        if start not in seen:
            seen.add(start)
            visit(start, [start])
    assert circles == []


def test_functions_fit_a_screen_and_the_cli_only_parses():
    """No function over 80 lines; cli.py (the commands' handlers) at most 450: what a command shows is
    rendered by fathom.reports, its options are in cli_parser."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)
    assert len((PACKAGE / "cli.py").read_text(encoding="utf-8").splitlines()) <= 450
