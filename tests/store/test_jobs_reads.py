"""Reading jobs on both databases: one, many (order, owners, missing ids), cursor listings,
offset pages in every sort order, counts and per-minute figures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import (
    SORT_KEYS,
    BulkResult,
    ErrorInfo,
    JobFilter,
    JobRecord,
    JobSort,
    NewJob,
    Outcome,
)
from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.store.backend import QueueBackend
from tests.store.helpers import job, job_in_state


def jobs_of(owner: str, n: int) -> list[NewJob]:
    return [NewJob(type="noop", payload={"i": i}, owner_id=owner, tags=("t",)) for i in range(n)]


async def test_jobs_come_back_in_the_order_asked_with_repeats(backend: QueueBackend) -> None:
    new = jobs_of("ada", 5)
    await backend.enqueue(new)
    asked = [new[3].id, new[0].id, new[4].id, new[0].id]

    found = await backend.get_many(asked, "ada")

    assert [j.id for j in found] == asked
    assert [j.payload for j in found] == [{"i": 3}, {"i": 0}, {"i": 4}, {"i": 0}]
    assert found[0] == await backend.get(new[3].id)
    assert all(j.state is JobState.QUEUED and j.tags == ["t"] for j in found)


async def test_more_ids_than_one_query_takes_are_all_read(backend: QueueBackend) -> None:
    new = jobs_of("ada", 1200)
    await backend.enqueue(new)
    asked = [j.id for j in reversed(new)]

    assert [j.id for j in await backend.get_many(asked)] == asked


async def test_another_owners_job_is_not_found_like_a_missing_one(backend: QueueBackend) -> None:
    (mine,), (theirs,) = jobs_of("ada", 1), jobs_of("bob", 1)
    await backend.enqueue([mine, theirs])

    with pytest.raises(NotFound) as caught:
        await backend.get_many([mine.id, theirs.id], "ada")
    assert caught.value.details["job_id"] == theirs.id
    with pytest.raises(NotFound):
        await backend.get_many([mine.id, "no-such-job"])
    assert [j.id for j in await backend.get_many([mine.id, theirs.id])] == [mine.id, theirs.id]


async def test_no_ids_is_no_jobs(backend: QueueBackend) -> None:
    assert await backend.get_many([]) == []


async def test_a_batch_of_duplicates_reads_back_each_owners_existing_job(
    backend: QueueBackend,
) -> None:
    """The duplicates' existing jobs are read in one query too, whoever owns them."""
    first = [
        NewJob(type="noop", payload={"i": i}, owner_id=owner, idempotency_key=f"k{i}")
        for owner in ("ada", "bob")
        for i in range(3)
    ]
    stored = await backend.enqueue(first)
    again = [
        NewJob(
            type="noop", payload=j.payload, owner_id=j.owner_id, idempotency_key=j.idempotency_key
        )
        for j in reversed(first)
    ]

    found = await backend.enqueue(again)

    assert [e.id for e in found] == [e.id for e in reversed(stored)]
    assert not any(e.created for e in found)


async def test_owner_scoping_hides_other_owners_jobs(backend: QueueBackend) -> None:
    (alices,) = await backend.enqueue([job(owner_id="alice")])
    with pytest.raises(NotFound):
        await backend.get(alices.id, owner_id="bob")
    with pytest.raises(NotFound):
        await backend.cancel(alices.id, owner_id="bob")
    assert (await backend.get(alices.id, owner_id="alice")).owner_id == "alice"
    assert [j.id for j in await backend.list_jobs(JobFilter(owner_id="bob"))] == []


async def test_counts_by_queue_and_state(backend: QueueBackend) -> None:
    await backend.enqueue([job(), job(), job(queue="mail")])
    counts = {(c.queue, c.state): c.count for c in await backend.counts()}
    assert counts == {("default", JobState.QUEUED): 2, ("mail", JobState.QUEUED): 1}


async def test_list_filters_by_tag_state_and_creation_time(backend: QueueBackend) -> None:

    before = utcnow()
    tagged = await backend.enqueue(
        [job(tags=("red", "big")), job(tags=("red",)), job(tags=("blue",))]
    )
    after = utcnow()
    red = await backend.list_jobs(JobFilter(tag="red"))
    assert {j.id for j in red} == {tagged[0].id, tagged[1].id}
    assert [j.id for j in await backend.list_jobs(JobFilter(tag="big"))] == [tagged[0].id]
    assert await backend.list_jobs(JobFilter(created_before=before)) == []
    assert (
        len(
            await backend.list_jobs(
                JobFilter(created_after=before, created_before=after + timedelta(seconds=1))
            )
        )
        == 3
    )
    page = await backend.list_jobs(limit=2)
    rest = await backend.list_jobs(after_id=page[-1].id, limit=2)
    assert [j.id for j in page + rest] == [t.id for t in reversed(tagged)]


async def test_throughput_counts_finished_jobs_per_minute(backend: QueueBackend) -> None:
    await job_in_state(backend, "completed")
    await job_in_state(backend, "completed")
    await job_in_state(backend, "failed")
    # Per minute: the three may finish on either side of a minute's turn (CI saw two points).
    points = await backend.throughput(utcnow() - timedelta(minutes=5))
    assert (sum(p.completed for p in points), sum(p.failed for p in points)) == (2, 1)
    assert 1 <= len(points) <= 2 and all(p.minute <= utcnow() for p in points)


async def varied(backend: QueueBackend) -> list[JobRecord]:
    """Six jobs that differ in every sortable column, two finished, one running, one
    scheduled (and so with no finish time)."""
    now = utcnow()
    specs: list[dict[str, object]] = [
        {"type": "alpha", "queue": "q1", "priority": 3},
        {"type": "beta", "queue": "q2", "priority": 1, "run_at": now + timedelta(hours=1)},
        {"type": "alpha", "queue": "q2", "priority": 3},
        {"type": "gamma", "queue": "done", "priority": 0},
        {"type": "beta", "queue": "lost", "priority": 2},
        {"type": "delta", "queue": "busy", "priority": 1},
    ]
    ids = [(await backend.enqueue([job(**spec)]))[0].id for spec in specs]
    (done,) = await backend.claim("w", ["done"], 1, 30)
    (lost,) = await backend.claim("w", ["lost"], 1, 30)
    await backend.claim("w", ["busy"], 1, 30)
    await backend.finish("w", [Outcome(done.id, 1, "completed")])
    await backend.finish("w", [Outcome(lost.id, 1, "failed", error=ErrorInfo("E", "m"))])
    return await backend.get_many(ids)


def in_order(jobs: list[JobRecord], key: str, descending: bool) -> list[str]:
    """The order a page promises: by the column, then the id the same way; missing last."""
    present = [j for j in jobs if getattr(j, key) is not None]
    missing = [j for j in jobs if getattr(j, key) is None]
    present.sort(key=lambda j: (_sortable(getattr(j, key)), j.id), reverse=descending)
    missing.sort(key=lambda j: j.id, reverse=descending)
    return [j.id for j in present + missing]


def _sortable(value: object) -> object:
    return value.value if isinstance(value, JobState) else value


async def test_a_page_follows_every_sort_key_both_ways(backend: QueueBackend) -> None:
    jobs = await varied(backend)
    for key in SORT_KEYS:
        for descending in (False, True):
            page = await backend.page_jobs(JobFilter(), JobSort(key, descending))
            assert [j.id for j in page.items] == in_order(jobs, key, descending), (key, descending)
            assert page.total == len(jobs)


async def test_offset_pages_cover_everything_once_and_each_tells_the_total(
    backend: QueueBackend,
) -> None:
    jobs = await varied(backend)
    order = JobSort("priority", descending=True)
    seen: list[str] = []
    for offset in range(0, 8, 2):
        page = await backend.page_jobs(JobFilter(), order, offset=offset, limit=2)
        assert page.total == 6 and len(page.items) == min(2, 6 - offset)
        seen += [j.id for j in page.items]
    assert seen == in_order(jobs, "priority", True)
    beyond = await backend.page_jobs(JobFilter(), order, offset=50)
    assert (beyond.items, beyond.total) == ([], 6)


async def test_a_page_and_its_total_honour_the_filter(backend: QueueBackend) -> None:
    jobs = await varied(backend)
    await backend.enqueue([job(type="alpha", owner_id="bob")])
    alphas = await backend.page_jobs(
        JobFilter(type="alpha", owner_id=jobs[0].owner_id), JobSort(), limit=1
    )
    assert alphas.total == 2 and [j.id for j in alphas.items] == [jobs[2].id]  # newest first
    finished = (JobState.COMPLETED, JobState.FAILED)
    page = await backend.page_jobs(JobFilter(states=finished), JobSort("finished_at", False))
    assert [j.id for j in page.items] == [jobs[3].id, jobs[4].id] and page.total == 2
    assert (await backend.page_jobs(JobFilter(owner_id="carol"), JobSort())).total == 0


async def test_counts_and_enqueued_per_minute_are_owner_scoped(backend: QueueBackend) -> None:
    before = utcnow()
    await backend.enqueue([job(owner_id="ada"), job(owner_id="ada"), job(owner_id="bob")])
    later = await backend.enqueue([job(owner_id="ada", run_at=utcnow() + timedelta(hours=1))])
    counts = await backend.counts("ada")
    assert [(c.queue, c.state, c.count) for c in counts] == [
        ("default", JobState.QUEUED, 2),
        ("default", JobState.SCHEDULED, 1),
    ]
    assert all(c.oldest_created_at is not None and c.oldest_created_at >= before for c in counts)
    assert counts[1].oldest_run_at == (await backend.get(later[0].id)).run_at
    assert sum(c.count for c in await backend.counts()) == 4

    per_minute = await backend.enqueued_per_minute(before - timedelta(minutes=1), "ada")
    assert sum(per_minute.values()) == 3
    assert all(m.second == 0 and m.microsecond == 0 and m.tzinfo for m in per_minute)
    assert sum((await backend.enqueued_per_minute(before - timedelta(minutes=1))).values()) == 4
    assert await backend.enqueued_per_minute(utcnow() + timedelta(minutes=1)) == {}


async def test_every_filter_field_narrows_listings_pages_and_bulk_actions_alike(
    backend: QueueBackend,
) -> None:
    before = utcnow()
    (red,) = await backend.enqueue([job(type="resize", queue="img", tags=("red",), n=7)])
    middle = utcnow()
    (bobs,) = await backend.enqueue([job(type="mail", owner_id="bob", tags=("blue",))])
    (later,) = await backend.enqueue([job(type="resize", run_at=utcnow() + timedelta(hours=1))])
    filters = {
        JobFilter(owner_id="bob"): {bobs.id},
        JobFilter(states=(JobState.SCHEDULED,)): {later.id},
        JobFilter(queue="img"): {red.id},
        JobFilter(type="resize"): {red.id, later.id},
        JobFilter(tag="red"): {red.id},
        JobFilter(created_after=middle): {bobs.id, later.id},
        JobFilter(created_before=middle): {red.id},
        JobFilter(created_after=before, type="mail"): {bobs.id},
        JobFilter(text=red.id[-8:].upper()): {red.id},
        JobFilter(text='"n": 7'): {red.id},
        JobFilter(tag="green"): set(),
    }
    for where, expected in filters.items():
        assert {j.id for j in await backend.list_jobs(where)} == expected, where
        page = await backend.page_jobs(where, JobSort())
        assert ({j.id for j in page.items}, page.total) == (expected, len(expected)), where
        # Queued and scheduled jobs cannot be retried: the bulk action only counts them.
        matched = len(expected)
        assert await backend.bulk_where("retry", where, 2) == BulkResult(matched, 0, matched)
