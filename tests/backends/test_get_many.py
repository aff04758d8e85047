"""Reading many jobs at once, on SQLite and on PostgreSQL: order, owners, missing ids."""

from __future__ import annotations

import pytest

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.store.backend import QueueBackend


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
