"""Reading the command line loads nothing of the server: the client commands, the assembled
`conveyor` app and `conveyor --help` leave FastAPI, SQLAlchemy, the store, the services, the
API and the worker unimported (each server command imports them when it runs)."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = (
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
