"""A real scheduler moves the rescue and cron metrics (both databases): rescued jobs by
outcome, cron fires counted as fires and as enqueued jobs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import NewJob
from conveyor.domain.schedules import NewSchedule
from conveyor.metrics import render
from conveyor.runtime import load_handlers
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.services.jobs import JobService
from conveyor.services.schedules import ScheduleService
from conveyor.store.backend import QueueBackend
from tests.metrics.samples import Samples
from tests.support.processes import eventually


def scrape() -> Samples:
    body, _ = render(None)
    return Samples(body.decode())


# Due once (its next fire is set a second ago), then not for a year. An every-minute cron
# fired twice when a loaded run crossed a minute boundary (CI).
YEARLY = "0 0 1 1 *"


async def test_rescues_and_cron_fires_are_counted(backend: QueueBackend) -> None:
    queue = f"metrics-{uuid.uuid4().hex[:10]}"
    schedules = ScheduleService(backend, JobService(backend, load_handlers([])))
    labels = {"queue": queue, "type": "noop"}
    # Two jobs on a worker that vanishes: one has an attempt left, one does not.
    await backend.enqueue([NewJob(type="noop", payload={}, queue=queue, max_attempts=2)])
    await backend.enqueue([NewJob(type="noop", payload={}, queue=queue, max_attempts=1)])
    assert len(await backend.claim("gone", [queue], 2, lease_s=0.1)) == 2
    schedule = await schedules.create(
        NewSchedule(name="tick", cron=YEARLY, job_type="noop", payload={}, queue=queue)
    )
    await backend.update_schedule(schedule.id, None, next_fire_at=utcnow() - timedelta(seconds=1))
    before = scrape()
    scheduler = Scheduler(backend, load_handlers([]), SchedulerConfig(interval=0.05))
    running = asyncio.create_task(scheduler.run())
    try:

        def moved() -> bool:
            now = scrape()
            return all(
                now.get(name, **labels, **extra) - before.get(name, **labels, **extra) >= 1
                for name, extra in (
                    ("conveyor_jobs_rescued_total", {"outcome": "requeued"}),
                    ("conveyor_jobs_rescued_total", {"outcome": "failed"}),
                    ("conveyor_schedule_fires_total", {}),
                )
            )

        await eventually(moved, timeout=10, what="the rescue and cron metrics")
    finally:
        scheduler.stop()
        await asyncio.wait_for(running, 10)
    after = scrape()
    for name, extra, expected in (
        ("conveyor_jobs_rescued_total", {"outcome": "requeued"}, 1),
        ("conveyor_jobs_rescued_total", {"outcome": "failed"}, 1),
        ("conveyor_schedule_fires_total", {}, 1),
        ("conveyor_jobs_enqueued_total", {}, 1),  # the fire's job (the others bypass services)
    ):
        assert after.get(name, **labels, **extra) - before.get(name, **labels, **extra) == expected
