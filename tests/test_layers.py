"""The layers of docs/design.md, read from the code: which module imports which.

The graph comes from the syntax tree of every module under src/conveyor: `import` and
`from ... import` statements anywhere in a module (top level, in functions, under
TYPE_CHECKING), relative imports resolved, `from package import module` counted as an import
of that module, and `importlib.import_module("a.literal.name")` (an import all the same).
Comments, docstrings and other strings are not imports and do not count.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "conveyor"

# From the top down: a module may import its own layer or any layer below it, never above.
# A module's place is its first name under `conveyor` (`conveyor.api.routes.jobs` -> `api`);
# "" is the package's own __init__. The command line is a composition root as well as a door:
# `conveyor run`/`api` start the server (so it sits above `server`), and the door rule (no
# store, no sqlalchemy) holds for it as for every door.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("command line", frozenset({"cli"})),  # starts every process; the client commands
    ("root", frozenset({"server"})),  # the composition root: mounts every door on one app
    ("doors", frozenset({"api", "dashboard", "compat", "client", "library"})),
    ("wiring", frozenset({"runtime"})),  # the Engine handed to the doors: services, wired
    ("services", frozenset({"services"})),
    ("engine", frozenset({"worker", "scheduler", "events", "handlers"})),
    ("store", frozenset({"store"})),
    # auth, mail and net import only errors and settings; metrics only domain; tracing
    # nothing of ours (opentelemetry only once tracing is turned on); heap only gc.
    ("base", frozenset({"", "domain", "settings", "errors", "logs", "metrics",
                        "auth", "mail", "net", "tracing", "heap"})),
)  # fmt: skip
DOORS = next(names for layer, names in LAYERS if layer == "doors") | {"cli"}
# The package's own __init__ is also the library's facade (docs/library.md): it names the
# library door's public calls (and JobContext) for type checkers and imports them on first
# use only (PEP 562), so `import conveyor` stays cheap (tests/library/test_lazy_import.py).
# These are its only imports up the layers.
FACADE = ("conveyor.library", "conveyor.worker.context")


@dataclass(frozen=True, order=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (a module where one is named, else a package)

    def __str__(self) -> str:
        return f"{self.module} -> {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def _from_target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    here = module.split(".") if is_package else module.split(".")[:-1]
    base = here[: len(here) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_import_module(node: ast.AST) -> bool:
    """`importlib.import_module("literal")` or `import_module("literal")`."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = node.args[0]
    return (
        name == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str)
    )


def imports_in(module: str, is_package: bool, source: str, known: set[str]) -> set[str]:
    """What `module` imports; `from package import name` is the module `package.name` when
    that is one of `known`, else `package`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(module, is_package, node)
            for alias in node.names:
                named = f"{target}.{alias.name}"
                found.add(named if named in known else target)
        elif _is_import_module(node):
            found.add(node.args[0].value)  # type: ignore[attr-defined]
    return found


@cache
def imports() -> tuple[Import, ...]:
    known = set(modules())
    found = {
        Import(module, target)
        for module, path in modules().items()
        for target in imports_in(module, path.name == "__init__.py", path.read_text(), known)
    }
    return tuple(sorted(found))


def internal() -> list[Import]:
    return [i for i in imports() if _is_ours(i.target) and i.target != i.module]


def _is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def place(name: str) -> str:
    """`conveyor.api.routes.jobs` -> `api`."""
    return name.split(".")[1] if "." in name else ""


def layer_of(name: str) -> int:
    """0 for the top layer; a module in no layer fails the test that checks they all have one."""
    for depth, (_layer, names) in enumerate(LAYERS):
        if place(name) in names:
            return depth
    raise LookupError(f"{name} is in no layer: add {place(name)!r} to LAYERS")


def _is_of(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def _facade(i: Import) -> bool:
    return i.module == PACKAGE and any(_is_of(i.target, name) for name in FACADE)


def _listed(found: list[Import]) -> str:
    return "\n".join(f"  {i}" for i in found)


def test_the_reader_sees_imports_not_strings() -> None:
    source = '''
"""import sqlalchemy"""  # import conveyor.store
from . import jobs, helper
from ..deps import Context
def later() -> None:
    import conveyor.store.backend
    importlib.import_module("conveyor.handlers")
    text = "from conveyor.store import users"
'''
    known = {"conveyor.api.routes.jobs"}
    assert imports_in("conveyor.api.routes", True, source, known) == {
        "conveyor.api.routes.jobs",  # a module of the package
        "conveyor.api.routes",  # a name defined in it
        "conveyor.api.deps",
        "conveyor.store.backend",
        "conveyor.handlers",
    }
    assert imports_in("conveyor.api.routes.jobs", False, "from . import x", known) == {
        "conveyor.api.routes"
    }


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({place(m) for m in modules()} - set().union(*(n for _, n in LAYERS)))
    assert not unplaced, f"add these to LAYERS in tests/test_layers.py: {unplaced}"


def test_no_door_imports_the_store_or_sqlalchemy() -> None:
    """The doors reach the data through services only (docs/design.md, Layers)."""
    found = [
        i
        for i in imports()
        if place(i.module) in DOORS
        and (_is_of(i.target, "conveyor.store") or _is_of(i.target, "sqlalchemy"))
    ]
    assert not found, "doors importing the store or sqlalchemy:\n" + _listed(found)


def test_only_the_store_imports_sqlalchemy() -> None:
    found = [i for i in imports() if _is_of(i.target, "sqlalchemy") and place(i.module) != "store"]
    assert not found, "sqlalchemy imported outside store/:\n" + _listed(found)


def test_imports_point_down_the_layers() -> None:
    up = [i for i in internal() if layer_of(i.target) < layer_of(i.module) and not _facade(i)]
    table = "\n".join(f"  {layer}: {', '.join(sorted(n or '__init__' for n in names))}"
                      for layer, names in LAYERS)  # fmt: skip
    assert not up, f"imports pointing up the layers (top first:\n{table}\n):\n" + _listed(up)


def test_the_api_imports_no_other_door() -> None:
    """Only the composition root mounts the doors together; the dashboard and the adapters
    may use the API's HTTP plumbing (deps, errors), never the reverse."""
    found = [
        i for i in internal() if place(i.module) == "api" and place(i.target) in DOORS - {"api"}
    ]
    assert not found, "the API importing another door:\n" + _listed(found)


def test_the_worker_imports_no_handler_module() -> None:
    """Handlers declare blueprints the engine includes; the worker never loads them itself."""
    found = [i for i in internal() if place(i.module) == "worker" and place(i.target) == "handlers"]
    assert not found, "the worker importing handlers:\n" + _listed(found)


def test_no_import_cycles() -> None:
    cycles = _cycles(internal())
    inside = [i for cycle in cycles for i in internal() if i.module in cycle and i.target in cycle]
    named = "\n".join(f"  cycle: {', '.join(sorted(c))}" for c in cycles)
    assert not cycles, f"import cycles\n{named}\nthrough:\n" + _listed(sorted(inside))


def _cycles(edges: list[Import]) -> list[set[str]]:
    """Modules that reach each other through imports, grouped; each group is one cycle."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.module, set()).add(edge.target)
    reach = {module: _reachable(graph, module) for module in graph}
    groups: list[set[str]] = []
    for module in sorted(graph):
        if module in reach[module] and not any(module in g for g in groups):
            groups.append({m for m in reach[module] if module in reach.get(m, set())})
    return groups


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen
