"""Schedules and their fires on both databases: the records scoped by owner, which are due,
and a fire that enqueues its job once per (schedule, fire time), even when two processes race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import NewJob
from conveyor.domain.schedules import NewSchedule, ScheduleRecord
from conveyor.domain.states import JobState
from conveyor.errors import Conflict, NotFound
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend


def minutes() -> Callable[[int], datetime]:
    """Whole minutes (fire times are whole minutes) counted from the current one, read once:
    a test that crosses a minute boundary still compares the same times."""
    base = utcnow().replace(second=0, microsecond=0)
    return lambda offset: base + timedelta(minutes=offset)


def new(name: str, owner: str = "ada", **fields: object) -> NewSchedule:
    return NewSchedule(
        name=name, cron="* * * * *", job_type="report", payload={"n": 1}, owner_id=owner,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def fire_job(schedule: ScheduleRecord) -> NewJob:
    return NewJob(
        type=schedule.job_type or "",
        payload=schedule.payload,
        owner_id=schedule.owner_id,
        schedule_id=schedule.id,
    )


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[QueueBackend]:
    """A second backend on the same database: another scheduler process's."""
    opened = open_backend(db_url)
    yield opened
    await opened.close()


async def test_a_created_schedule_reads_back_with_every_field(backend: QueueBackend) -> None:
    minute = minutes()
    spec = new(
        "nightly",
        timezone="Europe/Paris",
        queue="reports",
        priority=5,
        max_attempts=7,
        timeout_s=12.5,
        tags=("a", "b"),
        paused=True,
    )
    created = await backend.create_schedule(spec, minute(5))

    assert (created.id, created.owner_id, created.name) == (spec.id, "ada", "nightly")
    assert (created.cron, created.timezone, created.job_type) == (
        "* * * * *",
        "Europe/Paris",
        "report",
    )
    assert (created.queue, created.priority, created.max_attempts, created.timeout_s) == (
        "reports",
        5,
        7,
        12.5,
    )
    assert (created.payload, created.tags, created.paused) == ({"n": 1}, ["a", "b"], True)
    assert created.next_fire_at == minute(5) and created.last_fire_at is None
    assert created.created_at == created.updated_at and created.created_at.tzinfo is not None
    assert await backend.get_schedule(spec.id) == created
    bare = await backend.create_schedule(new("bare"), None)
    assert (bare.queue, bare.max_attempts, bare.timeout_s, bare.next_fire_at) == (
        None,
        None,
        None,
        None,
    )


async def test_names_are_unique_per_owner(backend: QueueBackend) -> None:
    minute = minutes()
    await backend.create_schedule(new("nightly"), minute(1))
    with pytest.raises(Conflict):
        await backend.create_schedule(new("nightly"), minute(1))
    bobs = await backend.create_schedule(new("nightly", owner="bob"), minute(1))
    assert bobs.owner_id == "bob"


async def test_get_list_update_and_delete_see_only_the_owners_schedules(
    backend: QueueBackend,
) -> None:
    minute = minutes()
    b = await backend.create_schedule(new("b-weekly"), minute(1))
    a = await backend.create_schedule(new("a-nightly"), minute(1))
    bobs = await backend.create_schedule(new("a-nightly", owner="bob"), minute(1))

    assert [s.id for s in await backend.list_schedules("ada")] == [a.id, b.id]  # by name
    assert [s.id for s in await backend.list_schedules("bob")] == [bobs.id]
    assert {s.id for s in await backend.list_schedules()} == {a.id, b.id, bobs.id}
    assert await backend.list_schedules("carol") == []
    assert (await backend.get_schedule(a.id, "ada")).id == a.id
    with pytest.raises(NotFound):
        await backend.get_schedule(a.id, "bob")

    with pytest.raises(NotFound):
        await backend.update_schedule(a.id, "bob", paused=True)
    changed = await backend.update_schedule(
        a.id, "ada", paused=True, cron="0 * * * *", tags=("x",), next_fire_at=minute(60)
    )
    assert (changed.paused, changed.cron, changed.tags) == (True, "0 * * * *", ["x"])
    assert changed.next_fire_at == minute(60) and changed.updated_at >= a.updated_at
    assert await backend.get_schedule(a.id) == changed
    admin = await backend.update_schedule(a.id, None, paused=False)  # None: any owner
    assert not admin.paused

    with pytest.raises(NotFound):
        await backend.delete_schedule(a.id, "bob")
    await backend.delete_schedule(a.id, "ada")
    with pytest.raises(NotFound):
        await backend.get_schedule(a.id)
    with pytest.raises(NotFound):
        await backend.delete_schedule(a.id)
    await backend.delete_schedule(bobs.id)  # None: any owner
    assert [s.id for s in await backend.list_schedules()] == [b.id]


async def test_unknown_schedules_are_not_found(backend: QueueBackend) -> None:
    with pytest.raises(NotFound):
        await backend.get_schedule("no-such-schedule")
    with pytest.raises(NotFound):
        await backend.update_schedule("no-such-schedule", None, paused=True)
    with pytest.raises(NotFound):
        await backend.delete_schedule("no-such-schedule")
    assert await backend.fires_of("no-such-schedule") == []


