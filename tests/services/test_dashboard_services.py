"""The dashboard's services against a real engine and a real worker, on both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conveyor.domain.states import JobState
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from conveyor.store.records import BulkResult, JobFilter
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
