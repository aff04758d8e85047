"""Backpressure: a worker claims new work only while its unrecorded outcomes stay bounded.

The store is made to stall for real: the test holds a lock the finisher needs (a row lock
on a job the finisher must update on PostgreSQL; SQLite's write lock), then releases it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import BaseModel

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry
from tests.worker.test_worker import running

BOUND = 4
JOBS = 40


class Empty(BaseModel):
    pass


def gated_registry(started: asyncio.Event, go: asyncio.Event) -> tuple[Registry, Counter[str]]:
    """`gate` waits for the test to take its lock; `ok` returns at once. Runs are counted."""
    registry = Registry()
    runs: Counter[str] = Counter()

    @registry.job("gate")
    async def gate(ctx: JobContext, payload: Empty) -> None:
        runs[ctx.job_id] += 1
        started.set()
        await go.wait()

    @registry.job("ok")
    async def ok(ctx: JobContext, payload: Empty) -> None:
        runs[ctx.job_id] += 1

    return registry, runs


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Wait for a condition (a deadline for a stuck test, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def states(backend: QueueBackend) -> Counter[JobState]:
    counts: Counter[JobState] = Counter()
    for row in await backend.counts():
        counts[row.state] += row.count
    return counts


async def test_claims_stop_at_the_bound_while_the_finisher_is_blocked(
    backend: QueueBackend, db_url: str
) -> None:
    started, go = asyncio.Event(), asyncio.Event()
    registry, runs = gated_registry(started, go)
    (gate,) = await backend.enqueue([NewJob(type="gate", payload={}, priority=10)])
    await backend.enqueue([NewJob(type="ok", payload={}) for _ in range(JOBS)])
    async with running(backend, registry, concurrency=8, max_unrecorded=BOUND) as worker:
        await asyncio.wait_for(started.wait(), 20)
        release = await _hold_what_the_finisher_needs(db_url, gate.id)
        try:
            go.set()  # the gate's outcome now waits for our lock, and every outcome after it
            if db_url.startswith("postgresql"):

                async def at_bound() -> bool:
                    return worker.unrecorded == BOUND

                await until(at_bound)
                await asyncio.sleep(0.3)  # room for claims that must not happen
                counts = await states(backend)
                assert worker.unrecorded == BOUND and not worker.running_ids
                assert counts[JobState.RUNNING] == BOUND  # claimed, run, not recorded
                assert counts[JobState.QUEUED] == JOBS + 1 - BOUND - counts[JobState.COMPLETED]
                assert counts[JobState.QUEUED] > 0  # work was there to claim
            else:  # one writer: claims wait for the lock too; what ran stays within the bound

                async def all_ran() -> bool:
                    return worker.unrecorded > 0 and not worker.running_ids

                await until(all_ran)
                await asyncio.sleep(0.3)
                assert 0 < worker.unrecorded <= BOUND and not worker.running_ids
            held = sum(runs.values())
        finally:
            await release()

        async def drained() -> bool:
            return (await states(backend))[JobState.COMPLETED] == JOBS + 1

        await until(drained)
    assert held < JOBS + 1
    assert set(runs.values()) == {1} and len(runs) == JOBS + 1
    batches = Counter(j.finished_at for j in await backend.list_jobs(limit=100))
    assert max(batches.values()) <= BOUND  # one finish statement: one finished_at


async def _hold_what_the_finisher_needs(db_url: str, job_id: str) -> Callable[[], Any]:
    """Take the lock the finisher's next write must wait for; returns its release."""
    if db_url.startswith("postgresql"):
        conn = await asyncpg.connect(db_url)
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)

        async def release_pg() -> None:
            await transaction.rollback()
            await conn.close()

        return release_pg
    lite = sqlite3.connect(db_url.split(":///", 1)[1], isolation_level=None)
    lite.execute("BEGIN IMMEDIATE")

    async def release_sqlite() -> None:
        lite.execute("ROLLBACK")
        lite.close()

    return release_sqlite
