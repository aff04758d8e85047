"""An idle worker readies its next claim (store/claims.py `arm_claim`) only when nothing runs
and nothing waits to be recorded: the BEGIN ahead that did it on every wait held a connection
the busy drain needed (bench/README.md, "BEGIN ahead reverted")."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.worker.worker import Worker, WorkerConfig
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


async def test_an_idle_worker_outrun_for_a_wake_up_still_claims_what_the_other_leaves(
    backend: QueueBackend,
) -> None:
    """Two idle workers, every job a wake-up for both: one claim takes it, the other comes
    back empty, and that worker lets the other claim first from then on
    (`Worker._yield_to_others`). It still claims after its short wait: with the winner
    stopped, it alone runs the next jobs, woken by their NOTIFYs (the poll is 60 s away)."""
    started, go = asyncio.Event(), asyncio.Event()
    registry, runs = gated_registry(started, go)
    claims: list[tuple[str, int]] = []  # (worker, jobs it got) per claim
    claim = backend.claim

    async def counted(worker_id: str, *args: Any, **kwargs: Any) -> Any:
        got = await claim(worker_id, *args, **kwargs)
        claims.append((worker_id, len(got)))
        return got

    backend.claim = counted  # type: ignore[method-assign]
    config = WorkerConfig(queues={"default": None}, poll_interval=60.0, lease_s=30.0)
    workers = [Worker(backend, registry, config) for _ in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.sleep(0.3)  # both past their first (empty) claim, waiting
        for n in range(1, 6):
            await backend.enqueue([NewJob(type="ok", payload={})])
            await until(lambda n=n: _completed(backend, n))  # type: ignore[misc]
        outrun = [w for w in workers if any(c == (w.id, 0) for c in claims[2:])]
        assert outrun, claims
        winner = next(w for w in workers if (w.id, 1) == next(c for c in reversed(claims) if c[1]))
        winner.stop()
        await asyncio.wait_for(tasks[workers.index(winner)], 20)
        (left,) = [w for w in workers if w is not winner]
        mark = len(claims)
        for n in range(6, 9):
            await backend.enqueue([NewJob(type="ok", payload={})])
            await until(lambda n=n: _completed(backend, n), timeout=10)  # type: ignore[misc]
        assert [c for c in claims[mark:] if c[1]] == [(left.id, 1)] * 3, claims
    finally:
        for w in workers:
            w.stop(force=True)
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert sum(runs.values()) == 8


async def _completed(backend: QueueBackend, n: int) -> bool:
    return (await states(backend))[JobState.COMPLETED] == n


async def test_a_wake_up_that_names_no_queue_does_not_make_an_empty_claim_outrun(
    backend: QueueBackend,
) -> None:
    """SQLite's watch of other processes' commits wakes a worker for any write ("*"), a
    listener back from an outage for whatever it missed (""), and a NOTIFY for a queue it
    does not serve wakes it too: an empty claim then says nothing about another worker, so
    the next wake-up's claim is not held back. A NOTIFY naming its queue, with the jobs
    taken by someone else, is."""
    started, go = asyncio.Event(), asyncio.Event()
    registry, _ = gated_registry(started, go)
    config = WorkerConfig(queues={"default": None}, poll_interval=60.0, lease_s=30.0)
    worker = Worker(backend, registry, config)
    task = asyncio.create_task(worker.run())
    claims: list[int] = []
    claim = backend.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        got = await claim(*args, **kwargs)
        claims.append(len(got))
        return got

    backend.claim = counted  # type: ignore[method-assign]
    try:

        async def wake(queue: str) -> None:  # and wait for the claim it starts
            n = len(claims) + 1
            worker._on_jobs(queue)

            async def claimed() -> bool:
                return len(claims) >= n

            await until(claimed)

        await until(lambda: _some(claims))  # its first claim, at start
        for payload in ("*", "", "elsewhere"):  # not a queue of this worker's: "elsewhere"
            await wake(payload)
            assert not worker._outrun
        await wake("default")  # named, and nothing there: taken by another worker
        assert worker._outrun
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)
    assert not any(claims)


async def _some(items: list[int]) -> bool:
    return bool(items)
