"""Cron schedules: create, read, change, pause, delete; each fire enqueues the schedule's job
template (the firing itself is the scheduler's: scheduler/fires.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conveyor.domain import cron
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.domain.schedules import MISFIRE_POLICIES, NewSchedule, ScheduleRecord
from conveyor.domain.workflows import WorkflowSpec
from conveyor.errors import InvalidInput
from conveyor.scheduler.fires import fire_due, fire_job
from conveyor.scheduler.workflow_rows import workflow_draft
from conveyor.services.jobs import JobService, Submission
from conveyor.store.backend import QueueBackend

_EDITABLE = {
    "cron",
    "timezone",
    "job_type",
    "queue",
    "payload",
    "priority",
    "max_attempts",
    "timeout_s",
    "tags",
    "paused",
    "misfire_policy",
    "limits",
    "workflow",
}

# What only a job schedule has: a workflow schedule's options are in its template's steps.
_JOB_ONLY = {"job_type", "queue", "payload", "priority", "max_attempts", "timeout_s", "limits"}


class ScheduleService:
    def __init__(self, backend: QueueBackend, jobs: JobService) -> None:
        self.backend = backend
        self.jobs = jobs

    async def create(self, new: NewSchedule) -> ScheduleRecord:
        cron.validate(new.cron, new.timezone)
        _check_policy(new.misfire_policy)
        if (new.job_type is None) == (new.workflow is None):
            raise InvalidInput("a schedule fires a job type or a workflow: give one of the two")
        if new.workflow is not None and new.limits:
            raise InvalidInput(
                "a workflow schedule's limits are its steps' (its job types')", field="limits"
            )
        self._check_template(
            new.job_type, new.payload, new.queue, new.workflow, new.owner_id, new.limits
        )
        next_fire = cron.next_fire(new.cron, new.timezone, utcnow())
        return await self.backend.create_schedule(new, next_fire)

    async def update(
        self, schedule_id: str, owner_id: str | None = None, **changes: Any
    ) -> ScheduleRecord:
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise ValueError(f"not editable: {sorted(unknown)}")
        current = await self.backend.get_schedule(schedule_id, owner_id)
        merged = {**_as_new(current), **changes}
        cron.validate(merged["cron"], merged["timezone"])
        _check_policy(merged["misfire_policy"])
        if current.workflow is not None and set(changes) & _JOB_ONLY:
            raise InvalidInput(
                "this schedule fires a workflow: its options are its steps' (give a new "
                "template as `workflow`)",
                field=sorted(set(changes) & _JOB_ONLY)[0],
            )
        if current.workflow is None and changes.get("workflow") is not None:
            raise InvalidInput(
                "this schedule fires a job: it cannot take a workflow template (delete it and "
                "create a workflow schedule)",
                field="workflow",
            )
        if "workflow" in changes and changes["workflow"] is None:
            changes.pop("workflow")  # null: unchanged
        self._check_template(
            merged["job_type"], merged["payload"], merged["queue"],
            changes.get("workflow", current.workflow), current.owner_id, merged["limits"],
        )  # fmt: skip
        if {"cron", "timezone", "paused"} & set(changes):
            changes["next_fire_at"] = cron.next_fire(merged["cron"], merged["timezone"], utcnow())
        return await self.backend.update_schedule(schedule_id, owner_id, **changes)

    async def pause(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        return await self.backend.update_schedule(schedule_id, owner_id, paused=True)

    async def resume(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        return await self.update(schedule_id, owner_id, paused=False)

    async def get(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        return await self.backend.get_schedule(schedule_id, owner_id)

    async def of_owner(self, owner_id: str | None) -> list[ScheduleRecord]:
        """One owner's schedules (None: everyone's), by name."""
        return await self.backend.list_schedules(owner_id)

    async def delete(self, schedule_id: str, owner_id: str | None = None) -> None:
        await self.backend.delete_schedule(schedule_id, owner_id)

    async def fire_due(self, limit: int = 100, *, now: datetime | None = None) -> int:
        """What the scheduler does each tick (scheduler/fires.py), for callers without one."""
        quotas = self.jobs.quotas
        return await fire_due(
            self.backend, self.jobs.registry, limit, now=now, fair=self.jobs.fair_dispatch,
            quota_max_queued=quotas.quota_max_queued if quotas is not None else 0,
        )  # fmt: skip

    def job_for(self, schedule: ScheduleRecord, fire_at: Any) -> NewJob:
        return fire_job(self.jobs.registry, schedule, self.jobs.fair_dispatch)

    def _check_template(
        self,
        job_type: str | None,
        payload: dict[str, Any],
        queue: str | None,
        workflow: WorkflowSpec | None,
        owner_id: str,
        limits: dict[str, str] | None = None,
    ) -> None:
        """The job template (its submit limits too) as a submission is checked, or the
        workflow template as a workflow submit is (InvalidInput naming `steps.<i>...`): a
        schedule saved bad would only fail at each fire."""
        if workflow is not None:
            workflow_draft(self.jobs.registry, workflow, owner_id, utcnow()).whole()
        elif job_type is not None:
            self.jobs.prepare(self._submission(job_type, payload, queue, limits), owner_id)

    @staticmethod
    def _submission(
        job_type: str, payload: dict[str, Any], queue: str | None, limits: dict[str, str] | None
    ) -> Submission:
        return Submission(type=job_type, payload=payload, queue=queue, limits=limits or None)


def _check_policy(policy: str) -> None:
    if policy not in MISFIRE_POLICIES:
        raise InvalidInput(
            f"misfire_policy must be one of {', '.join(MISFIRE_POLICIES)}", field="misfire_policy"
        )


def _as_new(record: ScheduleRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _EDITABLE}


__all__ = ["SYSTEM_OWNER", "ScheduleService"]
