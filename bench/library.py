"""What an enqueue inside the caller's transaction costs, next to a plain INSERT there.

`python -m bench.library [--n 2000]`: a fresh PostgreSQL database; for psycopg (sync) and
asyncpg, `--n` transactions each INSERT one row into a user table, then enqueue one job in
the same transaction (conveyor.library.enqueue), then commit; each step timed on its own.
Prints the p50 and p95 of the INSERT, of the enqueue, and of the whole transaction (with
its commit), after an untimed warm-up of 200.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import asyncpg
import psycopg
from pydantic import BaseModel

from bench.scratch_db import scratch_database
from conveyor.library.enqueue import aenqueue, enqueue
from conveyor.store.database import Database
from conveyor.store.migrate import migrate
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()
WARM_UP = 200
OWNER = "bench-library"
Timings = dict[str, list[float]]


class Order(BaseModel):
    order_id: int


@blueprint.job("bench_order", queue="bench")
async def ship(ctx: JobContext, payload: Order) -> None:
    """Never run: the bench only enqueues."""


def psycopg_rounds(url: str, n: int) -> Timings:
    timings: Timings = {"insert": [], "enqueue": [], "transaction": []}
    with psycopg.connect(url) as conn:
        for i in range(WARM_UP + n):
            began = time.perf_counter()
            conn.execute("INSERT INTO orders (note) VALUES (%s)", (f"order {i}",))
            inserted = time.perf_counter()
            enqueue(conn, "bench_order", {"order_id": i}, owner=OWNER, registry=blueprint)
            enqueued = time.perf_counter()
            conn.commit()
            if i >= WARM_UP:
                _record(timings, began, inserted, enqueued, time.perf_counter())
    return timings


async def asyncpg_rounds(url: str, n: int) -> Timings:
    timings: Timings = {"insert": [], "enqueue": [], "transaction": []}
    conn = await asyncpg.connect(url)
    try:
        for i in range(WARM_UP + n):
            began = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO orders (note) VALUES ($1)", f"order {i}")
                inserted = time.perf_counter()
                await aenqueue(conn, "bench_order", {"order_id": i}, owner=OWNER,
                               registry=blueprint)  # fmt: skip
                enqueued = time.perf_counter()
            if i >= WARM_UP:
                _record(timings, began, inserted, enqueued, time.perf_counter())
    finally:
        await conn.close()
    return timings


def _record(timings: Timings, began: float, inserted: float, enqueued: float, end: float) -> None:
    timings["insert"].append(inserted - began)
    timings["enqueue"].append(enqueued - inserted)
    timings["transaction"].append(end - began)


def _ms(values: list[float], q: int) -> str:
    cut = statistics.quantiles(values, n=100)[q - 1]
    return f"{cut * 1000:7.3f}"


def table(results: dict[str, Timings]) -> str:
    lines = [
        f"{'driver':<9} {'step':<12} {'p50 ms':>8} {'p95 ms':>8}",
        "-" * 40,
    ]
    for driver, timings in results.items():
        for step, values in timings.items():
            lines.append(f"{driver:<9} {step:<12} {_ms(values, 50):>8} {_ms(values, 95):>8}")
        ratio = statistics.median(timings["enqueue"]) / statistics.median(timings["insert"])
        lines.append(f"{driver:<9} {'enqueue/insert p50':<21} {ratio:6.1f}x")
    return "\n".join(lines)


async def main(n: int) -> None:
    async with scratch_database("postgres", Path(), "bench_library") as url:
        db = Database(url)
        try:
            await migrate(db)
        finally:
            await db.dispose()
        admin = await asyncpg.connect(url)
        await admin.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
        await admin.close()
        results = {
            "psycopg": await asyncio.to_thread(psycopg_rounds, url, n),
            "asyncpg": await asyncpg_rounds(url, n),
        }
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="timed transactions per driver")
    asyncio.run(main(parser.parse_args().n))
