"""Tasks (reference 004) and `task_autocomplete`: the task and its job are created together,
the job completes the task after the delay, it survives a restart, and deleting a pending
task cancels its job."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.jobs import JobFilter
from conveyor.domain.states import JobState
from conveyor.domain.tasks import TaskRecord
from conveyor.errors import InvalidInput, NotFound, UnknownJobType
from conveyor.handlers.task_autocomplete import TaskAutocompletePayload, task_autocomplete
from conveyor.runtime import Engine
from conveyor.services.jobs import JobService
from conveyor.services.tasks import TaskService
from conveyor.store.tasks import TaskStore
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.registry import Registry
from conveyor.worker.resources import Resources
from tests.handlers.conftest import open_engine
from tests.support.engine import processing

OWNER = "owner-1"
FAST: dict[str, Any] = {"poll_interval": 0.05, "scheduler_interval": 0.05}


async def task_of(engine: Engine, task_id: int) -> TaskRecord:
    found = await engine.tasks.store.get(task_id, None)
    assert found is not None
    return found


async def wait_completed(engine: Engine, task_id: int, timeout: float = 10) -> TaskRecord:
    deadline = time.monotonic() + timeout
    while (task := await task_of(engine, task_id)).status != "completed":
        assert time.monotonic() < deadline, f"task {task_id} still {task.status}"
        await asyncio.sleep(0.02)
    return task


async def test_the_task_and_its_job_are_created_together(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path, task_autocomplete_seconds=30, **FAST) as engine:
        task = await engine.tasks.create(OWNER, "Deployment Task", "description here")
        assert task.status == "pending" and task.completed_at is None
        assert task.job_id is not None
        assert (await task_of(engine, task.id)).job_id == task.job_id

        job = await engine.jobs.get(task.job_id)
        assert job.type == "task_autocomplete" and job.payload == {"task_id": task.id}
        assert job.state is JobState.SCHEDULED and job.owner_id == OWNER
        assert job.idempotency_key == f"task-{task.id}"
        due = task.created_at + timedelta(seconds=30)
        assert due <= job.run_at < due + timedelta(seconds=1)

        with pytest.raises(InvalidInput):
            await engine.tasks.create(OWNER, "   ")

        # Neither exists without the other: a job that cannot be submitted leaves no task ...
        store = TaskStore(engine.backend.db)
        without_handler = TaskService(JobService(engine.backend, Registry()), store, 1)
        with pytest.raises(UnknownJobType):
            await without_handler.create(OWNER, "orphan?")
        assert [t.id for t in await engine.tasks.list(None)] == [task.id]

        # ... and a failure after the job was inserted leaves no job.
        class Failing(TaskStore):
            async def attach_job(self, conn: Any, task_id: int, job_id: str) -> None:
                raise RuntimeError("the database went away")

        failing = TaskService(engine.jobs, Failing(engine.backend.db), 1)
        with pytest.raises(RuntimeError):
            await failing.create(OWNER, "half-made?")
        assert [t.id for t in await engine.tasks.list(None)] == [task.id]
        jobs = await engine.backend.list_jobs(JobFilter(), limit=10)
        assert [j.id for j in jobs] == [task.job_id]


async def test_the_task_completes_after_the_delay_and_can_then_be_deleted(
    db_url: str, tmp_path: Path
) -> None:
    async with open_engine(db_url, tmp_path, task_autocomplete_seconds=1, **FAST) as engine:
        task = await engine.tasks.create(OWNER, "soon")
        assert task.job_id is not None
        async with processing(engine):
            await asyncio.sleep(0.3)
            assert (await task_of(engine, task.id)).status == "pending"
            done = await wait_completed(engine, task.id)
        assert done.completed_at is not None
        assert done.completed_at >= task.created_at + timedelta(seconds=1)
        job = await engine.jobs.get(task.job_id)
        assert job.state is JobState.COMPLETED
        assert job.result == {"task_id": task.id, "completed": True}

        # Deleting a completed task leaves its job as it was.
        await engine.tasks.delete(task.id, None)  # as an admin
        assert await engine.tasks.list(None) == []
        assert (await engine.jobs.get(task.job_id)).state is JobState.COMPLETED


async def test_a_task_completes_after_a_restart(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path, task_autocomplete_seconds=1, **FAST) as engine:
        task = await engine.tasks.create(OWNER, "durable")
    assert datetime.now(UTC) < task.created_at + timedelta(seconds=1), "closed too late"

    async with open_engine(db_url, tmp_path, task_autocomplete_seconds=1, **FAST) as engine:
        assert (await task_of(engine, task.id)).status == "pending"
        scheduler = engine.scheduler()
        worker = engine.worker("*", concurrency=2)
        running = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 10
            while (await task_of(engine, task.id)).status != "completed":
                assert time.monotonic() < deadline, "the task never completed"
                await scheduler.tick()
                await asyncio.sleep(0.05)
        finally:
            worker.stop(force=True)
            await running
            # Only Scheduler.run() lets go of its leadership (a PostgreSQL connection).
            await scheduler._leadership.release()
        done = await task_of(engine, task.id)
        assert done.completed_at is not None
        assert done.completed_at >= task.created_at + timedelta(seconds=1)


async def test_deleting_a_pending_task_cancels_its_job(db_url: str, tmp_path: Path) -> None:
    async with open_engine(db_url, tmp_path, task_autocomplete_seconds=30, **FAST) as engine:
        task = await engine.tasks.create(OWNER, "short-lived")
        assert task.job_id is not None
        with pytest.raises(NotFound):
            await engine.tasks.delete(task.id, "someone-else")
        assert (await engine.jobs.get(task.job_id)).state is JobState.SCHEDULED

        deleted = await engine.tasks.delete(task.id, OWNER)
        assert deleted.id == task.id
        assert await engine.tasks.list(OWNER) == []
        assert (await engine.jobs.get(task.job_id)).state is JobState.CANCELLED
        with pytest.raises(NotFound):
            await engine.tasks.delete(task.id, OWNER)

        # Had the job run anyway, it would find no task and say so.
        info = JobInfo(task.job_id, "task_autocomplete", "default", 1, 5, OWNER, task.job_id)
        resources = Resources(engine.settings, engine.backend, engine.mail)

        async def sink(job_id: str, attempt: int, percent: int, message: str | None) -> bool:
            return True

        ctx = JobContext(info, sink, asyncio.get_running_loop(), resources)
        result = await task_autocomplete(ctx, TaskAutocompletePayload(task_id=task.id))
        assert result.completed is False
