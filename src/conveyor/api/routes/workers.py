"""Workers (admins): who is alive, on which queues, running what."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.api.deps import AdminUser, Context
from conveyor.api.schemas import WorkerOut

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


@router.get("")
async def list_workers(_admin: AdminUser, ctx: Context) -> list[WorkerOut]:
    """Workers that heartbeat within a lease, oldest first, with the jobs they are running."""
    workers = await ctx.engine.workers.alive()
    return [WorkerOut.model_validate(w, from_attributes=True) for w in workers]
