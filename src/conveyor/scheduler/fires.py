"""Cron fires: what a due schedule enqueues (a job, or a workflow), and firing every due
schedule once.

What a fire enqueues is checked against the job types as they are now (a handler may have
changed since the schedule was saved), by the same rule as a submission: `checked_job`
(scheduler/checks.py) for a job, `workflow_draft` for a workflow template, both below the
services because the scheduler fires without them. A fire that no longer validates is
logged and counted (conveyor_schedule_fires_failed_total), and the schedule advances: one
bad template never holds up the other schedules, nor its own later fires.

A fire is the schedule owner's work, so it is under the owner's quotas as a submit of it
would be: under a running cap its job (each step of its workflow) holds the owner's
`quota.running` key; a job schedule's `limits` (its type's `submit_limits`) are applied as
a submit's; and when the owner's queued quota cannot take what is due, the fire is skipped
(a WARNING, `conveyor_schedule_fires_skipped_total{kind, reason="quota"}`) and the schedule
advances to its next time (docs/flow-control.md, "Cron fires").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from conveyor.domain import cron
from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, LimitKey, submit_limit_keys
from conveyor.domain.jobs import NewJob
from conveyor.domain.schedules import ScheduleRecord
from conveyor.errors import InvalidInput, NotFound, UnknownJobType
from conveyor.metrics import count_fire_failed, count_fire_skipped, count_fired
from conveyor.scheduler.checks import checked_job
from conveyor.scheduler.workflow_rows import WorkflowRows, workflow_draft
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry

log = logging.getLogger("conveyor.scheduler")


def fire_job(
    registry: Registry, schedule: ScheduleRecord, fair: bool = True, running_quota: bool = False
) -> NewJob:
    """The job one fire of `schedule` enqueues, owned by the schedule's owner, under the
    schedule's submit limits (checked against its type now) and, with `running_quota` (the
    owner has a running cap), the owner's running quota."""
    if schedule.job_type is None:
        raise InvalidInput("this schedule fires a workflow, not a job", field="workflow")
    job = checked_job(
        registry,
        schedule.job_type,
        schedule.payload,
        schedule.owner_id,
        queue=schedule.queue,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts,
        timeout_s=schedule.timeout_s,
        tags=schedule.tags,
        fair=fair,
    )
    spec = registry.get(job.type)
    keys = submit_limit_keys(spec.submit_limits, schedule.limits, spec.name)
    if running_quota:
        keys = (*keys, LimitKey(RUNNING_QUOTA, schedule.owner_id))
    return replace(job, schedule_id=schedule.id, limit_keys=(*job.limit_keys, *keys))


Fire = NewJob | WorkflowRows  # what one fire time enqueues


def fire_one(
    registry: Registry,
    schedule: ScheduleRecord,
    now: datetime,
    fair: bool = True,
    running_quota: bool = False,
) -> Fire:
    """What one fire of `schedule` enqueues: its job, or one workflow of its template (the
    schedule's owner owns either; `running_quota`: under the owner's running cap).
    InvalidInput / UnknownJobType when it no longer validates."""
    if schedule.workflow is None:
        return fire_job(registry, schedule, fair, running_quota)
    return workflow_draft(
        registry, schedule.workflow, schedule.owner_id, now, fair=fair, running_quota=running_quota
    ).whole()


@dataclass(frozen=True, slots=True)
class Misfires:
    """When a fire is late and when it is missed (SchedulerConfig; docs/design.md, Cron).

    A schedule whose next fire time is at most `grace` seconds past fires every time that has
    come, late: a slow tick loses no report. One more late than that was missed (the
    scheduler was away) and its `misfire_policy` decides, as Quartz's misfire instructions
    and APScheduler's coalesce do: `skip` fires none of the missed times, `once` the latest
    of them, `all` each of them, the latest `catchup_max` when there are more."""

    grace: float = 60.0
    catchup_max: int = 100

    def fire_times(self, schedule: ScheduleRecord, now: datetime) -> list[datetime]:
        first = schedule.next_fire_at
        if first is None or first > now:
            return []
        if now - first <= timedelta(seconds=self.grace):
            limit = self.catchup_max
        else:
            limit = {"skip": 0, "once": 1}.get(schedule.misfire_policy, self.catchup_max)
        return cron.fires_since(schedule.cron, schedule.timezone, first, now, limit)


async def fire_due(
    backend: QueueBackend,
    registry: Registry,
    limit: int = 100,
    *,
    misfires: Misfires | None = None,
    now: datetime | None = None,
    fair: bool = True,
    quota_max_queued: int | None = None,
) -> int:
    """Fire every schedule whose time has come, as of `now` (the clock's, unless given); each
    fire time runs once, whoever fires it: the schedule advances from the state it was read in
    or not at all, and the store's fire row is unique per schedule and time.
    `quota_max_queued`: the queued quota's default cap (settings.quota_max_queued; None:
    fires are not checked against the queued quota)."""
    now = now or utcnow()
    misfires = misfires or Misfires()
    fired = 0
    for schedule in await backend.due_schedules(now, limit):
        times = misfires.fire_times(schedule, now)
        following = cron.next_fire(schedule.cron, schedule.timezone, now)
        kind = "job" if schedule.workflow is None else "workflow"
        capped = bool(times) and bool(await backend.owner_running_cap(schedule.owner_id))
        try:
            fires = [(at, fire_one(registry, schedule, now, fair, capped)) for at in times]
        except (InvalidInput, NotFound, UnknownJobType) as exc:
            log.warning(
                "schedule %s (%s) no longer validates; %d fire(s) skipped: %s",
                schedule.id, schedule.name, len(times), exc,
            )  # fmt: skip
            for _at in times:
                count_fire_failed(kind)
            await backend.fire_schedule(schedule, [], following)
            continue
        result = await backend.fire_within_quota(schedule, fires, following, quota_max_queued)
        if result.over_quota is not None:
            cap, waiting, asked = result.over_quota
            log.warning(
                "schedule %s (%s): its owner's queued quota (%d) has %d waiting and the fire "
                "asks %d; %d fire(s) skipped",
                schedule.id, schedule.name, cap, waiting, asked, len(fires),
            )  # fmt: skip
            for _skipped in fires:
                count_fire_skipped(kind, "quota")
            continue
        done = result.fired
        for _at, fire in fires[:done]:
            for job in fire.jobs if isinstance(fire, WorkflowRows) else [fire]:
                count_fired(job)
        fired += done
    return fired
