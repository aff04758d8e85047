"""Rows to the domain's records, the same on both databases (SQLite's times come as text)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conveyor.domain.jobs import JobRecord
from conveyor.domain.schedules import ScheduleRecord
from conveyor.domain.states import JobState
from conveyor.domain.workers import WorkerInfo
from conveyor.domain.workflows import idempotency_key_of, spec_of


def aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def must(value: Any) -> datetime:
    moment = aware(value)
    assert moment is not None
    return moment


def job_record(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        owner_id=row.owner_id,
        queue=row.queue,
        type=row.type,
        payload=row.payload,
        priority=row.priority,
        state=JobState(row.state),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        run_at=must(row.run_at),
        lease_expires_at=aware(row.lease_expires_at),
        worker_id=row.worker_id,
        timeout_s=row.timeout_s,
        idempotency_key=idempotency_key_of(
            row.idempotency_key, getattr(row, "workflow_id", None), getattr(row, "step", None)
        ),
        progress=row.progress,
        progress_message=row.progress_message,
        result=row.result,
        errors=list(row.errors or []),
        tags=list(row.tags or []),
        schedule_id=row.schedule_id,
        created_at=must(row.created_at),
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        workflow_id=getattr(row, "workflow_id", None),
        step=getattr(row, "step", None),
    )


def worker_info(r: Any) -> WorkerInfo:
    return WorkerInfo(
        r.id,
        r.hostname,
        r.pid,
        list(r.queues),
        r.concurrency,
        must(r.started_at),
        must(r.last_heartbeat_at),
        aware(r.stopped_at),
    )


def schedule_record(row: Any) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        job_type=row.job_type,
        queue=row.queue,
        payload=row.payload,
        priority=row.priority,
        max_attempts=row.max_attempts,
        timeout_s=row.timeout_s,
        tags=list(row.tags or []),
        paused=bool(row.paused),
        misfire_policy=row.misfire_policy,
        next_fire_at=aware(row.next_fire_at),
        last_fire_at=aware(row.last_fire_at),
        created_at=must(row.created_at),
        updated_at=must(row.updated_at),
        workflow=spec_of(row.workflow) if row.workflow is not None else None,
        limits=dict(row.limits or {}),
    )
