"""Workers (admins): who is alive, on which queues, running what."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.api.deps import AdminUser, Context
from conveyor.api.schemas import RunningJobOut, WorkerOut

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


@router.get("")
async def list_workers(_admin: AdminUser, ctx: Context) -> list[WorkerOut]:
    """Workers that heartbeat within a lease, oldest first, with the jobs they are running."""
    return [
        WorkerOut(
            id=w.id,
            hostname=w.hostname,
            pid=w.pid,
            queues=w.queues,
            concurrency=w.concurrency,
            started_at=w.started_at,
            last_heartbeat_at=w.last_heartbeat_at,
            current_jobs=[
                RunningJobOut(id=j.id, type=j.type, queue=j.queue, started_at=j.started_at)
                for j in w.current_jobs
            ],
        )
        for w in await ctx.engine.workers.alive()
    ]
