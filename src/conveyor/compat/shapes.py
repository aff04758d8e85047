"""The job shape the JobScope and CloudTask calls answer with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from conveyor.domain.jobs import JobRecord


class CompatJob(BaseModel):
    id: str
    type: str
    status: str
    payload: dict[str, Any]
    result: Any = None
    queue: str
    priority: int
    attempts: int
    error: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: JobRecord) -> CompatJob:
        last_error = job.errors[-1]["message"] if job.errors else None
        moments = [job.created_at, job.started_at, job.finished_at]
        return cls(
            id=job.id,
            type=job.type,
            status=job.state.value,
            payload=job.payload,
            result=job.result,
            queue=job.queue,
            priority=job.priority,
            attempts=job.attempt,
            error=last_error,
            created_at=job.created_at,
            updated_at=max(m for m in moments if m is not None),
        )
