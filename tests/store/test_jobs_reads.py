"""Reading many jobs at once, on SQLite and on PostgreSQL: order, owners, missing ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import JobFilter, NewJob
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
        NewJob(type="noop", payload={}, owner_id=j.owner_id, idempotency_key=j.idempotency_key)
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
    (point,) = await backend.throughput(utcnow() - timedelta(minutes=5))
    assert (point.completed, point.failed) == (2, 1)
    assert point.minute <= utcnow()
