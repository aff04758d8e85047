"""Cron misfires on both databases, driven by explicit `now` values (no clock, no sleeps).

A fire at most `misfire_grace` late fires, late, and so does every later time that has come:
a slow tick loses no report (issue #13, item 7: an every-second schedule written 1.4 s late
lost the next second's fire). A schedule further behind than the grace was missed (the
scheduler was away) and its policy decides: `skip` none, `once` the latest, `all` each one,
the latest `catchup_max`. However many schedulers fire, each fire time runs once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain import cron
from conveyor.domain.schedules import MisfirePolicy, NewSchedule, ScheduleRecord
from conveyor.runtime import load_handlers
from conveyor.scheduler.fires import Misfires, fire_due
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend

T = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # a round minute: on every schedule's grid
EVERY_SECOND = "* * * * * *"  # croniter's sixth field is the second
EVERY_MINUTE = "* * * * *"
REGISTRY = load_handlers([])


def sec(n: float) -> datetime:
    return T + timedelta(seconds=n)


def minute(n: float) -> datetime:
    return T + timedelta(minutes=n)


async def schedule_at(
    backend: QueueBackend, cron: str, first: datetime, policy: MisfirePolicy = "once"
) -> ScheduleRecord:
    new = NewSchedule(
        name=f"s-{policy}", cron=cron, job_type="noop", payload={}, misfire_policy=policy
    )
    return await backend.create_schedule(new, first)


async def fired(backend: QueueBackend, schedule: ScheduleRecord) -> list[datetime]:
    fires = await backend.fires_of(schedule.id)
    jobs = await backend.get_many([job_id for _, job_id in fires])
    assert len(jobs) == len(fires)  # one job per fire, each enqueued
    return [at for at, _ in fires]


@pytest.fixture
async def scheduler(backend: QueueBackend) -> AsyncIterator[Scheduler]:
    leader = Scheduler(backend, REGISTRY, SchedulerConfig())
    yield leader
    await leader.close()


async def test_a_tick_late_for_an_every_second_schedule_fires_that_second_and_the_next(
    backend: QueueBackend, scheduler: Scheduler
) -> None:
    schedule = await schedule_at(backend, EVERY_SECOND, sec(0))
    assert (await scheduler.tick(now=sec(1.4))).fired == 2
    assert await fired(backend, schedule) == [sec(0), sec(1)]
    assert (await backend.get_schedule(schedule.id)).next_fire_at == sec(2)
    assert (await scheduler.tick(now=sec(2.05))).fired == 1
    assert await fired(backend, schedule) == [sec(0), sec(1), sec(2)]


async def test_ticks_late_by_any_amount_within_the_grace_fire_every_second(
    backend: QueueBackend, scheduler: Scheduler
) -> None:
    schedule = await schedule_at(backend, EVERY_SECOND, sec(0))
    for now in (0.3, 1.4, 1.5, 4.9, 5.0, 5.2, 9.99, 12.0, 30.7):  # some 1 to 18 s apart
        await scheduler.tick(now=sec(now))
    assert await fired(backend, schedule) == [sec(n) for n in range(31)]
    assert (await backend.get_schedule(schedule.id)).last_fire_at == sec(30)


@pytest.mark.parametrize(
    ("policy", "catchup_max", "expected"),
    [
        ("once", 100, [9]),
        ("skip", 100, []),
        ("all", 100, list(range(10))),
        ("all", 4, [6, 7, 8, 9]),
    ],
)
async def test_an_outage_of_ten_periods_is_decided_by_the_misfire_policy(
    backend: QueueBackend,
    policy: MisfirePolicy,
    catchup_max: int,
    expected: list[int],
) -> None:
    """Every minute; the scheduler is away from minute 0 to minute 9.5: ten fire times came,
    the first 9.5 minutes late, far past the 60 s grace."""
    schedule = await schedule_at(backend, EVERY_MINUTE, minute(0), policy)
    leader = Scheduler(backend, REGISTRY, SchedulerConfig(catchup_max=catchup_max))
    try:
        await leader.tick(now=minute(9.5))
        assert await fired(backend, schedule) == [minute(n) for n in expected]
        after = await backend.get_schedule(schedule.id)
        assert after.next_fire_at == minute(10)  # back on time, whatever the policy
        await leader.tick(now=minute(10))
        assert (await fired(backend, schedule))[-1] == minute(10)
    finally:
        await leader.close()


async def test_a_schedule_less_late_than_the_grace_ignores_its_policy(
    backend: QueueBackend, scheduler: Scheduler
) -> None:
    """`skip` is about outages: ten seconds late, inside the 60 s grace, every second fires."""
    schedule = await schedule_at(backend, EVERY_SECOND, sec(0), "skip")
    await scheduler.tick(now=sec(9.5))
    assert await fired(backend, schedule) == [sec(n) for n in range(10)]


async def test_a_long_outage_of_an_every_second_schedule_costs_the_bound_not_the_outage(
    backend: QueueBackend,
) -> None:
    schedule = await schedule_at(backend, EVERY_SECOND, sec(0), "all")
    leader = Scheduler(backend, REGISTRY, SchedulerConfig(catchup_max=3))
    try:
        await leader.tick(now=sec(30 * 86400 + 0.5))  # a month away
        assert await fired(backend, schedule) == [sec(30 * 86400 - n) for n in (2, 1, 0)]
    finally:
        await leader.close()


@pytest.mark.parametrize("policy", ["once", "all"])
async def test_schedulers_racing_through_late_ticks_and_an_outage_fire_each_time_once(
    db_url: str, policy: MisfirePolicy
) -> None:
    """Three processes' worth of schedulers fire together at the same and at slightly
    different `now`s: every fire time the rules choose runs exactly once."""
    backends = [open_backend(db_url) for _ in range(3)]
    misfires = Misfires(grace=60.0, catchup_max=100)
    try:
        schedule = await schedule_at(backends[0], EVERY_SECOND, sec(0), policy)
        ticks = [0.2, 1.4, 2.6, 2.7, 5.0, 5.5, 200.5, 201.2, 203.9]  # an outage after 5.5
        for now in ticks:
            await asyncio.gather(
                *(
                    fire_due(b, REGISTRY, misfires=misfires, now=sec(now + i * 0.01))
                    for i, b in enumerate(backends)
                )
            )
        times = await fired(backends[0], schedule)
        assert len(times) == len(set(times))
        before = [sec(n) for n in range(6)]
        caught_up = [sec(200)] if policy == "once" else [sec(n) for n in range(6, 201)]
        assert times == [*before, *caught_up[-100:], sec(201), sec(202), sec(203)]
    finally:
        for b in backends:
            await b.close()


@pytest.mark.parametrize(
    ("expression", "zone", "start"),
    [
        ("30 2 * * *", "Europe/Paris", datetime(2030, 3, 25, tzinfo=UTC)),  # 02:30 skipped
        ("30 2 * * *", "Europe/Paris", datetime(2030, 10, 20, tzinfo=UTC)),  # 02:30 twice
        ("0 * * * *", "Europe/Paris", datetime(2030, 10, 26, 20, tzinfo=UTC)),
        ("*/20 * * * *", "America/New_York", datetime(2030, 11, 2, 20, tzinfo=UTC)),
    ],
)
def test_catching_up_walks_back_over_the_same_times_as_firing_walks_forward(
    expression: str, zone: str, start: datetime
) -> None:
    """Missed times are found walking back from now; across DST changes they must be the
    times the schedule would have fired walking forward, none more, none less."""
    forward = [cron.next_fire(expression, zone, start)]
    until = start + timedelta(days=10)
    while (following := cron.next_fire(expression, zone, forward[-1])) <= until:
        forward.append(following)
    assert cron.fires_since(expression, zone, forward[0], until, 10_000) == forward
    assert cron.fires_since(expression, zone, forward[0], until, 3) == forward[-3:]
