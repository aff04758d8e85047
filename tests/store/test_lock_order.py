"""Multi-row writers on jobs lock their rows in one order (id), so they never deadlock.

PostgreSQL only: SQLite has one writer at a time and no row locks. Each round runs two
writers on the same worker's running jobs at the same moment, on two connections, the
finisher's batch listed against the table's order; before the ordered locks 7-11 of 40
rounds deadlocked against a heartbeat, 34-39 of 40 against a bulk cancel or a release (and
the worker test below logged `heartbeat failed: deadlock detected` in 2 runs of 3).
`deadlock_timeout` is lowered for the test database so that a deadlock shows in
milliseconds, not a second.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import pytest
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from conveyor.domain.jobs import ClaimedJob, ErrorInfo, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.conftest import _pg_admin, fresh_database

W = "worker-a"
JOBS = 400
ROUNDS = 40


class Nothing(BaseModel):
    pass


Rival = Callable[[QueueBackend, list[ClaimedJob]], Awaitable[object]]


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        asyncio.run(_quick_deadlock_detection(url.rsplit("/", 1)[1]))
        yield url


async def _quick_deadlock_detection(database: str) -> None:
    admin = await _pg_admin()
    try:
        await admin.execute(f"ALTER DATABASE \"{database}\" SET deadlock_timeout = '20ms'")
    finally:
        await admin.close()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[QueueBackend]:
    backend = open_backend(pg_url)
    yield backend
    await backend.close()


def _is_deadlock(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        return "deadlock detected" in str(exc)
    return isinstance(exc, asyncpg.DeadlockDetectedError)


async def _running(backend: QueueBackend) -> list[ClaimedJob]:
    await backend.enqueue([NewJob(type="noop", payload={"i": i}) for i in range(JOBS)])
    claimed = await backend.claim(W, ["default"], JOBS, lease_s=30)
    assert len(claimed) == JOBS
    return claimed


def _finish_against_the_grain(
    backend: QueueBackend, claimed: list[ClaimedJob]
) -> Awaitable[set[str]]:
    """Mixed outcomes (one transaction of several statements), newest job first."""
    outcomes = [
        Outcome(j.id, j.attempt, "completed", result={"i": n})
        if n % 3
        else Outcome(j.id, j.attempt, "failed", error=ErrorInfo("E", "boom"))
        for n, j in enumerate(reversed(claimed))
    ]
    return backend.finish(W, outcomes)


async def _heartbeat(backend: QueueBackend, _claimed: list[ClaimedJob]) -> object:
    return await backend.heartbeat(W, 60)


def _shuffled(claimed: list[ClaimedJob]) -> list[str]:
    ids = [j.id for j in claimed]
    random.Random(len(ids)).shuffle(ids)
    return ids


async def _bulk_cancel(backend: QueueBackend, claimed: list[ClaimedJob]) -> object:
    return await backend.bulk_ids("cancel", _shuffled(claimed), None, 500)


async def _release(backend: QueueBackend, claimed: list[ClaimedJob]) -> object:
    return await backend.release(W, [j.id for j in claimed])


def _deadlocked(results: Sequence[object]) -> int:
    """How many of one round's results are deadlocks; any other error is raised."""
    found = 0
    for result in results:
        if isinstance(result, BaseException):
            if not _is_deadlock(result):
                raise result
            found += 1
    return found


async def _deadlocks(backend: QueueBackend, rival: Rival) -> int:
    """How many of ROUNDS collisions between a batched finish and `rival` deadlocked."""
    found = 0
    for _ in range(ROUNDS):
        claimed = await _running(backend)
        results = await asyncio.gather(
            _finish_against_the_grain(backend, claimed),
            rival(backend, claimed),
            return_exceptions=True,
        )
        found += _deadlocked(results)
    return found


@pytest.mark.parametrize("rival", [_heartbeat, _bulk_cancel, _release], ids=lambda r: r.__name__)
async def test_a_finish_and_another_multi_row_writer_never_deadlock(
    pg: QueueBackend, rival: Rival
) -> None:
    deadlocks = await _deadlocks(pg, rival)
    assert deadlocks == 0, f"{deadlocks} of {ROUNDS} rounds deadlocked"


async def test_every_job_ends_in_exactly_one_state_after_the_collisions(pg: QueueBackend) -> None:
    """The fences still hold: a job the finish completed is not also cancelled, and so on."""
    claimed = await _running(pg)
    finished, cancelled = await asyncio.gather(
        _finish_against_the_grain(pg, claimed), pg.bulk_ids("cancel", _shuffled(claimed), None, 500)
    )
    states = {j.id: (await pg.get(j.id)).state.value for j in claimed}
    done = {i for i, s in states.items() if s in ("completed", "failed")}
    assert done == finished
    assert {i for i, s in states.items() if s == "cancelled"} == set(states) - finished
    assert cancelled.changed == JOBS - len(finished)


async def test_a_busy_worker_heartbeating_all_the_time_never_deadlocks(
    pg: QueueBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The symptom the scale-out test saw, end to end: a real worker with many tiny jobs in
    flight and a heartbeat every few milliseconds, its finisher on another connection."""
    registry = Registry()

    @registry.job("tiny")
    async def tiny(ctx: JobContext, payload: Nothing) -> None:
        await asyncio.sleep(random.random() / 100)

    n = 6000
    await pg.enqueue([NewJob(type="tiny", payload={}) for _ in range(n)])
    config = WorkerConfig(
        queues={"default": None},
        concurrency=64,
        poll_interval=0.05,
        lease_s=30,
        heartbeat_interval=0.002,
        grace=5,
    )
    worker = Worker(pg, registry, config)
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(600):
                counts = {c.state.value: c.count for c in await pg.counts()}
                if counts.get("completed") == n:
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.stop(force=True)
            await asyncio.wait_for(task, 20)
    assert counts.get("completed") == n, counts
    deadlocks = [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()]
    assert deadlocks == [], f"{len(deadlocks)} deadlocks, first: {deadlocks[0]}"


def _keyed(keys: list[str], kind: str) -> list[NewJob]:
    if kind == "unique_key":
        live = frozenset({JobState.QUEUED, JobState.RUNNING})
        return [NewJob(type="noop", payload={}, unique_key=k, unique_states=live) for k in keys]
    return [NewJob(type="noop", payload={}, idempotency_key=key) for key in keys]


@pytest.mark.parametrize("kind", ["idempotency_key", "unique_key"])
async def test_two_batches_naming_the_same_keys_in_other_orders_never_deadlock(
    pg: QueueBackend, kind: str
) -> None:
    """Two submits at once (two API requests, two intake groups, a library caller's
    transaction), one listing the keys one way, the other the other way: PostgreSQL's
    ON CONFLICT waits for an uncommitted equal key, so each waited for a key the other had
    inserted (idempotency keys deadlocked in 4 rounds of 40 before they were ordered too).
    Exactly one job per key is stored either way."""
    found = 0
    for n in range(ROUNDS):
        keys = [f"r{n}-k{i:03}" for i in range(50)]
        results = await asyncio.gather(
            pg.enqueue(_keyed(keys, kind)),
            pg.enqueue(_keyed(keys[::-1], kind)),
            return_exceptions=True,
        )
        found += _deadlocked(results)
    assert found == 0, f"{found} of {ROUNDS} rounds deadlocked"
    assert sum(c.count for c in await pg.counts()) == 50 * ROUNDS
