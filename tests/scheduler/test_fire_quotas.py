"""Cron fires are the schedule owner's work (docs/flow-control.md, "Cron fires"), both
databases: a fired job (each step of a fired workflow) holds the owner's running quota; a
job schedule's submit `limits` apply to each fire; a fire the owner's queued quota cannot
take is skipped (WARNING, conveyor_schedule_fires_skipped_total) and the schedule advances,
the tick going on with the other schedules."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA
from conveyor.domain.jobs import SYSTEM_OWNER
from conveyor.domain.schedules import NewSchedule
from conveyor.domain.workflows import StepSpec, WorkflowSpec
from conveyor.errors import InvalidInput
from conveyor.scheduler.fires import fire_due
from conveyor.services.jobs import JobService, Submission
from conveyor.services.schedules import ScheduleService
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import job_limits, jobs, users
from conveyor.worker.registry import Registry
from tests.support import flow_handlers, workflow_handlers

W = "worker-f"
STEP = {"log": "-"}


def types() -> Registry:
    registry = Registry()
    registry.include(workflow_handlers.blueprint)
    registry.include(flow_handlers.blueprint)
    return registry


async def services(backend: QueueBackend) -> ScheduleService:
    submits = JobService(backend, types())
    await submits.define_limits()  # the limits' rows, as an API process stores them at start
    return ScheduleService(backend, submits)


async def add_user(
    backend: QueueBackend, user_id: str, *, max_running: int | None = None,
    max_queued: int | None = None,
) -> None:  # fmt: skip
    now = utcnow()
    row = {
        "id": user_id, "email": f"{user_id}@example.com", "password_hash": "x",
        "role": "user", "verified": True, "disabled": False, "created_at": now,
        "updated_at": now, "max_running": max_running, "max_queued": max_queued,
    }  # fmt: skip
    async with backend.db.write() as conn:
        await conn.execute(insert(users).values(**row))


async def due_times(backend: QueueBackend, schedule_id: str, count: int) -> None:
    """`count` minutes of a every-minute schedule have come (its policy fires each)."""
    last = utcnow().replace(second=0, microsecond=0)
    first = last - timedelta(minutes=count - 1)
    await backend.update_schedule(schedule_id, None, next_fire_at=first)


async def owned_jobs(backend: QueueBackend, owner: str) -> int:
    async with backend.db.read() as conn:
        query = select(func.count()).where(jobs.c.owner_id == owner)
        return int((await conn.execute(query)).scalar_one())


def skipped(kind: str) -> float:
    labels = {"kind": kind, "reason": "quota"}
    return REGISTRY.get_sample_value("conveyor_schedule_fires_skipped_total", labels) or 0.0


async def test_fired_jobs_and_workflow_steps_hold_the_owner_s_running_quota(
    backend: QueueBackend,
) -> None:
    svc = await services(backend)
    await add_user(backend, "capped", max_running=1)
    job = await svc.create(
        NewSchedule(name="j", cron="* * * * *", job_type="wf_step", payload=STEP,
                    owner_id="capped", misfire_policy="all")
    )  # fmt: skip
    flow = WorkflowSpec("w", (StepSpec("a", "wf_step", STEP), StepSpec("b", "wf_step", STEP)))
    workflow = await svc.create(
        NewSchedule(name="w", cron="* * * * *", workflow=flow, owner_id="capped")
    )
    await due_times(backend, job.id, 3)
    await due_times(backend, workflow.id, 1)
    assert await svc.fire_due() == 4
    async with backend.db.read() as conn:
        held = select(func.count()).where(
            job_limits.c.name == RUNNING_QUOTA, job_limits.c.key == "capped"
        )
        assert (await conn.execute(held)).scalar_one() == 5  # 3 jobs, 2 steps
    assert len(await backend.claim(W, ["default"], 100, 30)) == 1  # the cap: 1 of 5 ready


async def test_a_job_schedule_s_submit_limits_apply_to_each_fire(backend: QueueBackend) -> None:
    svc = await services(backend)
    schedule = await svc.create(
        NewSchedule(name="sync", cron="* * * * *", job_type="partner_sync",
                    limits={"per_account": "acct-1"}, owner_id="u", misfire_policy="all")
    )  # fmt: skip
    assert (await svc.get(schedule.id)).limits == {"per_account": "acct-1"}
    await due_times(backend, schedule.id, 2)
    assert await svc.fire_due() == 2
    async with backend.db.read() as conn:
        rows = (await conn.execute(select(job_limits.c.name, job_limits.c.key))).all()
    assert sorted(rows) == [("per_account", "acct-1")] * 2
    assert len(await backend.claim(W, ["default"], 100, 30)) == 1  # per_account allows 1

    for limits, field in (({"nope": "x"}, "limits"), ({"per_account": "k" * 201}, "limits")):
        with pytest.raises(InvalidInput) as refused:
            await svc.create(
                NewSchedule(name="bad", cron="* * * * *", job_type="partner_sync", limits=limits)
            )
        assert refused.value.details["field"] == field
        with pytest.raises(InvalidInput):
            await svc.update(schedule.id, limits=limits)
    assert [s.name for s in await svc.of_owner(None)] == ["sync"]
    assert (await svc.get(schedule.id)).limits == {"per_account": "acct-1"}
    changed = await svc.update(schedule.id, limits=None)
    assert changed.limits == {}
    flow = WorkflowSpec("w", (StepSpec("a", "wf_step", STEP),))
    with pytest.raises(InvalidInput, match="steps'"):
        await svc.create(NewSchedule(name="w", cron="* * * * *", workflow=flow,
                                     limits={"per_account": "x"}))  # fmt: skip


async def test_a_fire_over_the_owner_s_queued_quota_is_skipped_and_the_schedule_advances(
    backend: QueueBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Two waiting jobs against a cap of 2: the job schedule's and the workflow schedule's
    fires are skipped (logged, counted) and both advance; another owner's schedule fires in
    the same tick; once the owner's jobs are gone, the next fire fires."""
    svc = await services(backend)
    await add_user(backend, "full", max_queued=2)
    for _ in range(2):
        await svc.jobs.submit(Submission("wf_step", STEP), "full")
    flow = WorkflowSpec("w", (StepSpec("a", "wf_step", STEP),))
    job = await svc.create(
        NewSchedule(name="j", cron="* * * * *", job_type="wf_step", payload=STEP, owner_id="full")
    )
    workflow = await svc.create(
        NewSchedule(name="w", cron="* * * * *", workflow=flow, owner_id="full")
    )
    other = await svc.create(
        NewSchedule(name="o", cron="* * * * *", job_type="wf_step", payload=STEP, owner_id="o")
    )
    for schedule in (job, workflow, other):
        await due_times(backend, schedule.id, 1)
    before = skipped("job"), skipped("workflow")
    with caplog.at_level(logging.WARNING, logger="conveyor.scheduler"):
        assert await fire_due(backend, types(), quota_max_queued=0) == 1  # only `other`
    assert (skipped("job"), skipped("workflow")) == (before[0] + 1, before[1] + 1)
    assert sum("queued quota" in r.getMessage() for r in caplog.records) == 2
    assert await owned_jobs(backend, "full") == 2
    for schedule in (job, workflow):
        assert await backend.fires_of(schedule.id) == []
        after = await backend.get_schedule(schedule.id)
        assert after.next_fire_at is not None and after.next_fire_at > utcnow()
    assert len(await backend.fires_of(other.id)) == 1

    claimed = await backend.claim(W, ["default"], 100, 30)  # running: no longer waiting
    assert {c.owner_id for c in claimed} == {"full", "o"}
    await due_times(backend, job.id, 1)
    assert await fire_due(backend, types(), quota_max_queued=0) == 1
    assert await owned_jobs(backend, "full") == 3


async def test_the_default_queued_cap_applies_to_fires_and_not_to_the_system(
    backend: QueueBackend,
) -> None:
    svc = await services(backend)
    mine = await svc.create(
        NewSchedule(name="m", cron="* * * * *", job_type="wf_step", payload=STEP,
                    owner_id="nouser", misfire_policy="all")
    )  # fmt: skip
    system = await svc.create(
        NewSchedule(name="s", cron="* * * * *", job_type="wf_step", payload=STEP,
                    owner_id=SYSTEM_OWNER, misfire_policy="all")
    )  # fmt: skip
    await due_times(backend, mine.id, 3)
    await due_times(backend, system.id, 3)
    assert await fire_due(backend, types(), quota_max_queued=2) == 3  # the system's 3
    assert await owned_jobs(backend, "nouser") == 0
    assert await owned_jobs(backend, SYSTEM_OWNER) == 3
