"""Maintenance: promotion of due jobs, rescue of expired leases, pruning of finished rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.store.backend import QueueBackend
from tests.store.helpers import job, job_in_state

W = "worker-a"


async def test_scheduled_jobs_do_not_start_early(backend: QueueBackend) -> None:
    (later,) = await backend.enqueue([job(run_at=utcnow() + timedelta(seconds=1.5))])
    assert later.state is JobState.SCHEDULED
    assert await backend.promote_due() == 0
    assert await backend.claim(W, ["default"], 10, 30) == []
    await asyncio.sleep(1.6)
    assert await backend.promote_due() == 1
    (claimed,) = await backend.claim(W, ["default"], 10, 30)
    assert claimed.id == later.id


async def test_rescue_fails_jobs_whose_attempts_are_spent(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=1)])
    await backend.claim(W, ["default"], 1, lease_s=0.1)
    await asyncio.sleep(0.2)
    report = await backend.rescue_expired()
    assert report.failed == [queued.id] and report.requeued == []
    assert (await backend.get(queued.id)).state is JobState.FAILED


async def test_prune_deletes_old_finished_jobs_only(backend: QueueBackend) -> None:
    done = await job_in_state(backend, "completed")
    failed = await job_in_state(backend, "failed")
    live = [await job_in_state(backend, s) for s in ("queued", "scheduled", "running")]
    future = utcnow() + timedelta(seconds=1)
    assert (
        await backend.prune(
            completed_before=future, failed_before=utcnow() - timedelta(days=1), batch=1
        )
        == 1
    )
    with pytest.raises(NotFound):
        await backend.get(done)
    assert (await backend.get(failed)).state is JobState.FAILED
    assert await backend.prune(completed_before=future, failed_before=future, batch=1) == 1
    for job_id in live:
        assert (await backend.get(job_id)).state is not JobState.COMPLETED
