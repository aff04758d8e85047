"""docs/library.md's complete example, run as its docstring says: `conveyor migrate`, then
the example itself, which enqueues in its own transaction (beside its own row) and whose
embedded worker must run the job. On SQLite (a sqlite3 connection) and PostgreSQL (psycopg).

The example lives in docs/examples/library_example.py and docs/library.md shows it verbatim:
the first test holds the two together.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psycopg

from tests.support.processes import (
    CHILD_PYTHONPATH,
    CONVEYOR,
    ROOT,
    clean_environ,
    eventually,
)
from tests.support.processes import start as start_proc

EXAMPLE = ROOT / "docs" / "examples" / "library_example.py"
DOC = ROOT / "docs" / "library.md"
WAIT = 90.0  # generous: three processes start on a busy machine


def test_the_doc_shows_the_example_verbatim() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert EXAMPLE.read_text() in blocks


def example_env(db_url: str) -> dict[str, str]:
    env = clean_environ()
    env.update(
        PYTHONPATH=os.pathsep.join([CHILD_PYTHONPATH, str(EXAMPLE.parent)]),
        CONVEYOR_DATABASE_URL=db_url,
        CONVEYOR_POLL_INTERVAL="0.2",
    )
    return env


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """`args` in `cwd`, its output in `cwd/<program>-<n>.out` (what `outputs` shows)."""
    out = cwd / f"{Path(args[0]).name}-{len(list(cwd.glob('*.out')))}.out"
    return start_proc(Path(args[0]).name, args, cwd=cwd, env=env, out=out).popen


def migrate(env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [CONVEYOR, "migrate"], cwd=cwd, env=env, capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr.decode()


def outputs(directory: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}" for p in directory.glob("*.out")
    )


async def test_the_example_runs_its_job_in_its_own_worker(db_url: str, tmp_path: Path) -> None:
    env = example_env(db_url)
    migrate(env, tmp_path)  # the fixture migrated already: a no-op, as the docs run it
    example = start([sys.executable, str(EXAMPLE)], env, tmp_path)
    try:
        await eventually(lambda: example.poll() is not None, timeout=WAIT, what="the example")
        assert example.returncode == 0, outputs(tmp_path)
        assert "completed: order 42: 19.99 EUR billed" in outputs(tmp_path)
    finally:
        if example.poll() is None:
            example.kill()
            example.wait(timeout=10)
    # its job committed with its row, and completed
    assert _one(db_url, "SELECT count(*) FROM shop_orders") == 1
    assert _one(db_url, "SELECT state FROM jobs WHERE type = 'send_invoice'") == "completed"


def _one(db_url: str, sql: str) -> object:
    if db_url.startswith("sqlite"):
        with closing(sqlite3.connect(db_url.split(":///", 1)[1])) as lite:
            return lite.execute(sql).fetchone()[0]
    with psycopg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]
