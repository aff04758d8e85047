"""What the debounced events NOTIFY costs PostgreSQL's hot path, A/B in one process.

`python -m bench.notify_cost [--jobs 5000] [--rounds 4]`: a fresh database; each round
enqueues `--jobs` no-op jobs in batches, then two claimers drain them (claim 64, finish them
completed, repeat) while a reader holds the event wake-ups open (as a relay does). After an
untimed warm-up round, rounds go on, off, off, on, ... (NOTIFY as shipped, or the method
patched out), so neither a drift over the run nor other processes' load favours one side.
Prints jobs/s per round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from bench.scratch_db import scratch_database
from conveyor.domain.jobs import NewJob, Outcome
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.drivers.postgres import PostgresDriver
from conveyor.store.factory import open_backend
from conveyor.store.migrate import migrate


async def drain(backend: QueueBackend, worker: str) -> int:
    done = 0
    while claimed := await backend.claim(worker, ["bench"], 64, 60):
        outcomes = [Outcome(c.id, c.attempt, "completed", result=None) for c in claimed]
        done += len(await backend.finish(worker, outcomes))
    return done


async def one_round(backend: QueueBackend, jobs: int) -> float:
    for start in range(0, jobs, 500):
        batch = [NewJob(type="noop", payload={}, queue="bench") for _ in range(start, start + 500)]
        await backend.enqueue(batch)
    began = time.perf_counter()
    done = sum(await asyncio.gather(drain(backend, "a"), drain(backend, "b")))
    return done / (time.perf_counter() - began)


async def main(jobs: int, rounds: int) -> None:
    async with scratch_database("postgres", Path(), "bench_notify") as url:
        figures = await compare(url, jobs, rounds)
    for variant, rates in figures.items():
        print(f"NOTIFY {variant}: median {statistics.median(rates):,.0f} jobs/s")


async def compare(url: str, jobs: int, rounds: int) -> dict[str, list[float]]:
    shipped = PostgresDriver.tell_other_processes
    figures: dict[str, list[float]] = {"on": [], "off": []}
    try:
        await migrate(Database(url))
        backend = open_backend(url)
        assert isinstance(backend.driver, PostgresDriver)
        async with backend.event_wakeups():
            await one_round(backend, jobs)  # warm-up: caches, plans, the pool
            for index in range(2 * rounds):
                variant = "on" if index % 4 in (0, 3) else "off"
                PostgresDriver.tell_other_processes = (  # type: ignore[method-assign]
                    shipped if variant == "on" else lambda self: None
                )
                rate = await one_round(backend, jobs)
                figures[variant].append(rate)
                print(f"round {index + 1}: NOTIFY {variant}: {rate:,.0f} jobs/s")
        await backend.close()
    finally:
        PostgresDriver.tell_other_processes = shipped  # type: ignore[method-assign]
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.rounds))