async def test_due_schedules_are_the_unpaused_ones_whose_time_came_soonest_first(
    backend: QueueBackend,
) -> None:
    minute = minutes()
    older = await backend.create_schedule(new("older"), minute(-2))
    newer = await backend.create_schedule(new("newer", owner="bob"), minute(-1))
    await backend.create_schedule(new("paused", paused=True), minute(-3))
    await backend.create_schedule(new("later"), minute(60))
    await backend.create_schedule(new("never"), None)
    now = utcnow()

    assert [s.id for s in await backend.due_schedules(now)] == [older.id, newer.id]
    assert [s.id for s in await backend.due_schedules(now, limit=1)] == [older.id]
    assert [s.id for s in await backend.due_schedules(minute(-2))] == [older.id]  # <= now
    assert await backend.due_schedules(minute(-3)) == []


async def test_a_fire_enqueues_its_job_and_moves_the_schedule_on(backend: QueueBackend) -> None:
    minute = minutes()
    schedule = await backend.create_schedule(new("nightly", queue="reports"), minute(-1))
    job = replace(fire_job(schedule), queue="reports")

    assert await backend.fire_schedule(schedule, [(minute(-1), job)], minute(1))

    assert await backend.fires_of(schedule.id) == [(minute(-1), job.id)]
    queued = await backend.get(job.id)
    assert (queued.state, queued.schedule_id, queued.queue) == (
        JobState.QUEUED,
        schedule.id,
        "reports",
    )
    moved = await backend.get_schedule(schedule.id)
    assert (moved.last_fire_at, moved.next_fire_at) == (minute(-1), minute(1))
    assert await backend.due_schedules(utcnow()) == []


async def test_a_fire_time_that_already_ran_fires_no_second_job(backend: QueueBackend) -> None:
    minute = minutes()
    schedule = await backend.create_schedule(new("nightly"), minute(-2))
    first = fire_job(schedule)
    assert await backend.fire_schedule(schedule, [(minute(-2), first)], minute(-1))

    again = fire_job(schedule)  # a stale copy of the record, the same fire time
    assert not await backend.fire_schedule(schedule, [(minute(-2), again)], minute(-1))
    with pytest.raises(NotFound):
        await backend.get(again.id)
    assert await backend.fires_of(schedule.id) == [(minute(-2), first.id)]

    # The stale record does not move the schedule back; the fresh one fires the next time.
    assert not await backend.fire_schedule(schedule, [(minute(-2), fire_job(schedule))], minute(-2))
    fresh = await backend.get_schedule(schedule.id)
    assert fresh.next_fire_at == minute(-1)
    later = fire_job(fresh)
    assert await backend.fire_schedule(fresh, [(minute(-1), later)], minute(1))
    assert await backend.fires_of(schedule.id) == [(minute(-2), first.id), (minute(-1), later.id)]


async def test_two_processes_racing_on_a_fire_time_fire_it_once(
    backend: QueueBackend, other: QueueBackend
) -> None:
    minute = minutes()
    schedule = await backend.create_schedule(new("every-minute"), minute(-10))
    winners: list[str] = []
    for n in range(-10, 0):
        mine, theirs = fire_job(schedule), fire_job(schedule)
        fired = await asyncio.gather(
            backend.fire_schedule(schedule, [(minute(n), mine)], minute(n + 1)),
            other.fire_schedule(schedule, [(minute(n), theirs)], minute(n + 1)),
        )
        assert sorted(fired) == [False, True], f"fire time {n}: {fired}"
        winner, loser = (mine, theirs) if fired[0] else (theirs, mine)
        winners.append(winner.id)
        with pytest.raises(NotFound):
            await backend.get(loser.id)
        schedule = await backend.get_schedule(schedule.id)
    assert [job_id for _, job_id in await backend.fires_of(schedule.id)] == winners
    assert [j.id for j in await backend.get_many(winners)] == winners


async def test_deleting_a_schedule_deletes_its_fires_but_not_its_jobs(
    backend: QueueBackend,
) -> None:
    minute = minutes()
    schedule = await backend.create_schedule(new("nightly"), minute(-1))
    job = fire_job(schedule)
    assert await backend.fire_schedule(schedule, [(minute(-1), job)], minute(1))
    await backend.delete_schedule(schedule.id)
    assert await backend.fires_of(schedule.id) == []
    assert (await backend.get(job.id)).schedule_id == schedule.id


async def test_two_processes_creating_one_name_at_once_one_gets_a_conflict(
    backend: QueueBackend, other: QueueBackend, db_url: str
) -> None:
    """The name is unique per owner: whoever loses the race is told Conflict (HTTP 409), as
    when the name was taken long ago, not a database error (HTTP 500)."""
    for n in range(10):
        results = await asyncio.gather(
            backend.create_schedule(new(f"race-{n}"), None),
            other.create_schedule(new(f"race-{n}"), None),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, ScheduleRecord)]
        refused = [r for r in results if not isinstance(r, ScheduleRecord)]
        assert len(created) == 1, results
        assert [type(r) for r in refused] == [Conflict], refused
