"""An idle worker readies its next claim (store/claims.py `arm_claim`) only when nothing runs
and nothing waits to be recorded: the BEGIN ahead that did it on every wait held a connection
the busy drain needed (bench/README.md, "BEGIN ahead reverted")."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import asyncpg

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from tests.worker.test_backpressure import (
    _hold_what_the_finisher_needs,
    gated_registry,
    states,
    until,
)
from tests.worker.test_worker import running


async def test_a_worker_arms_its_claim_only_when_idle_and_gives_it_back_when_it_stops(
    backend: QueueBackend, db_url: str
) -> None:
    started, go = asyncio.Event(), asyncio.Event()
    registry, runs = gated_registry(started, go)
    armed_with: list[tuple[int, int]] = []  # (unrecorded, running) at each arm
    arm = backend.arm_claim

    async def arm_claim() -> None:
        armed_with.append((worker.unrecorded, len(worker.running_ids)))
        await arm()

    backend.arm_claim = arm_claim  # type: ignore[method-assign]
    (gate,) = await backend.enqueue([NewJob(type="gate", payload={})])
    async with running(backend, registry) as worker:
        await asyncio.wait_for(started.wait(), 20)
        release = await _hold(db_url, gate.id)
        try:
            go.set()  # the gate's outcome waits for our lock: ran, not recorded

            async def ran_unrecorded() -> bool:
                return worker.unrecorded == 1 and not worker.running_ids

            await until(ran_unrecorded)
            before = len(armed_with)
            await asyncio.sleep(0.3)  # several empty polls (0.1 s) that must not arm
            assert len(armed_with) == before
        finally:
            await release()

        async def idle_and_armed() -> bool:
            return (await states(backend))[JobState.COMPLETED] == 1 and len(armed_with) > before

        await until(idle_and_armed)
        (later,) = await backend.enqueue([NewJob(type="ok", payload={})])

        async def both_done() -> bool:
            return (await states(backend))[JobState.COMPLETED] == 2

        await until(both_done)
    assert set(armed_with) == {(0, 0)}
    assert runs[later.id] == 1
    if db_url.startswith("postgresql"):  # stopped: no transaction left open
        conn = await asyncpg.connect(db_url)
        try:
            assert not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction'"
            )
        finally:
            await conn.close()


async def _hold(db_url: str, job_id: str) -> Callable[[], Awaitable[None]]:
    """The lock the finisher's next write waits for; SQLite's write lock is taken off the
    event loop (the worker may hold it for a claim that needs the loop to commit)."""
    if db_url.startswith("postgresql"):
        return await _hold_what_the_finisher_needs(db_url, job_id)
    lite = sqlite3.connect(
        db_url.split(":///", 1)[1], isolation_level=None, check_same_thread=False, timeout=20
    )
    await asyncio.to_thread(lite.execute, "BEGIN IMMEDIATE")

    async def release() -> None:
        lite.execute("ROLLBACK")
        lite.close()

    return release
