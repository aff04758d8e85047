"""docs/library.md's complete example, run as its docstring says: `conveyor migrate`,
`conveyor api --handlers library_example`, then the example itself, whose embedded worker
must run the job it submits (the API process runs no worker). On SQLite and PostgreSQL.

The example lives in docs/examples/library_example.py and docs/library.md shows it verbatim:
the first test holds the two together.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.net.world import free_port
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


def example_env(db_url: str, api: str) -> dict[str, str]:
    env = clean_environ()
    env.update(
        PYTHONPATH=os.pathsep.join([CHILD_PYTHONPATH, str(EXAMPLE.parent)]),
        CONVEYOR_DATABASE_URL=db_url,
        CONVEYOR_ADMIN_PASSWORD="a long admin password for the example",
        CONVEYOR_API_URL=api,
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
    port = free_port()
    env = example_env(db_url, f"http://127.0.0.1:{port}")
    migrate(env, tmp_path)  # the fixture migrated already: a no-op, as the docs run it
    api = start(
        [CONVEYOR, "api", "--port", str(port), "--handlers", "library_example"], env, tmp_path
    )
    example: subprocess.Popen[bytes] | None = None
    try:
        await eventually(lambda: ready(port), timeout=WAIT, what="the API", every=0.2)
        example = start([sys.executable, str(EXAMPLE)], env, tmp_path)
        await eventually(lambda: example.poll() is not None, timeout=WAIT, what="the example")
        assert example.returncode == 0, outputs(tmp_path)
        assert "completed: order 42: 19.99 EUR billed" in outputs(tmp_path)
    finally:
        for child in (api, example):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait(timeout=10)


async def ready(port: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
        except httpx.TransportError:
            return False
