"""Issue #13 item 4: a handler that blocks the event loop, and sync handlers whose threads
outlive their jobs.

A blocked loop used to stop the heartbeat: the leases of a live worker ran out, the rescuer
took back every job it held, and innocent neighbours ran a second time on another worker.
The loop watchdog (worker/watchdog.py) now renews the leases from its own thread and names
the blocking job with its stack. Timed-out plain `def` handlers keep their thread; the pool
now starts a spare in its place, so the next job still finds a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry
from tests.support.processes import HANDLERS, Cluster, eventually
from tests.worker.test_worker import running, terminal, wait_for

DEADLINE = 120.0  # seconds anything may take on a loaded machine (normally a few)
LEASE = 3.0
HANDLER_MODULES = f"{HANDLERS},tests.worker.loop_handlers"


class Empty(BaseModel):
    pass


async def _all_finished(backend: QueueBackend, ids: list[str]) -> bool:
    for job_id in ids:
        if not terminal(await backend.get(job_id)):
            return False
    return True


@pytest.mark.slow
async def test_a_blocked_loop_costs_its_innocent_neighbours_no_second_run(
    cluster: Cluster, db_url: str, tmp_path: Path
) -> None:
    """One `async def` handler blocks its worker's loop for three leases while three
    innocent jobs run beside it; a second worker and a scheduler (the rescuer) stand by.
    Before the watchdog, the rescuer took the innocent jobs back and the second worker ran
    them again."""
    settings = {
        "lease_seconds": str(LEASE),
        "heartbeat_interval": "0.5",
        "handler_modules": HANDLER_MODULES,
    }
    backend = open_backend(db_url)
    try:
        cluster.scheduler(settings={**settings, "scheduler_interval": "0.2"})
        first = cluster.worker("first", concurrency=8, settings=settings)
        block_s = 3 * LEASE
        sleepy = [NewJob(type="record_sleep", payload={"seconds": block_s + 4}) for _ in "abc"]
        innocent = [e.id for e in await backend.enqueue(sleepy)]
        await eventually(lambda: len(cluster.runs("start")) == 3, timeout=DEADLINE,
                         what="the innocent jobs to start")  # fmt: skip
        (blocked,) = await backend.enqueue(
            [NewJob(type="block_loop", payload={"seconds": block_s})]
        )
        block_id = blocked.id
        await eventually(lambda: len(cluster.runs("start")) == 4, timeout=DEADLINE,
                         what="the blocking job to start")  # fmt: skip
        cluster.worker("second", concurrency=8, settings=settings)  # takes whatever is freed

        await eventually(lambda: _all_finished(backend, [*innocent, block_id]),
                         timeout=DEADLINE, what="every job to finish")  # fmt: skip
        starts = Counter(run.job_id for run in cluster.runs("start"))
        assert {job_id: starts[job_id] for job_id in innocent} == dict.fromkeys(innocent, 1)
        for job_id in [*innocent, block_id]:
            assert (await backend.get(job_id)).state == JobState.COMPLETED
        assert first.running()

        log = (tmp_path / "logs" / "first.app.log").read_text()
        assert "event loop blocked for" in log
        assert f"by job {block_id} (block_loop, attempt 1)" in log, log
        assert "time.sleep(payload.seconds)" in log, log  # the stack it was blocked in
        assert "leases kept" in log, log
    finally:
        await backend.close()


async def test_sync_handlers_that_outlive_their_timeouts_do_not_starve_the_pool(
    backend: QueueBackend,
) -> None:
    """With two threads, two plain `def` handlers that ignore their timeout (and `ctx`)
    keep both threads; the next sync job still starts, on a spare thread."""
    release = threading.Event()
    registry = Registry()

    @registry.job("stuck", max_attempts=1, timeout=0.2)
    def stuck(ctx: JobContext, payload: Empty) -> None:
        release.wait(4 * DEADLINE)  # deaf to ctx.cancelled: a call that cannot be interrupted

    @registry.job("quick")
    def quick(ctx: JobContext, payload: Empty) -> str:
        return "ran"

    def abandoned() -> float:
        return REGISTRY.get_sample_value("conveyor_worker_abandoned_threads") or 0.0

    before = abandoned()
    try:
        async with running(backend, registry, concurrency=4, threads=2, spare_threads=2):
            two = [NewJob(type="stuck", payload={}, max_attempts=1) for _ in range(2)]
            stuck_ids = [e.id for e in await backend.enqueue(two)]
            for job_id in stuck_ids:
                record = await wait_for(backend, job_id, terminal, timeout=DEADLINE)
                assert record.state == JobState.FAILED
                assert [e["type"] for e in record.errors] == ["JobTimeout"]
            (quick_job,) = await backend.enqueue([NewJob(type="quick", payload={})])
            record = await wait_for(backend, quick_job.id, terminal, timeout=DEADLINE)
            assert record.state == JobState.COMPLETED and record.result == "ran"
            assert abandoned() == before + 2  # counted, and still running meanwhile
            release.set()
            await eventually(lambda: abandoned() == before, timeout=DEADLINE,
                             what="the returned threads no longer counted")  # fmt: skip
    finally:
        release.set()


async def test_a_loop_blocked_past_the_limit_gives_its_leases_up(
    backend: QueueBackend, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop blocked for good must not hold its jobs for good: past
    `loop_block_limit` the watchdog stops renewing, the leases run out and the rescuer
    takes the jobs back; when the loop turns again the worker stops them (lease lost).

    The blocking handler waits on a helper thread (its own event loop and connection)
    that rescues the neighbour once its lease has run out, then lets the loop go: with
    leases renewed for ever the helper would wait for ever."""
    registry = Registry()
    rescued = threading.Event()
    neighbour_ran = threading.Event()

    @registry.job("hog", max_attempts=1)
    async def hog(ctx: JobContext, payload: Empty) -> None:
        rescued.wait(DEADLINE)  # blocking the loop is the point

    @registry.job("neighbour")
    async def neighbour(ctx: JobContext, payload: Empty) -> None:
        neighbour_ran.set()
        await asyncio.sleep(DEADLINE)

    (victim,) = await backend.enqueue([NewJob(type="neighbour", payload={})])

    def rescuer() -> None:
        async def run() -> None:
            own = open_backend(db_url)
            try:
                deadline = time.monotonic() + DEADLINE
                while time.monotonic() < deadline:
                    if victim.id in (await own.rescue_expired()).requeued:
                        rescued.set()
                        return
                    await asyncio.sleep(0.1)
            finally:
                await own.close()

        asyncio.run(run())

    caplog.set_level(logging.INFO, logger="conveyor.worker")
    helper = threading.Thread(target=rescuer, name="test-rescuer")
    async with running(backend, registry, lease_s=2.0, heartbeat_interval=0.2,
                       loop_block_limit=2.0):  # fmt: skip
        await eventually(neighbour_ran.is_set, timeout=DEADLINE, what="the neighbour to start")
        helper.start()
        (hogging,) = await backend.enqueue([NewJob(type="hog", payload={}, max_attempts=1)])
        await wait_for(backend, hogging.id, terminal, timeout=DEADLINE)
        await eventually(lambda: any("lease lost" in r.getMessage() for r in caplog.records),
                         timeout=DEADLINE, what="the rescued neighbour stopped")  # fmt: skip
    await asyncio.to_thread(helper.join, DEADLINE)
    assert rescued.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert any("over the 2 s limit" in m and f"by job {hogging.id}" in m for m in messages), (
        messages
    )
    assert any("lease lost" in m for m in messages), messages
