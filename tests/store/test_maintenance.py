"""Maintenance: promotion of due jobs, rescue of expired leases, pruning of finished rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, JobFilter, NewJob, Outcome, RescueReport
from conveyor.domain.schedules import NewSchedule
from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.store.backend import QueueBackend
from conveyor.store.jobs import job_row
from conveyor.store.tables import jobs
from tests.store.helpers import job, job_in_state, wait_past

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


async def retrying(backend: QueueBackend, n: int, due_in: timedelta) -> list[str]:
    """`n` jobs that failed once and wait to be tried again `due_in` from now."""
    await backend.enqueue([job(n=i, queue="r") for i in range(n)])
    claimed = await backend.claim(W, ["r"], n, 30)
    again = utcnow() + due_in
    error = ErrorInfo("E", "m")
    outcomes = [Outcome(c.id, 1, "retry", error=error, retry_at=again) for c in claimed]
    assert len(await backend.finish(W, outcomes)) == n
    return [c.id for c in claimed]


async def test_promotion_takes_due_retries_in_bounded_batches(backend: QueueBackend) -> None:
    due = await retrying(backend, 3, timedelta(seconds=-1))
    later = await retrying(backend, 1, timedelta(hours=1))
    assert await backend.promote_due(limit=2) == 2
    assert await backend.promote_due(limit=2) == 1
    assert await backend.promote_due(limit=2) == 0
    assert {(await backend.get(i)).state for i in due} == {JobState.QUEUED}
    assert (await backend.get(later[0])).state is JobState.RETRYING
    assert {c.id for c in await backend.claim(W, ["r"], 10, 30)} == set(due)


async def test_rescue_reports_each_job_and_spares_live_leases(backend: QueueBackend) -> None:
    await backend.enqueue([job(queue="lost", type="a", max_attempts=3) for _ in range(3)])
    (kept,) = await backend.enqueue([job(queue="kept")])
    lost = await backend.claim(W, ["lost"], 3, lease_s=0.05)
    await backend.claim("alive", ["kept"], 1, lease_s=60)
    await wait_past(utcnow() + timedelta(seconds=0.06))

    first = await backend.rescue_expired(limit=2)
    rest = await backend.rescue_expired(limit=2)
    assert await backend.rescue_expired() == RescueReport(requeued=[], failed=[])
    rescued = first.requeued + rest.requeued
    assert len(first.requeued) == 2 and sorted(rescued) == sorted(j.id for j in lost)
    assert first.failed == rest.failed == []
    assert first.labels == {i: ("lost", "a") for i in first.requeued}
    assert first.attempts == {i: 1 for i in first.requeued}
    assert (await backend.get(kept.id)).state is JobState.RUNNING
    again = await backend.claim(W, ["lost"], 3, 30)
    assert {j.attempt for j in again} == {2}


async def test_prune_drops_schedule_fires_older_than_the_failed_retention(
    backend: QueueBackend,
) -> None:
    now = utcnow().replace(microsecond=0)
    schedule = await backend.create_schedule(
        NewSchedule(name="s", cron="* * * * *", job_type="noop", payload={}), now
    )
    fires = [
        (fire_at, NewJob(type="noop", payload={}, schedule_id=schedule.id))
        for fire_at in (now - timedelta(days=10), now - timedelta(minutes=1))
    ]
    assert await backend.fire_schedule(schedule, fires, now) == 2
    old = now - timedelta(days=7)
    await backend.prune(completed_before=old, failed_before=old)
    assert [at for at, _ in await backend.fires_of(schedule.id)] == [now - timedelta(minutes=1)]


async def test_prune_slices_delete_at_most_their_limit_and_only_what_is_past_retention(
    backend: QueueBackend,
) -> None:
    """Oldest first, each slice resuming where the one before it ended."""
    done = [await job_in_state(backend, "completed") for _ in range(5)]
    failed = await job_in_state(backend, "failed")
    live = [await job_in_state(backend, s) for s in ("queued", "running", "retrying")]
    future, completed = utcnow() + timedelta(seconds=1), JobState.COMPLETED
    first, mark = await backend.prune_finished(completed, future, 2)
    assert first == 2 and mark is not None
    left = await backend.list_jobs(JobFilter(states=(completed,)))
    assert {j.id for j in left} == set(done[2:])  # the two that finished first went
    assert (await backend.prune_finished(completed, future, 2, mark))[0] == 2
    last, mark = await backend.prune_finished(completed, future, 2, mark)
    assert last == 1  # fewer than the limit: the last slice
    assert await backend.prune_finished(completed, future, 2, mark) == (0, mark)
    for job_id in done:
        with pytest.raises(NotFound):
            await backend.get(job_id)
    assert (await backend.get(failed)).state is JobState.FAILED  # another state's walk
    for job_id in live:
        await backend.get(job_id)


async def test_fire_rows_are_pruned_in_slices(backend: QueueBackend) -> None:
    now = utcnow().replace(microsecond=0)
    schedule = await backend.create_schedule(
        NewSchedule(name="s", cron="* * * * *", job_type="noop", payload={}), now
    )
    fires = [
        (now - timedelta(minutes=minutes), NewJob(type="noop", payload={}, schedule_id=schedule.id))
        for minutes in (1, 2, 3, 4, 60 * 24 * 10)
    ]
    assert await backend.fire_schedule(schedule, fires, now) == 5
    cut = now - timedelta(seconds=90)
    assert await backend.prune_fires(cut, limit=3) == 3
    assert await backend.prune_fires(cut, limit=3) == 1
    assert [at for at, _ in await backend.fires_of(schedule.id)] == [now - timedelta(minutes=1)]


async def test_a_prune_slice_reads_rows_linear_in_the_backlog_whatever_its_size(
    backend: QueueBackend,
) -> None:
    """A backlog written faster than autovacuum analyzes it (here: no statistics at all):
    one slice of 500 read each of 6,000 old rows again for each row of the slice (a nested
    loop over `ix_jobs_finished`: ~2.9M index reads, 8-19 s per slice at load 6), so the
    scheduler's tick, which promotion and rescue wait behind, took seconds. Now a slice
    reads at most the backlog about twice (a planner without statistics may scan it),
    whatever its size. Counted in each slice's own transaction (pg_stat_xact_user_tables:
    rows read by scans of jobs), not timed."""
    if backend.driver.dialect != "postgresql":
        pytest.skip("rows read are counted by PostgreSQL's statistics")
    at, backlog = utcnow() - timedelta(days=2), 6_000
    old = [
        {**job_row(NewJob(type="noop", payload={}, owner_id="u"), now=at), "state": "completed",
         "attempt": 1, "started_at": at, "finished_at": at + timedelta(milliseconds=i)}
        for i in range(backlog)
    ]  # fmt: skip
    async with backend.db.write() as conn:
        await conn.execute(insert(jobs), old)
    reads: list[int] = []

    def count(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if "DELETE FROM jobs" in statement:
            probe = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            probe.execute(READS)
            row = probe.fetchone()
            assert row is not None
            reads.append(int(row[0]))

    engine = backend.db.writer.sync_engine
    event.listen(engine, "after_cursor_execute", count)
    try:
        for size in (100, 400):
            assert (await backend.prune_finished(JobState.COMPLETED, utcnow(), size))[0] == size
    finally:
        event.remove(engine, "after_cursor_execute", count)
    assert len(reads) == 2 and max(reads) < 3 * backlog, reads  # before: 607k and 2.3M


READS = (
    "SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))"
    " FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
)
