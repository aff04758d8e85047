"""Bulk retry, cancel and delete on both databases: the state machine, owners, events, batches."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from conveyor.domain import events as ev
from conveyor.domain.jobs import (
    BulkAction,
    BulkResult,
    ErrorInfo,
    JobFilter,
    JobSort,
    NewJob,
    Outcome,
)
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.services.jobs import JobService
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry

FAILED = (JobState.FAILED,)


async def failed_jobs(
    backend: QueueBackend, n: int, type: str = "noop", queue: str = "default", owner_id: str = "ada"
) -> list[str]:
    """`n` jobs that ran once and failed, in one claim and one finish."""
    new = [
        NewJob(type=type, payload={"i": i}, max_attempts=1, queue=queue, owner_id=owner_id)
        for i in range(n)
    ]
    await backend.enqueue(new)
    claimed = await backend.claim("w", [queue], n, 30)
    assert len(claimed) == n
    error = ErrorInfo("E", "boom")
    await backend.finish("w", [Outcome(j.id, j.attempt, "failed", error=error) for j in claimed])
    return [j.id for j in claimed]


async def events_of(backend: QueueBackend, kind: str, expected: int) -> list[ev.Event]:
    """Every event of `kind`, once at least `expected` of them are readable."""
    found: list[ev.Event] = []
    for _ in range(200):
        found, position = [], ev.Position()
        while page := await backend.read_events(position, limit=1000):
            found += [e for e in page if e.type == kind]
            position = page[-1].position
        if len(found) >= expected:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(found)} of {expected} {kind} events became readable")


async def states(backend: QueueBackend, ids: list[str]) -> set[JobState]:
    return {(await backend.get(job_id)).state for job_id in ids}


async def test_retry_all_failed_of_one_type_changes_exactly_those_with_one_event_each(
    backend: QueueBackend,
) -> None:
    mine = await failed_jobs(backend, 3, type="x", owner_id="ada")
    theirs = await failed_jobs(backend, 2, type="x", owner_id="bob")
    other_type = await failed_jobs(backend, 2, type="y", owner_id="ada")
    (done,) = await backend.enqueue([NewJob(type="x", payload={}, owner_id="ada")])
    # The completed one is claimed from "default", where no queued job is left.
    (claimed,) = await backend.claim("w", ["default"], 1, 30)
    await backend.finish("w", [Outcome(claimed.id, 1, "completed")])

    jobs = JobService(backend, Registry())
    where = JobFilter(states=FAILED, type="x")
    result = await jobs.bulk("retry", where=where, owner_id="ada")

    assert result == BulkResult(matched=3, changed=3, skipped=0)
    assert await states(backend, mine) == {JobState.QUEUED}
    assert await states(backend, theirs + other_type) == {JobState.FAILED}
    assert (await backend.get(done.id)).state is JobState.COMPLETED
    retried = await events_of(backend, ev.QUEUED, 3)
    assert Counter(e.job_id for e in retried) == Counter(mine)
    assert {e.data["reason"] for e in retried if e.data} == {"retried"}
    again = await backend.get(mine[0])
    assert again.attempt == 0 and again.finished_at is None


async def test_a_filter_without_states_skips_what_the_action_cannot_change(
    backend: QueueBackend,
) -> None:
    failed = await failed_jobs(backend, 2, type="x")
    await backend.enqueue([NewJob(type="x", payload={}) for _ in range(3)])
    result = await JobService(backend, Registry()).bulk("retry", where=JobFilter(type="x"))
    assert result == BulkResult(matched=5, changed=2, skipped=3)
    assert await states(backend, failed) == {JobState.QUEUED}


async def test_ids_of_other_owners_and_unknown_ids_are_skipped_untouched(
    backend: QueueBackend,
) -> None:
    (mine,) = await failed_jobs(backend, 1, owner_id="ada")
    (theirs,) = await failed_jobs(backend, 1, owner_id="bob")
    ids = [mine, theirs, "no-such-job", mine]
    result = await JobService(backend, Registry()).bulk("delete", ids=ids, owner_id="ada")
    assert result == BulkResult(matched=3, changed=1, skipped=2)
    assert (await backend.get(theirs)).state is JobState.FAILED
    assert await backend.list_jobs(JobFilter(owner_id="ada")) == []


async def test_cancel_changes_every_cancellable_state_and_tells_each(
    backend: QueueBackend,
) -> None:
    (queued,) = await backend.enqueue([NewJob(type="noop", payload={})])
    (failed,) = await failed_jobs(backend, 1, queue="q")
    (running,) = await backend.enqueue([NewJob(type="noop", payload={}, queue="r")])
    await backend.claim("w", ["r"], 1, 30)
    ids = [queued.id, failed, running.id]
    result = await JobService(backend, Registry()).bulk("cancel", ids=ids)
    assert result == BulkResult(matched=3, changed=2, skipped=1)
    assert await states(backend, [queued.id, running.id]) == {JobState.CANCELLED}
    assert (await backend.get(failed)).state is JobState.FAILED
    told = await events_of(backend, ev.CANCELLED, 2)
    assert {e.job_id for e in told} == {queued.id, running.id}


async def test_delete_takes_only_finished_jobs(backend: QueueBackend) -> None:
    failed = await failed_jobs(backend, 2)
    (live,) = await backend.enqueue([NewJob(type="noop", payload={})])
    result = await JobService(backend, Registry()).bulk("delete", where=JobFilter())
    assert result == BulkResult(matched=3, changed=2, skipped=1)
    assert [j.id for j in await backend.list_jobs()] == [live.id]
    assert failed


@pytest.mark.parametrize("form", ["where", "ids"])
async def test_bulk_spans_many_batches(backend: QueueBackend, form: str) -> None:
    ids = await failed_jobs(backend, 1100, type="many")
    await failed_jobs(backend, 3, type="few")
    jobs = JobService(backend, Registry())  # the real batch size: 500
    if form == "where":
        result = await jobs.bulk("retry", where=JobFilter(type="many", states=FAILED))
    else:
        result = await jobs.bulk("retry", ids=ids)
    assert result == BulkResult(matched=1100, changed=1100, skipped=0)
    queued = await jobs.page(JobFilter(states=(JobState.QUEUED,)), limit=1)
    still_failed = await jobs.page(JobFilter(states=FAILED), limit=10)
    assert queued.total == 1100 and {j.type for j in still_failed.items} == {"few"}
    assert len({e.job_id for e in await events_of(backend, ev.QUEUED, 1100)}) == 1100


async def test_small_batches_still_cover_every_job(backend: QueueBackend) -> None:
    ids = await failed_jobs(backend, 23)
    jobs = JobService(backend, Registry(), bulk_batch=5)
    assert await jobs.bulk("cancel", where=JobFilter()) == BulkResult(23, 0, 23)
    assert await jobs.bulk("retry", ids=ids[:12]) == BulkResult(12, 12, 0)
    assert await jobs.bulk("delete", where=JobFilter()) == BulkResult(23, 11, 12)


async def test_exactly_one_of_filter_or_ids(backend: QueueBackend) -> None:
    jobs = JobService(backend, Registry())
    with pytest.raises(InvalidInput):
        await jobs.bulk("retry")
    with pytest.raises(InvalidInput):
        await jobs.bulk("retry", where=JobFilter(), ids=["a"])
    with pytest.raises(InvalidInput):
        await jobs.bulk("explode", ids=["a"])  # type: ignore[arg-type]


# ---- the store's own bulk methods (the service above picks between them and checks input)
async def test_bulk_where_walks_the_filter_in_batches_and_counts_what_it_skipped(
    backend: QueueBackend,
) -> None:
    failed = await failed_jobs(backend, 7, type="x", owner_id="ada")
    await failed_jobs(backend, 2, type="x", owner_id="bob")
    live = await backend.enqueue([NewJob(type="x", payload={}, owner_id="ada") for _ in range(3)])

    result = await backend.bulk_where("retry", JobFilter(type="x", owner_id="ada"), batch=2)

    assert result == BulkResult(matched=10, changed=7, skipped=3)
    assert await states(backend, failed) == {JobState.QUEUED}
    assert await states(backend, [e.id for e in live]) == {JobState.QUEUED}
    bobs = JobFilter(owner_id="bob", states=FAILED)
    assert (await backend.page_jobs(bobs, JobSort())).total == 2


@pytest.mark.parametrize("action", ["retry", "cancel", "delete"])
async def test_bulk_where_with_nothing_matching_changes_nothing(
    backend: QueueBackend, action: BulkAction
) -> None:
    await failed_jobs(backend, 2)
    assert await backend.bulk_where(action, JobFilter(type="none"), batch=10) == BulkResult(0, 0, 0)
    assert len(await backend.list_jobs()) == 2


async def test_bulk_where_cancels_live_jobs_and_deletes_finished_ones(
    backend: QueueBackend,
) -> None:
    failed = await failed_jobs(backend, 3, queue="a")
    queued = await backend.enqueue([NewJob(type="noop", payload={}, queue="b") for _ in range(4)])
    cancel = await backend.bulk_where("cancel", JobFilter(), batch=3)
    assert cancel == BulkResult(matched=7, changed=4, skipped=3)
    assert await states(backend, [e.id for e in queued]) == {JobState.CANCELLED}
    delete = await backend.bulk_where("delete", JobFilter(queue="a"), batch=3)
    assert delete == BulkResult(matched=3, changed=3, skipped=0)
    assert {j.id for j in await backend.list_jobs()} == {e.id for e in queued}
    assert failed


async def test_bulk_ids_counts_each_id_once_and_skips_others_and_unknown_ones(
    backend: QueueBackend,
) -> None:
    mine = await failed_jobs(backend, 3, owner_id="ada")
    (theirs,) = await failed_jobs(backend, 1, owner_id="bob")
    ids = [*mine, mine[0], theirs, "no-such-job"]
    assert await backend.bulk_ids("retry", ids, "ada", batch=2) == BulkResult(5, 3, 2)
    assert await states(backend, mine) == {JobState.QUEUED}
    assert (await backend.get(theirs)).state is JobState.FAILED
    assert await backend.bulk_ids("retry", [theirs], None, batch=2) == BulkResult(1, 1, 0)
