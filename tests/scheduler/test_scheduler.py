"""Cron fires exactly once per fire time, one leader at a time, maintenance on the leader."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, func, insert, select

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import NewJob
from conveyor.domain.schedules import NewSchedule
from conveyor.domain.states import JobState
from conveyor.errors import Conflict, InvalidInput, UnknownJobType
from conveyor.runtime import load_handlers
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.services.jobs import JobService
from conveyor.services.schedules import ScheduleService
from conveyor.store import tables
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.store.records import must
from tests.store.helpers import job_in_state, settled, wait_past


def services(backend: QueueBackend) -> ScheduleService:
    return ScheduleService(backend, JobService(backend, load_handlers([])))


async def make_due(backend: QueueBackend, schedule_id: str) -> None:
    """Pretend the next fire time has come, without waiting a real minute: the last round
    minute, so no other time of a minute-grained cron has come since (it would fire too)."""
    past = utcnow().replace(second=0, microsecond=0)
    await backend.update_schedule(schedule_id, None, next_fire_at=past)


async def test_two_schedulers_firing_together_fire_once(db_url: str) -> None:
    one, two = open_backend(db_url), open_backend(db_url)
    try:
        first, second = services(one), services(two)
        schedule = await first.create(
            NewSchedule(name="tick", cron="* * * * *", job_type="noop", payload={})
        )
        await make_due(one, schedule.id)
        fired = await asyncio.gather(*(s.fire_due() for s in (first, second, first, second)))
        assert sum(fired) == 1
        (fire,) = await one.fires_of(schedule.id)
        job = await one.get(fire[1])
        assert job.schedule_id == schedule.id and job.type == "noop"
        after = await one.get_schedule(schedule.id)
        assert after.next_fire_at is not None and after.next_fire_at > utcnow()
    finally:
        await one.close()
        await two.close()


async def test_a_fire_time_already_taken_is_not_fired_again(backend: QueueBackend) -> None:
    svc = services(backend)
    schedule = await svc.create(
        NewSchedule(name="s", cron="*/5 * * * *", job_type="noop", payload={})
    )
    fire_at = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    stale = replace(schedule, next_fire_at=schedule.next_fire_at)
    job_one = svc.job_for(stale, fire_at)
    job_two = svc.job_for(stale, fire_at)
    later = fire_at + timedelta(minutes=5)
    assert await backend.fire_schedule(stale, [(fire_at, job_one)], later)
    assert not await backend.fire_schedule(stale, [(fire_at, job_two)], later)
    assert len(await backend.fires_of(schedule.id)) == 1


async def test_paused_schedules_do_not_fire_and_resume_recomputes(backend: QueueBackend) -> None:
    svc = services(backend)
    schedule = await svc.create(
        NewSchedule(name="p", cron="* * * * *", job_type="noop", payload={})
    )
    await svc.pause(schedule.id)
    await make_due(backend, schedule.id)
    assert await svc.fire_due() == 0
    resumed = await svc.resume(schedule.id)
    assert not resumed.paused and resumed.next_fire_at is not None
    assert resumed.next_fire_at > utcnow()


async def test_time_zones_follow_local_wall_clock(backend: QueueBackend) -> None:
    svc = services(backend)
    schedule = await svc.create(
        NewSchedule(
            name="tokyo-9am", cron="0 9 * * *", timezone="Asia/Tokyo", job_type="noop", payload={}
        )
    )
    assert schedule.next_fire_at is not None
    assert schedule.next_fire_at.astimezone(UTC).hour == 0  # 09:00 JST is 00:00 UTC


async def test_bad_schedules_are_refused(backend: QueueBackend) -> None:
    svc = services(backend)
    with pytest.raises(InvalidInput):
        await svc.create(NewSchedule(name="x", cron="61 * * * *", job_type="noop", payload={}))
    with pytest.raises(InvalidInput):
        await svc.create(
            NewSchedule(
                name="x", cron="* * * * *", timezone="Mars/Base", job_type="noop", payload={}
            )
        )
    with pytest.raises(UnknownJobType):
        await svc.create(NewSchedule(name="x", cron="* * * * *", job_type="nope", payload={}))
    with pytest.raises(InvalidInput):
        await svc.create(
            NewSchedule(name="x", cron="* * * * *", job_type="sleep", payload={"seconds": -1})
        )
    await svc.create(NewSchedule(name="x", cron="* * * * *", job_type="noop", payload={}))
    with pytest.raises(Conflict):
        await svc.create(NewSchedule(name="x", cron="* * * * *", job_type="noop", payload={}))
    assert len(await backend.list_schedules()) == 1


async def test_only_one_scheduler_leads(db_url: str) -> None:
    one, two = open_backend(db_url), open_backend(db_url)
    config = SchedulerConfig(leader_ttl=1.0)
    first = Scheduler(one, load_handlers([]), config)
    second = Scheduler(two, load_handlers([]), config)
    second.id = "other-scheduler"
    second._leadership = two.leadership("scheduler", second.id, config.leader_ttl)
    try:
        reports = [await first.tick(), await second.tick(), await first.tick()]
        assert [r.leader for r in reports] == [True, False, True]
        await first._leadership.release()
        assert (await second.tick()).leader
        assert not (await first.tick()).leader
    finally:
        await first._leadership.release()
        await second._leadership.release()
        await one.close()
        await two.close()


async def test_leader_tick_promotes_rescues_and_prunes(backend: QueueBackend) -> None:
    config = SchedulerConfig(prune_every=0, prune_completed_after=0)
    scheduler = Scheduler(backend, load_handlers([]), config)
    (due,) = await backend.enqueue(
        [NewJob(type="noop", payload={}, run_at=utcnow() + timedelta(seconds=0.2))]
    )
    (lost,) = await backend.enqueue([NewJob(type="noop", payload={}, max_attempts=2)])
    await backend.claim("gone", ["default"], 1, lease_s=0.1)
    await asyncio.sleep(0.3)
    report = await scheduler.tick()
    try:
        assert report.leader and report.promoted == 1 and report.requeued == 1
        assert (await backend.get(due.id)).state is JobState.QUEUED
        assert (await backend.get(lost.id)).state is JobState.QUEUED
    finally:
        await scheduler._leadership.release()


async def test_the_leader_prunes_old_events_with_no_relay_running(backend: QueueBackend) -> None:
    """Nothing else would delete them; a sink's fresh cursor still holds back what it has
    not delivered. One slice per tick (`prune_budget=0`): a round takes as many ticks as it
    has slices, as it may on a busy machine whatever the budget."""
    config = SchedulerConfig(prune_every=0, events_retention=0, prune_budget=0)
    scheduler = Scheduler(backend, load_handlers([]), config)
    await backend.enqueue([NewJob(type="noop", payload={}) for _ in range(5)])
    events = await settled(backend, 5)
    await backend.save_cursor("rabbitmq", events[2].position)
    try:
        await asyncio.sleep(0.01)  # the cursor is older than "now - 0 s", so it is stale...
        assert await events_pruned_by_a_round(scheduler) == 5  # ...and holds nothing back
        await backend.enqueue([NewJob(type="noop", payload={}) for _ in range(3)])
        fresh = await settled(backend, 3)
        scheduler.config = replace(config, events_retention=0.5)
        await asyncio.sleep(0.6)  # the events are past retention
        await backend.save_cursor("rabbitmq", fresh[0].position)  # a sink in use
        assert await events_pruned_by_a_round(scheduler) == 1  # only what it has delivered
        await asyncio.sleep(0.6)  # now its cursor is stale too
        assert await events_pruned_by_a_round(scheduler) == 2
    finally:
        await scheduler._leadership.release()


async def events_pruned_by_a_round(scheduler: Scheduler) -> int:
    """Ticks from the start of a pruning round to its end; the events they pruned."""
    pruned = 0
    for _ in range(100):
        report = await scheduler.tick()
        pruned += report.events_pruned
        if not report.pruning:
            return pruned
    raise AssertionError("the pruning round did not end in 100 ticks")


# ---- pruning in bounded slices ---------------------------------------------------------------
OLD_DONE, OLD_EVENTS, KEPT_DONE = 12_000, 9_000, 50


async def backlog(backend: QueueBackend) -> set[str]:
    """Rows to prune, written directly (tens of thousands through the API would take long):
    completed jobs finished two days ago and events eight days old; beside them rows that
    must stay: jobs finished an hour ago, failed ones two days ago (kept a week), and
    events of an hour ago. Returns the ids of the jobs that must stay."""
    now = utcnow()

    def finished(n: int, state: str, ago: timedelta) -> dict[str, object]:
        at = now - ago
        return {
            "id": f"old-{state}-{ago.total_seconds():.0f}-{n:06d}", "owner_id": "u",
            "queue": "default", "type": "noop", "payload": {}, "priority": 0, "state": state,
            "attempt": 1, "max_attempts": 1, "run_at": at, "progress": 100, "errors": [],
            "tags": [], "created_at": at, "started_at": at, "finished_at": at,
        }  # fmt: skip

    def event(n: int, ago: timedelta) -> dict[str, object]:
        return {
            "xid": 0, "type": "completed", "job_id": f"gone-{n}", "owner_id": "u",
            "queue": "default", "job_type": "noop", "state": "completed", "attempt": 1,
            "data": None, "created_at": now - ago,
        }  # fmt: skip

    two_days, hour = timedelta(days=2), timedelta(hours=1)
    rows = [finished(n, "completed", two_days) for n in range(OLD_DONE)]
    rows += [finished(n, "completed", hour) for n in range(KEPT_DONE)]
    rows += [finished(n, "failed", two_days) for n in range(KEPT_DONE)]
    async with backend.db.write() as conn:
        await conn.execute(insert(tables.jobs), rows)
        await conn.execute(
            insert(tables.events), [event(n, timedelta(days=8)) for n in range(OLD_EVENTS)]
        )
        await conn.execute(insert(tables.events), [event(n, hour) for n in range(KEPT_DONE)])
    return {str(row["id"]) for row in rows[OLD_DONE:]}


async def due_and_lost(backend: QueueBackend, queue: str) -> tuple[str, str]:
    """A scheduled job whose time has come and a running job whose lease has expired."""
    soon = utcnow() + timedelta(seconds=0.05)
    (due,) = await backend.enqueue([NewJob(type="noop", payload={}, run_at=soon, queue=queue)])
    (lost,) = await backend.enqueue([NewJob(type="noop", payload={}, queue=queue)])
    (claimed,) = await backend.claim("gone", [queue], 1, lease_s=0.05)
    assert claimed.id == lost.id
    await wait_past(utcnow() + timedelta(seconds=0.05))  # the lease ends sooner than that
    return due.id, lost.id


async def count(backend: QueueBackend, table: Table) -> int:
    async with backend.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_pruning_a_backlog_in_slices_never_holds_up_promotion_or_rescue(
    backend: QueueBackend,
) -> None:
    """One slice of 500 rows per tick (budget 0): every tick promotes and rescues what is
    due while the backlog is still being pruned, and the round, over many ticks, deletes
    exactly the rows past retention."""
    kept = await backlog(backend)
    live = [await job_in_state(backend, s) for s in ("queued", "running", "scheduled")]
    config = SchedulerConfig(
        prune_every=0, prune_batch=500, prune_budget=0, prune_completed_after=24 * 3600
    )
    scheduler = Scheduler(backend, load_handlers([]), config)
    jobs_pruned = events_pruned = ticks = 0
    try:
        while True:
            due, lost = ("", "") if ticks % 10 else await due_and_lost(backend, f"q{ticks}")
            report = await scheduler.tick()
            ticks += 1
            assert report.pruned + report.events_pruned <= 500  # one slice per tick
            jobs_pruned += report.pruned
            events_pruned += report.events_pruned
            if due:  # promoted and rescued in the same tick, pruning or not
                assert (report.promoted, report.requeued) == (1, 1)
                assert (await backend.get(due)).state is JobState.QUEUED
                assert (await backend.get(lost)).state is JobState.QUEUED
            if not report.pruning:
                break
            assert ticks < 100
    finally:
        await scheduler.close()
    assert ticks > (OLD_DONE + OLD_EVENTS) // 500  # several ticks, not one
    assert (jobs_pruned, events_pruned) == (OLD_DONE, OLD_EVENTS)
    assert await count(backend, tables.events) >= KEPT_DONE  # the young ones (and new ones)
    async with backend.db.read() as conn:
        left = set((await conn.execute(select(tables.jobs.c.id))).scalars())
        oldest = (await conn.execute(select(func.min(tables.events.c.created_at)))).scalar_one()
    assert {i for i in left if i.startswith("old-")} == kept
    assert set(live) <= left
    assert must(oldest) > utcnow() - timedelta(days=7)
