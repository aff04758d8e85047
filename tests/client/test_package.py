"""The client imports without loading the server: no FastAPI, SQLAlchemy or store."""

from __future__ import annotations

import subprocess
import sys

SERVER_SIDE = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "uvicorn", "conveyor.store")


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    probe = (
        "import sys, conveyor.client; "
        f"print(sorted(m for m in sys.modules if m.startswith({SERVER_SIDE!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
