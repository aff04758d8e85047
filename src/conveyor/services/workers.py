"""Workers as a person sees them: alive, what they take, what they are running now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.domain.workers import JobRef, WorkerInfo
from conveyor.store.backend import QueueBackend


@dataclass(frozen=True, slots=True)
class WorkerView:
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    current_jobs: list[JobRef]


class WorkerService:
    """A worker counts as alive while it heartbeats within `alive_within` seconds (a lease:
    past that, the rescuer treats its jobs as abandoned too)."""

    def __init__(self, backend: QueueBackend, alive_within: float) -> None:
        self.backend = backend
        self.alive_within = alive_within

    async def alive(self) -> list[WorkerView]:
        """Oldest first, each with its running jobs (oldest first)."""
        return [
            WorkerView(
                id=info.id,
                hostname=info.hostname,
                pid=info.pid,
                queues=info.queues,
                concurrency=info.concurrency,
                started_at=info.started_at,
                last_heartbeat_at=info.last_heartbeat_at,
                current_jobs=refs,
            )
            for info, refs in await self.backend.workers_with_jobs(self.alive_within)
        ]

    async def list_alive(self) -> list[WorkerInfo]:
        """The live workers alone, oldest first (no running jobs: cheaper, for counting)."""
        return await self.backend.list_workers(alive_within=self.alive_within)
