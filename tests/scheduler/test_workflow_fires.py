"""A cron schedule that fires a workflow template (docs/workflows.md, "Cron"), both
databases: one workflow per fire time whoever fires it, owned by the schedule's owner, run to
completion; a template that no longer validates is logged, counted and skipped, and the
schedule advances (a job template too)."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from conveyor.domain.clock import utcnow
from conveyor.domain.schedules import NewSchedule
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState
from conveyor.scheduler.fires import fire_due
from conveyor.services.jobs import JobService
from conveyor.services.schedules import ScheduleService
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.worker.registry import Registry
from tests.scheduler.test_scheduler import make_due
from tests.services.test_workflows import drive
from tests.support import workflow_handlers

OWNER = "alice"
TEMPLATE = WorkflowSpec(
    "nightly",
    (
        StepSpec("fetch", "wf_step", {"log": "-"}),
        StepSpec("left", "wf_step", {"log": "-"}, ("fetch",)),
        StepSpec("right", "wf_step", {"log": "-"}, ("fetch",)),
        StepSpec("merge", "wf_step", {"log": "-"}, ("left", "right")),
    ),
)


def types() -> Registry:
    registry = Registry()
    registry.include(workflow_handlers.blueprint)
    return registry


def services(backend: QueueBackend) -> ScheduleService:
    return ScheduleService(backend, JobService(backend, types()))


def failed_fires(kind: str) -> float:
    value = REGISTRY.get_sample_value("conveyor_schedule_fires_failed_total", {"kind": kind})
    return value or 0.0


async def test_two_schedulers_racing_fire_one_workflow_and_it_runs_to_completion(
    db_url: str,
) -> None:
    one, two = open_backend(db_url), open_backend(db_url)
    try:
        first, second = services(one), services(two)
        schedule = await first.create(
            NewSchedule(name="nightly", cron="* * * * *", workflow=TEMPLATE, owner_id=OWNER)
        )
        stored = await one.get_schedule(schedule.id)
        assert stored.workflow == TEMPLATE and stored.job_type is None
        await make_due(one, schedule.id)
        fired = await asyncio.gather(*(s.fire_due() for s in (first, second, first, second)))
        assert sum(fired) == 1
        (fire,) = await one.fires_of(schedule.id)
        detail = await one.get_workflow(fire[1], OWNER)  # the schedule's owner owns it
        assert detail.workflow.name == "nightly" and len(detail.steps) == 4
        assert len(await one.page_workflows(None, None, 10, None)) == 1
        ran = await drive(one)
        assert ran[0] == "fetch" and ran[-1] == "merge" and len(ran) == 4
        done = await one.get_workflow(fire[1])
        assert done.workflow.state is WorkflowState.COMPLETED
        after = await one.get_schedule(schedule.id)
        assert after.next_fire_at is not None and after.next_fire_at > utcnow()
    finally:
        await one.close()
        await two.close()


async def test_each_fire_time_of_an_outage_fires_its_own_workflow(backend: QueueBackend) -> None:
    svc = services(backend)
    schedule = await svc.create(
        NewSchedule(
            name="n", cron="* * * * *", workflow=TEMPLATE, owner_id=OWNER, misfire_policy="all"
        )
    )
    past = utcnow().replace(second=0, microsecond=0)
    await backend.update_schedule(schedule.id, None, next_fire_at=past.replace(minute=0))
    minutes = past.minute + 1
    fired = await fire_due(backend, types(), now=past)
    assert fired == minutes
    fires = await backend.fires_of(schedule.id)
    assert len({workflow_id for _at, workflow_id in fires}) == minutes
    assert len(await backend.page_workflows(OWNER, None, 100, None)) == minutes


async def test_a_template_that_no_longer_validates_is_skipped_and_the_schedule_advances(
    backend: QueueBackend,
) -> None:
    """Stored as the service would not store it today (its type is gone since): each fire
    is counted as failed and creates nothing; the schedule advances and the others fire."""
    gone = WorkflowSpec("gone", (StepSpec("a", "gone_type"),))
    bad_workflow = await backend.create_schedule(
        NewSchedule(name="bad-wf", cron="* * * * *", workflow=gone, owner_id=OWNER), None
    )
    bad_job = await backend.create_schedule(
        NewSchedule(name="bad-job", cron="* * * * *", job_type="gone_type", owner_id=OWNER), None
    )
    good = await services(backend).create(
        NewSchedule(name="good", cron="* * * * *", workflow=TEMPLATE, owner_id=OWNER)
    )
    for schedule in (bad_workflow, bad_job, good):
        await make_due(backend, schedule.id)
    before = failed_fires("workflow"), failed_fires("job")
    assert await fire_due(backend, types()) == 1
    assert (failed_fires("workflow"), failed_fires("job")) == (before[0] + 1, before[1] + 1)
    for bad in (bad_workflow, bad_job):
        assert await backend.fires_of(bad.id) == []
        after = await backend.get_schedule(bad.id)
        assert after.next_fire_at is not None and after.next_fire_at > utcnow()
    assert len(await backend.fires_of(good.id)) == 1
    assert len(await backend.page_workflows(None, None, 10, None)) == 1
