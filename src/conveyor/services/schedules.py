"""Cron schedules: create, change, pause; each fire enqueues the schedule's job template."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conveyor.domain import cron
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.domain.schedules import NewSchedule, ScheduleRecord
from conveyor.metrics import count_fired
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
}


class ScheduleService:
    def __init__(self, backend: QueueBackend, jobs: JobService) -> None:
        self.backend = backend
        self.jobs = jobs

    async def create(self, new: NewSchedule) -> ScheduleRecord:
        cron.validate(new.cron, new.timezone)
        self.jobs.prepare(self._submission(new.job_type, new.payload, new.queue), new.owner_id)
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
        self.jobs.prepare(
            self._submission(merged["job_type"], merged["payload"], merged["queue"]),
            current.owner_id,
        )
        if {"cron", "timezone", "paused"} & set(changes):
            changes["next_fire_at"] = cron.next_fire(merged["cron"], merged["timezone"], utcnow())
        return await self.backend.update_schedule(schedule_id, owner_id, **changes)

    async def pause(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        return await self.backend.update_schedule(schedule_id, owner_id, paused=True)

    async def resume(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        return await self.update(schedule_id, owner_id, paused=False)

    async def fire_due(self, limit: int = 100) -> int:
        """Fire every schedule whose time has come; each fire time runs once, whoever fires it."""
        now = utcnow()
        fired = 0
        for schedule in await self.backend.due_schedules(now, limit):
            assert schedule.next_fire_at is not None
            fire_at = schedule.next_fire_at
            job = self.job_for(schedule, fire_at)
            # Missed fires while nobody was running are coalesced into this one.
            following = cron.next_fire(schedule.cron, schedule.timezone, max(now, fire_at))
            if await self.backend.fire_schedule(schedule, fire_at, job, following):
                count_fired(job)
                fired += 1
        return fired

    def job_for(self, schedule: ScheduleRecord, fire_at: Any) -> NewJob:
        submission = Submission(
            type=schedule.job_type,
            payload=schedule.payload,
            queue=schedule.queue,
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            timeout_s=schedule.timeout_s,
            tags=tuple(schedule.tags),
        )
        job = self.jobs.prepare(submission, schedule.owner_id)
        return replace(job, schedule_id=schedule.id)

    @staticmethod
    def _submission(job_type: str, payload: dict[str, Any], queue: str | None) -> Submission:
        return Submission(type=job_type, payload=payload, queue=queue)


def _as_new(record: ScheduleRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _EDITABLE}


__all__ = ["SYSTEM_OWNER", "ScheduleService"]
