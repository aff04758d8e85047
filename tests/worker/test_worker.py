"""The worker loop in-process, on both databases: retries, timeouts, cancel, caps, stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor.domain.jobs import JobRecord, NewJob
from conveyor.domain.retry import RetryPolicy
from conveyor.domain.states import JobState
from conveyor.errors import NonRetryableError
from conveyor.store.backend import QueueBackend
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig


class Empty(BaseModel):
    pass


class Naps(BaseModel):
    seconds: float = 0.0


def cpu_square(info: JobInfo, payload: Naps) -> dict[str, Any]:
    import os

    return {"pid": os.getpid(), "value": payload.seconds**2}


def make_registry() -> tuple[Registry, dict[str, Any]]:
    reg = Registry()
    seen: dict[str, Any] = {
        "attempts": [],
        "running": 0,
        "peak": 0,
        "sync_saw_cancel": threading.Event(),
    }

    @reg.job("ok")
    async def ok(ctx: JobContext, payload: Naps) -> dict[str, Any]:
        seen["running"] += 1
        seen["peak"] = max(seen["peak"], seen["running"])
        await asyncio.sleep(payload.seconds)
        seen["running"] -= 1
        return {"attempt": ctx.attempt}

    @reg.job("flaky", max_attempts=3, retry=RetryPolicy(base=0.3, jitter=0))
    async def flaky(ctx: JobContext, payload: Empty) -> int:
        seen["attempts"].append((ctx.attempt, time.monotonic()))
        if ctx.attempt < 3:
            raise RuntimeError(f"fail {ctx.attempt}")
        return ctx.attempt

    @reg.job("fatal", max_attempts=5)
    async def fatal(ctx: JobContext, payload: Empty) -> None:
        raise NonRetryableError("no point retrying")

    @reg.job("slow", max_attempts=2, timeout=0.3, retry=RetryPolicy(base=0.05, jitter=0))
    async def slow(ctx: JobContext, payload: Naps) -> None:
        await asyncio.sleep(payload.seconds)

    @reg.job("sync_loop", max_attempts=1)
    def sync_loop(ctx: JobContext, payload: Naps) -> str:
        deadline = time.monotonic() + payload.seconds
        while time.monotonic() < deadline:
            if ctx.cancelled:
                seen["sync_saw_cancel"].set()
                return "stopped"
            time.sleep(0.01)
        return "finished"

    @reg.job("sync_progress")
    def sync_progress(ctx: JobContext, payload: Empty) -> None:
        ctx.report_progress(30, "from a thread")
        time.sleep(0.4)

    @reg.job("progress")
    async def progress(ctx: JobContext, payload: Empty) -> None:
        await ctx.progress(50, "half")
        await asyncio.sleep(0.4)

    reg.job("cpu", executor="process")(cpu_square)
    return reg, seen


@asynccontextmanager
async def running(
    backend: QueueBackend, registry: Registry, **overrides: Any
) -> AsyncIterator[Worker]:
    config = WorkerConfig(
        queues=overrides.pop("queues", {"default": None}),
        concurrency=overrides.pop("concurrency", 8),
        poll_interval=0.1,
        lease_s=overrides.pop("lease_s", 5.0),
        heartbeat_interval=overrides.pop("heartbeat_interval", 0.2),
        grace=overrides.pop("grace", 5.0),
        **overrides,
    )
    worker = Worker(backend, registry, config)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)


async def wait_for(
    backend: QueueBackend, job_id: str, pred: Callable[[JobRecord], bool], timeout: float = 10
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = await backend.get(job_id)
        if pred(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; job is {record.state}: {record}")
        await asyncio.sleep(0.05)


def terminal(record: JobRecord) -> bool:
    return record.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


async def promote_forever(backend: QueueBackend) -> None:
    while True:
        await backend.promote_due()
        await asyncio.sleep(0.05)


@asynccontextmanager
async def promoting(backend: QueueBackend) -> AsyncIterator[None]:
    task = asyncio.create_task(promote_forever(backend))
    try:
        yield
    finally:
        task.cancel()


async def submit(backend: QueueBackend, job_type: str, **payload: Any) -> str:
    """Straight into the store, as a worker sees jobs (the service's validation is bypassed)."""
    registry, _ = make_registry()
    attempts = registry.get(job_type).max_attempts if job_type in registry else 1
    (e,) = await backend.enqueue([NewJob(type=job_type, payload=payload, max_attempts=attempts)])
    return e.id


async def test_runs_jobs_and_stores_results(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry):
        ids = [await submit(backend, "ok") for _ in range(20)]
        for job_id in ids:
            record = await wait_for(backend, job_id, terminal)
            assert record.state is JobState.COMPLETED and record.result == {"attempt": 1}


async def test_retries_with_backoff_then_succeeds(backend: QueueBackend) -> None:
    registry, seen = make_registry()
    async with running(backend, registry), promoting(backend):
        job_id = await submit(backend, "flaky")
        record = await wait_for(backend, job_id, terminal)
    assert record.state is JobState.COMPLETED and record.result == 3
    assert [e["message"] for e in record.errors] == ["fail 1", "fail 2"]
    (_, t1), (_, t2), (_, t3) = seen["attempts"]
    assert t2 - t1 >= 0.3 and t3 - t2 >= 0.6  # base 0.3 s, doubling


async def test_non_retryable_error_fails_at_once(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry):
        record = await wait_for(backend, await submit(backend, "fatal"), terminal)
    assert record.state is JobState.FAILED and record.attempt == 1
    assert record.errors[0]["type"] == "NonRetryableError"
    assert "traceback" in record.errors[0]


async def test_unknown_type_and_bad_payload_fail_without_retry(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry):
        unknown = await wait_for(backend, await submit(backend, "nope"), terminal)
        bad = await wait_for(backend, await submit(backend, "ok", seconds="x"), terminal)
    assert unknown.state is JobState.FAILED and unknown.errors[0]["type"] == "UnknownJobType"
    assert bad.state is JobState.FAILED and bad.errors[0]["type"] == "InvalidPayload"


async def test_timeout_counts_as_a_failed_attempt(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry), promoting(backend):
        record = await wait_for(backend, await submit(backend, "slow", seconds=5), terminal)
    assert record.state is JobState.FAILED and record.attempt == 2
    assert [e["type"] for e in record.errors] == ["JobTimeout", "JobTimeout"]


async def test_cancel_interrupts_a_running_async_job(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry) as worker:
        job_id = await submit(backend, "ok", seconds=30)
        await wait_for(backend, job_id, lambda r: r.state is JobState.RUNNING)
        await backend.cancel(job_id)
        deadline = time.monotonic() + 3  # the heartbeat (0.2 s) notices at the latest
        while job_id in worker.running_ids and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert job_id not in worker.running_ids
    assert (await backend.get(job_id)).state is JobState.CANCELLED


async def test_cancel_tells_a_running_sync_job_through_its_context(
    backend: QueueBackend,
) -> None:
    registry, seen = make_registry()
    async with running(backend, registry):
        job_id = await submit(backend, "sync_loop", seconds=30)
        await wait_for(backend, job_id, lambda r: r.state is JobState.RUNNING)
        await backend.cancel(job_id)
        assert await asyncio.to_thread(seen["sync_saw_cancel"].wait, 5)
    assert (await backend.get(job_id)).state is JobState.CANCELLED


async def test_progress_is_visible_while_running(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry):
        job_id = await submit(backend, "progress")
        mid = await wait_for(backend, job_id, lambda r: r.progress == 50)
        assert mid.progress_message == "half" and mid.state is JobState.RUNNING
        done = await wait_for(backend, job_id, terminal)
    assert done.progress == 100


async def test_a_sync_handler_reports_progress_from_its_thread(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    async with running(backend, registry):
        job_id = await submit(backend, "sync_progress")
        mid = await wait_for(backend, job_id, lambda r: r.progress == 30)
        assert mid.progress_message == "from a thread"
        assert (await wait_for(backend, job_id, terminal)).state is JobState.COMPLETED


async def test_concurrency_and_per_queue_caps(backend: QueueBackend) -> None:
    registry, seen = make_registry()
    await backend.enqueue(
        [NewJob(type="ok", payload={"seconds": 0.2}, queue="capped") for _ in range(6)]
    )
    async with running(backend, registry, queues={"capped": 2}, concurrency=8):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = {c.state: c.count for c in await backend.counts()}
            if counts.get(JobState.COMPLETED) == 6:
                break
            await asyncio.sleep(0.05)
    assert seen["peak"] == 2


async def test_graceful_stop_finishes_running_jobs_and_claims_no_more(
    backend: QueueBackend,
) -> None:
    registry, _ = make_registry()
    config = WorkerConfig(queues={"default": None}, concurrency=2, poll_interval=0.1, grace=5)
    worker = Worker(backend, registry, config)
    first = [await submit(backend, "ok", seconds=0.5) for _ in range(2)]
    task = asyncio.create_task(worker.run())
    for job_id in first:
        await wait_for(backend, job_id, lambda r: r.state is JobState.RUNNING)
    later = await submit(backend, "ok")
    worker.stop()
    assert await asyncio.wait_for(task, 10) == 0
    for job_id in first:
        assert (await backend.get(job_id)).state is JobState.COMPLETED
    assert (await backend.get(later)).state is JobState.QUEUED


async def test_stop_after_grace_releases_jobs_without_spending_an_attempt(
    backend: QueueBackend,
) -> None:
    registry, _ = make_registry()
    config = WorkerConfig(queues={"default": None}, concurrency=2, poll_interval=0.1, grace=0.2)
    worker = Worker(backend, registry, config)
    job_id = await submit(backend, "ok", seconds=30)
    task = asyncio.create_task(worker.run())
    await wait_for(backend, job_id, lambda r: r.state is JobState.RUNNING)
    worker.stop()
    assert await asyncio.wait_for(task, 10) == 0
    record = await backend.get(job_id)
    assert record.state is JobState.QUEUED and record.attempt == 0


async def test_a_dead_listener_stops_the_worker(backend: QueueBackend) -> None:
    registry, _ = make_registry()
    worker = Worker(backend, registry, WorkerConfig(queues={"default": None}, poll_interval=0.1))
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 5
    while worker._listener is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert worker._listener is not None
    await worker._listener.close()  # the side task dies under the worker
    assert await asyncio.wait_for(task, 10) == 1


async def test_process_pool_jobs_run_in_another_process(backend: QueueBackend) -> None:
    import os

    registry, _ = make_registry()
    async with running(backend, registry):
        record = await wait_for(backend, await submit(backend, "cpu", seconds=3), terminal, 60)
    assert record.state is JobState.COMPLETED
    assert record.result["value"] == 9 and record.result["pid"] != os.getpid()


@pytest.mark.parametrize("count", [200])
async def test_burst_mode_drains_and_exits(backend: QueueBackend, count: int) -> None:
    registry, _ = make_registry()
    await backend.enqueue([NewJob(type="ok", payload={}) for _ in range(count)])
    config = WorkerConfig(queues={"default": None}, concurrency=16, poll_interval=0.1, burst=True)
    worker = Worker(backend, registry, config)
    assert await asyncio.wait_for(worker.run(), 30) == 0
    counts = {c.state: c.count for c in await backend.counts()}
    assert counts == {JobState.COMPLETED: count}
    assert worker.stats.finished == count


async def test_a_commit_from_another_process_wakes_an_idle_worker(db_url: str) -> None:
    """Only the wake-up path can start the job in time: the safety-net poll is 30 s."""
    from conveyor.store.factory import open_backend

    other_url = db_url.replace("/conveyor.db", "/./conveyor.db")  # same file, another "process"
    mine, theirs = open_backend(db_url), open_backend(other_url)
    registry, _ = make_registry()
    config = WorkerConfig(queues={"default": None}, poll_interval=30, heartbeat_interval=5)
    worker = Worker(mine, registry, config)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # the worker is idle, waiting
        (e,) = await theirs.enqueue([NewJob(type="ok", payload={})])
        record = await wait_for(theirs, e.id, terminal, timeout=10)
        assert record.state is JobState.COMPLETED
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 10)
        await mine.close()
        await theirs.close()


async def test_jobs_claimed_in_its_name_but_never_started_are_given_back(
    backend: QueueBackend,
) -> None:
    """A claim whose commit reached the database while its answer was lost (a cut connection)
    leaves jobs running in the worker's name that it never started; its heartbeat must not
    keep them forever (issue #13 item 1: they were stuck after `pg-restart`)."""
    (job,) = await backend.enqueue([NewJob(type="ok", payload={}, queue="elsewhere")])
    registry, _ = make_registry()
    async with running(backend, registry) as worker:
        (claimed,) = await backend.claim(worker.id, ["elsewhere"], 1, 30)  # the lost answer
        assert claimed.id == job.id
        back = await wait_for(backend, job.id, lambda r: r.state == JobState.QUEUED)
    assert back.worker_id is None and back.attempt == 0


SLOW_CLAIM_COMMIT = """
CREATE FUNCTION slow_claim_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_claim AFTER UPDATE ON jobs DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN (OLD.state = 'queued' AND NEW.state = 'running')
EXECUTE FUNCTION slow_claim_commit();
"""


async def test_a_heartbeat_during_an_early_started_claims_commit_does_not_lose_its_jobs(
    db_url: str, backend: QueueBackend
) -> None:
    """An idle PostgreSQL worker starts what it claimed while the claim's COMMIT is on its
    way. A heartbeat that read the worker's jobs before that commit landed does not list
    them; they were taken for lost (stopped), then given back as claimed-but-not-started and
    run a second time by the same live worker (seen as unexplained duplicates in the chaos
    suite's short db-cut on a loaded machine). Here the commit is made slow on purpose (a
    deferred trigger on the claim's update sleeps at COMMIT), so heartbeats run during it."""
    if not db_url.startswith("postgresql"):
        pytest.skip("early starts are PostgreSQL's (SQLite's claim commits before it answers)")
    import asyncpg

    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute(SLOW_CLAIM_COMMIT)
    finally:
        await admin.close()
    registry = Registry()
    starts: list[int] = []

    @registry.job("counted", max_attempts=3)
    async def counted(ctx: JobContext, payload: Naps) -> None:
        starts.append(ctx.attempt)
        await asyncio.sleep(payload.seconds)

    (job,) = await backend.enqueue([NewJob(type="counted", payload={"seconds": 1.0})])
    async with running(backend, registry, heartbeat_interval=0.1):
        done = await wait_for(backend, job.id, terminal, timeout=30)
    assert done.state == JobState.COMPLETED
    assert starts == [1]
