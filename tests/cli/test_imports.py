"""Reading the command line loads nothing of the server: the client commands, the assembled
`conveyor` app, `conveyor --help` and every command's `--help` leave FastAPI, SQLAlchemy, the
store, the services, the API, the worker, the scheduler and even the settings (pydantic-
settings, a third of `--help`'s CPU when conveyor.logs pulled it in) unimported; each server
command imports them when it runs. And no CLI module reaches the store, even lazily: not by
import, not through `engine.backend`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor.cli

SERVER_SIDE = (
    "conveyor.server",
    "conveyor.scheduler",
    "conveyor.events",
    "conveyor.handlers",
    "conveyor.settings",
    "conveyor.logs",
    "pydantic_settings",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "conveyor.store",
    "conveyor.services",
    "conveyor.api",
    "conveyor.worker",
    "conveyor.runtime",
)


def loaded_server_modules(code: str) -> list[str]:
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({SERVER_SIDE!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_the_client_commands_and_the_app_import_no_server() -> None:
    code = "import conveyor.cli.login, conveyor.cli.client\nfrom conveyor.cli.app import app"
    assert loaded_server_modules(code) == []


def test_conveyor_help_imports_no_server() -> None:
    code = (
        "import contextlib\nfrom conveyor.cli.app import app\n"
        "with contextlib.suppress(SystemExit):\n"
        "    app(['--help'])\n"
        "with contextlib.suppress(SystemExit):\n"
        "    app(['jobs', 'list', '--help'])"
    )
    assert loaded_server_modules(code) == []


def test_every_commands_help_imports_no_server() -> None:
    """The client commands (`login`, `submit`, `jobs ...`, `workflows ...`) and the process
    commands alike: `--help` of each, in one process, walking the assembled command tree."""
    code = (
        "import contextlib, typer.main\n"
        "from conveyor.cli.app import app\n"
        "root = typer.main.get_command(app)\n"
        "def paths(command, path):\n"
        "    yield path\n"
        "    for name, sub in getattr(command, 'commands', {}).items():\n"
        "        yield from paths(sub, [*path, name])\n"
        "walked = list(paths(root, []))\n"
        "assert ['login'] in walked and ['workflows', 'submit'] in walked, walked\n"
        "for path in walked:\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        root.main([*path, '--help'], prog_name='conveyor', standalone_mode=False)"
    )
    assert loaded_server_modules(code) == []


CLI = Path(conveyor.cli.__file__).parent


def imported_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def backend_uses(tree: ast.AST) -> Iterator[int]:
    """Lines reading `<anything>.backend` (the engine's store) or `<anything>.store`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("backend", "store"):
            yield node.lineno


@pytest.mark.parametrize("module", sorted(p.name for p in CLI.glob("*.py")))
def test_no_cli_module_reaches_the_store(module: str) -> None:
    """Even inside a function: the CLI is a door, and doors go through the services."""
    tree = ast.parse((CLI / module).read_text(encoding="utf-8"))
    store_side = [
        name
        for name in imported_names(tree)
        if name.split(".")[0] == "sqlalchemy" or name.startswith("conveyor.store")
    ]
    assert store_side == []
    assert list(backend_uses(tree)) == []
