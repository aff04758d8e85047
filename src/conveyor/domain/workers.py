"""Worker processes as the store records them, and the jobs each one holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobRef:
    """A running job as a worker listing shows it."""

    id: str
    type: str
    queue: str
    started_at: datetime | None
