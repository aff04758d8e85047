"""The dashboard's services against a real engine and a real worker, on both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conveyor.domain.jobs import BulkResult, JobFilter
from conveyor.domain.states import JobState
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from conveyor.worker.worker import Worker
from tests.api.conftest import api_settings


@pytest.fixture
async def engine(db_url: str, tmp_path: Path) -> AsyncIterator[Engine]:
    settings = api_settings(
        db_url, tmp_path, handler_modules="tests.support.handlers", poll_interval=0.1
    )
    opened = await Engine.open(settings)
    yield opened
    await opened.close()


@asynccontextmanager
async def working(engine: Engine, queues: str = "*") -> AsyncIterator[Worker]:
    worker = engine.worker(queues, concurrency=8)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def submit(engine: Engine, job_type: str, owner: str = "ada", **payload: object) -> str:
    enqueued = await engine.jobs.submit(Submission(type=job_type, payload=payload), owner)
    return enqueued.id


async def state_of(engine: Engine, job_id: str) -> JobState:
    return (await engine.jobs.get(job_id)).state


async def test_bulk_cancel_stops_a_running_job_in_a_real_worker(engine: Engine) -> None:
    async with working(engine) as worker:
        sleeper = await submit(engine, "record_sleep", seconds=60)
        waiting = await submit(engine, "record_sleep", seconds=60)
        other = await submit(engine, "record_sleep", owner="bob", seconds=60)
        await until(lambda: _running(engine, sleeper, waiting, other))
        where = JobFilter(type="record_sleep", owner_id="ada")
        result = await engine.jobs.bulk("cancel", where=where)
        assert result == BulkResult(matched=2, changed=2, skipped=0)

        async def stopped() -> bool:
            return not {sleeper, waiting} & worker.running_ids

        await until(stopped, timeout=5)  # far sooner than the 60 s sleep
        assert other in worker.running_ids
        assert await state_of(engine, sleeper) is JobState.CANCELLED
        assert await state_of(engine, other) is JobState.RUNNING


async def _running(engine: Engine, *ids: str) -> bool:
    return all([await state_of(engine, job_id) is JobState.RUNNING for job_id in ids])


async def test_a_paused_queue_waits_while_another_drains_and_resume_drains_it(
    engine: Engine,
) -> None:
    await engine.queues.pause("held")
    async with working(engine):
        held = [await submit_to(engine, "held") for _ in range(3)]
        free = [await submit_to(engine, "free") for _ in range(3)]
        await until(lambda: _all_in(engine, free, JobState.COMPLETED))
        await asyncio.sleep(0.5)  # several claim rounds and polls
        assert {await state_of(engine, j) for j in held} == {JobState.QUEUED}
        (overview,) = [q for q in await engine.queues.overview(None) if q.name == "held"]
        assert overview.paused and overview.counts_by_state[JobState.QUEUED] == 3
        assert overview.oldest_queued_age_s is not None and overview.oldest_queued_age_s >= 0.5

        await engine.queues.resume("held")
        await until(lambda: _all_in(engine, held, JobState.COMPLETED), timeout=5)
    resumed = [q for q in await engine.queues.overview(None) if q.name == "held"]
    assert not resumed[0].paused and resumed[0].oldest_queued_age_s is None


async def test_overview_of_one_owner_counts_only_their_jobs(engine: Engine) -> None:
    await engine.queues.pause("secret")
    await submit_to(engine, "shared")
    await submit_to(engine, "shared", owner="bob")
    mine = {q.name: q for q in await engine.queues.overview("ada")}
    assert mine["shared"].counts_by_state[JobState.QUEUED] == 1
    assert "secret" not in mine  # not theirs to know about
    everyone = {q.name: q for q in await engine.queues.overview(None)}
    assert everyone["shared"].counts_by_state[JobState.QUEUED] == 2
    assert everyone["secret"].paused and sum(everyone["secret"].counts_by_state.values()) == 0
    assert "default" in everyone  # the job types' own queue, empty or not


async def test_workers_view_shows_a_running_job_under_its_worker(engine: Engine) -> None:
    async with working(engine) as worker:
        sleeper = await submit(engine, "record_sleep", seconds=30)
        await until(lambda: _running(engine, sleeper))
        (view,) = await engine.workers.alive()
        assert view.id == worker.id and view.queues == ["*"] and view.concurrency == 8
        assert [(j.id, j.type, j.queue) for j in view.current_jobs] == [
            (sleeper, "record_sleep", "default")
        ]
        assert view.current_jobs[0].started_at is not None
        assert view.last_heartbeat_at >= view.started_at
    assert await engine.workers.alive() == []  # a stopped worker is not alive


async def submit_to(engine: Engine, queue: str, owner: str = "ada") -> str:
    submission = Submission(type="record", payload={}, queue=queue)
    return (await engine.jobs.submit(submission, owner)).id


async def _all_in(engine: Engine, ids: list[str], state: JobState) -> bool:
    return all([await state_of(engine, job_id) is state for job_id in ids])
