"""The import graph around the composition root, read with `ast`: the API door imports no
other door, and the worker imports no handler module (handlers import the worker's types)."""

from __future__ import annotations

import ast
from pathlib import Path

import conveyor

SRC = Path(conveyor.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports: at the top, inside a function, or by a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (name := _imported_by_string(node)) is not None:
            found.add(name)
    return found


def _imported_by_string(node: ast.AST) -> str | None:
    """The name in `import_module("a.b")` or `importlib.import_module("a.b")`."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    name = node.args[0].value
    return name if called == "import_module" and isinstance(name, str) else None


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """`package`'s imports of a `forbidden` package or anything in it."""
    return sorted(
        f"{path.relative_to(SRC)}: {name}"
        for path in (SRC / package).rglob("*.py")
        for name in _imports(path)
        if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    )


def test_the_api_imports_neither_the_dashboard_nor_the_adapters() -> None:
    assert _offenders("api", ("conveyor.dashboard", "conveyor.compat")) == []


def test_the_worker_imports_no_handler_module() -> None:
    assert _offenders("worker", ("conveyor.handlers",)) == []
