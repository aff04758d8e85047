"""Cron fires: the job a due schedule enqueues, and firing every due schedule once.

The job a fire enqueues is checked against its job type as the type is now (its handler may
have changed since the schedule was saved), by the same rule as a submission: `checked_job`,
which `JobService.prepare` uses too. It lives here, below the services, because the
scheduler fires without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from conveyor.domain import cron
from conveyor.domain.clock import utcnow
from conveyor.domain.flow import LimitKey, evaluate_key
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.domain.schedules import ScheduleRecord
from conveyor.errors import InvalidInput
from conveyor.metrics import count_fired
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry


def checked_job(
    registry: Registry,
    job_type: str,
    payload: dict[str, Any],
    owner_id: str = SYSTEM_OWNER,
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    tags: Sequence[str] = (),
    callback_url: str | None = None,
) -> NewJob:
    """Validate against the type's payload model, and take the type's defaults for the
    options left unset; bad input raises and changes nothing."""
    spec = registry.get(job_type)
    try:
        valid = spec.payload_model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid payload for job type {job_type!r}",
            errors=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc
    if max_attempts is not None and max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1", field="max_attempts")
    if run_at is not None and run_at.tzinfo is None:
        raise InvalidInput("run_at needs a time zone", field="run_at")
    chosen_queue = queue or spec.queue
    dumped = valid.model_dump(mode="json", exclude_unset=False)
    limit_keys = tuple(
        LimitKey(
            limit.name,
            evaluate_key(
                limit.key,
                owner_id=owner_id,
                queue=chosen_queue,
                type_name=spec.name,
                payload=dumped,
            ),
        )
        for limit in spec.limits
    )
    return NewJob(
        type=spec.name,
        payload=dumped,
        queue=chosen_queue,
        priority=priority if priority is not None else spec.priority,
        max_attempts=max_attempts or spec.max_attempts,
        run_at=run_at,
        timeout_s=timeout_s if timeout_s is not None else spec.timeout,
        idempotency_key=idempotency_key,
        owner_id=owner_id,
        tags=tuple(tags),
        callback_url=callback_url,
        limit_keys=limit_keys,
    )


def fire_job(registry: Registry, schedule: ScheduleRecord) -> NewJob:
    """The job one fire of `schedule` enqueues, owned by the schedule's owner."""
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
    )
    return replace(job, schedule_id=schedule.id)


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
) -> int:
    """Fire every schedule whose time has come, as of `now` (the clock's, unless given); each
    fire time runs once, whoever fires it: the schedule advances from the state it was read in
    or not at all, and the store's fire row is unique per schedule and time."""
    now = now or utcnow()
    misfires = misfires or Misfires()
    fired = 0
    for schedule in await backend.due_schedules(now, limit):
        fires = [(at, fire_job(registry, schedule)) for at in misfires.fire_times(schedule, now)]
        following = cron.next_fire(schedule.cron, schedule.timezone, now)
        done = await backend.fire_schedule(schedule, fires, following)
        for _at, job in fires[:done]:
            count_fired(job)
        fired += done
    return fired
