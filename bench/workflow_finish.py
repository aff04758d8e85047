"""The finish phase of a workflow alone (issue #16's fan-out + join, no workers): one process
claims the queued steps in batches of 100 and finishes them (completed) until the join has
run, on a fresh PostgreSQL database and a fresh SQLite file; and, for comparison, the same
claims and finishes of as many plain jobs (no release work):

    python -m bench.workflow_finish --n 2000 --rounds 3

The table gives, per store, the median over rounds of the seconds spent in the finish calls
(each one transaction: the outcomes, their events and, for steps, the release triggers) for
the workflow and for the plain jobs, and their difference per step: what the release costs
each finish. Claims are not timed. Not part of ``make bench``: a figure for docs/workflows.md
when the release changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.scratch_db import scratch_database
from bench.workflow_client import JOB_TYPE, spec

HANDLERS = "bench.conveyor_handlers"
QUEUE = "bench"
BATCH = 100
WORKER = "bench-finish"


async def _drain(backend: Any) -> float:
    """Claim and complete everything queued, `BATCH` at a time; the seconds in `finish`."""
    from conveyor.domain.jobs import Outcome

    spent = 0.0
    while claimed := await backend.claim(WORKER, [QUEUE], BATCH, 60):
        outcomes = [Outcome(j.id, j.attempt, "completed", result={"ok": True}) for j in claimed]
        started = time.perf_counter()
        await backend.finish(WORKER, outcomes)
        spent += time.perf_counter() - started
    return spent


async def _rounds(url: str, n: int, rounds: int) -> tuple[list[float], list[float]]:
    os.environ["CONVEYOR_DATABASE_URL"] = url
    os.environ["CONVEYOR_HANDLER_MODULES"] = HANDLERS
    from conveyor.domain.jobs import SYSTEM_OWNER
    from conveyor.runtime import Engine
    from conveyor.services.jobs import Submission
    from conveyor.settings import Settings

    engine = await Engine.open(Settings(), apply_migrations=True)
    backend = engine.workflows.backend
    flows: list[float] = []
    plain: list[float] = []
    try:
        for _ in range(rounds):
            await engine.workflows.submit(spec(n - 1), owner_id=SYSTEM_OWNER)
            flows.append(await _drain(backend))
            jobs = [Submission(JOB_TYPE, {"index": i, "enqueued_at": 0.0}) for i in range(n)]
            for start in range(0, n, 500):
                await engine.jobs.submit_many(jobs[start : start + 500], SYSTEM_OWNER)
            plain.append(await _drain(backend))
    finally:
        await engine.close()
    return flows, plain


async def main(n: int, rounds: int, stores: list[str]) -> None:
    table = Table(title=f"workflow finishes: {n:,} steps (fan-out + join), {rounds} rounds")
    columns = ("store", "workflow finish s", "plain finish s", "release ms per step")
    for column in columns:
        table.add_column(column, justify="right" if column != "store" else "left")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in stores:
            async with scratch_database(kind, Path(workdir), "wffinish") as url:
                if kind == "postgres":
                    url = url.replace("postgresql://", "postgresql+asyncpg://")
                flows, plain = await _rounds(url, n, rounds)
            flow, bare = statistics.median(flows), statistics.median(plain)
            per = (flow - bare) / n * 1000
            table.add_row(kind, f"{flow:.3f}", f"{bare:.3f}", f"{per:.3f}")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="postgres,sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.stores.split(",")))
