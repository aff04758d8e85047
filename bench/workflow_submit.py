"""The submit of a workflow alone (issue #16's fan-out + join, no workers): how long
``engine.workflows.submit`` (what ``POST /api/v1/workflows`` calls) takes to validate and
store ``n`` steps, on a fresh PostgreSQL database and a fresh SQLite file:

    python -m bench.workflow_submit --n 10000 --rounds 3

Each round submits one workflow of ``n - 1`` no-op steps and a join (bench/workflow_client.py
``spec``); the table gives the best and the median round, and the median time of the
store's inserts (`create_workflow`; the rest: the declaration checked and its rows built
before, and the stored workflow read back after), and the median CPU time of this process
over the whole submit (the client's share, which a loaded machine disturbs least). Not part of
``make bench``: a figure for docs/workflows.md when the store's writes change.
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
from bench.workflow_client import spec

HANDLERS = "bench.conveyor_handlers"


async def _rounds(url: str, n: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    os.environ["CONVEYOR_DATABASE_URL"] = url
    os.environ["CONVEYOR_HANDLER_MODULES"] = HANDLERS
    from conveyor import heap
    from conveyor.domain.jobs import SYSTEM_OWNER
    from conveyor.runtime import Engine
    from conveyor.settings import Settings

    engine = await Engine.open(Settings(), apply_migrations=True)
    heap.settle()  # as the API process whose submit this stands for (server.py's lifespan)
    times: list[float] = []
    stored: list[float] = []
    cpu: list[float] = []
    backend = engine.workflows.backend
    create = backend.create_workflow

    async def timed(*args: Any) -> Any:  # the store's share: the inserts, in the transaction
        started = time.perf_counter()
        try:
            return await create(*args)
        finally:
            stored.append(time.perf_counter() - started)

    backend.create_workflow = timed  # type: ignore[method-assign,assignment]
    try:
        await engine.workflows.submit(spec(10), owner_id=SYSTEM_OWNER)  # warm: statements
        for _ in range(rounds):
            declaration = spec(n - 1)
            started, used = time.perf_counter(), time.process_time()
            await engine.workflows.submit(declaration, owner_id=SYSTEM_OWNER)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
    finally:
        await engine.close()
    return times, stored[1:], cpu


async def main(n: int, rounds: int, stores: list[str]) -> None:
    table = Table(title=f"workflow submit: {n:,} steps (fan-out + join), {rounds} rounds")
    columns = (
        "store", "best s", "median s", "steps/s (median)", "of which inserts s (median)",
        "client CPU s (median)",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right" if column != "store" else "left")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in stores:
            async with scratch_database(kind, Path(workdir), "wfsubmit") as url:
                if kind == "postgres":
                    url = url.replace("postgresql://", "postgresql+asyncpg://")
                times, stored, cpu = await _rounds(url, n, rounds)
            median = statistics.median(times)
            inserts = f"{statistics.median(stored):.3f}"
            table.add_row(
                kind, f"{min(times):.3f}", f"{median:.3f}", f"{n / median:,.0f}", inserts,
                f"{statistics.median(cpu):.3f}",
            )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="postgres,sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.stores.split(",")))
