"""Reference 004's tasks as the services see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: int
    owner_id: str
    title: str
    description: str
    status: str
    job_id: str | None
    created_at: datetime
    completed_at: datetime | None
