"""Conveyor's side of the workflow benchmark (bench/workflow.py), run in the project venv with
the system's environment (``CONVEYOR_DATABASE_URL``, ``CONVEYOR_HANDLER_MODULES``):

    python -m bench.workflow_client --n 10000 --timeout-s 300

With the workers already started: one ``bench_noop`` job submitted and waited for (so the
workers' start-up is not timed), then one workflow of ``n`` ``bench_noop`` steps and a join
``bench_noop`` step that depends on all of them, submitted through the service
(``engine.workflows.submit``, what ``POST /api/v1/workflows`` calls). Timed from just before
the submit to the first read, by a connection of our own, that sees the join's row committed
``completed`` (durable completion). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from conveyor import heap
from conveyor.domain.jobs import SYSTEM_OWNER
from conveyor.domain.workflows import StepSpec, WorkflowSpec
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from conveyor.settings import Settings

JOB_TYPE = "bench_noop"
POLL_S = 0.02
STATE = "SELECT state FROM {t} WHERE id = {p}"  # a job's, or (--group) the workflow's


Reader = Callable[[str, str], Awaitable[str | None]]  # (id, table) -> its committed state


def spec(n: int, join_after: bool = True) -> WorkflowSpec:
    """``n`` independent no-op steps and a join after all of them (index ``n``); without
    ``join_after`` (a diagnosis: the release triggers' share) the join depends on none."""
    now = time.time()
    names = tuple(f"s{i}" for i in range(n))
    steps = [
        StepSpec(name, JOB_TYPE, {"index": i, "enqueued_at": now}) for i, name in enumerate(names)
    ]
    after = names if join_after else ()
    steps.append(StepSpec("join", JOB_TYPE, {"index": n, "enqueued_at": now}, depends_on=after))
    return WorkflowSpec("bench-fanout", tuple(steps))


async def _reader(url: str) -> tuple[Reader, Callable[[], Any]]:
    """A job's committed state, read by a connection of our own; and how to close it."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1], timeout=5)

        async def read_sqlite(job_id: str, table: str = "jobs") -> str | None:
            row = conn.execute(STATE.format(t=table, p="?"), (job_id,)).fetchone()
            return None if row is None else str(row[0])

        async def close_sqlite() -> None:
            conn.close()

        return read_sqlite, close_sqlite
    pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))

    async def read_pg(job_id: str, table: str = "jobs") -> str | None:
        value = await pg.fetchval(STATE.format(t=table, p="$1"), job_id)
        return None if value is None else str(value)

    return read_pg, pg.close


async def _until_settled(
    read: Reader, job_id: str, deadline: float, table: str = "jobs"
) -> str | None:
    state = await read(job_id, table)
    while state not in {"completed", "failed", "cancelled", "skipped"}:
        if time.monotonic() > deadline:
            return state
        await asyncio.sleep(POLL_S)
        state = await read(job_id, table)
    return state


async def run(n: int, timeout_s: float, join_after: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    engine = await Engine.open(Settings())
    heap.settle()  # as the API process whose submit this stands for (server.py's lifespan)
    read, close = await _reader(os.environ["CONVEYOR_DATABASE_URL"])
    try:
        warm = await engine.jobs.submit(
            Submission(type=JOB_TYPE, payload={"index": n + 1, "enqueued_at": time.time()})
        )
        if await _until_settled(read, str(warm.id), deadline) != "completed":
            raise SystemExit("the warm-up job did not complete: are the workers running?")
        declaration = spec(n, join_after)
        started = time.time()
        detail = await engine.workflows.submit(declaration, owner_id=SYSTEM_OWNER)
        submitted = time.time()
        join = next(s.job_id for s in detail.steps if s.name == "join")
        if join_after:
            state = await _until_settled(read, str(join), deadline)
        else:  # every step: the workflow's own state
            state = await _until_settled(read, str(detail.workflow.id), deadline, "workflows")
        done = time.time()
    finally:
        await close()
        await engine.close()
    return {
        "n": n,
        "workflow_id": str(detail.workflow.id),
        "join_state": state,
        "submit_s": submitted - started,
        "seconds": done - started if state == "completed" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--group",
        action="store_true",
        help="diagnosis: the same steps without edges, timed to the workflow completed",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.n, args.timeout_s, not args.group))))


if __name__ == "__main__":
    main()
