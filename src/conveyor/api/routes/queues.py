"""Queues: depth and oldest job per queue; pause and resume (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from conveyor.api.deps import AdminUser, Context, VerifiedUser, owner_scope
from conveyor.api.schemas import QueueOut
from conveyor.domain.queues import QUEUE_NAME_MAX, QUEUE_NAME_PATTERN
from conveyor.services.queues import QueueOverview

router = APIRouter(prefix="/api/v1/queues", tags=["queues"])
# The rule the queue service checks, stated where clients read it (as a job's `queue` is).
QueueName = Annotated[
    str, Path(min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_NAME_PATTERN)
]


def _out(q: QueueOverview) -> QueueOut:
    return QueueOut(
        name=q.name,
        paused=q.paused,
        counts=q.counts_by_state,
        oldest_queued_age_s=q.oldest_queued_age_s,
    )


@router.get("")
async def list_queues(user: VerifiedUser, ctx: Context) -> list[QueueOut]:
    """Every queue with its jobs per state (yours; admins: everyone's) and whether it is paused."""
    return [_out(q) for q in await ctx.engine.queues.overview(owner_scope(user))]


@router.post("/{name}/pause")
async def pause_queue(name: QueueName, admin: AdminUser, ctx: Context) -> QueueOut:
    """Workers stop claiming from this queue (running jobs finish); it still accepts jobs."""
    await ctx.engine.queues.pause(name, by=admin.id)
    return _out(await ctx.engine.queues.get(name))


@router.post("/{name}/resume")
async def resume_queue(name: QueueName, _admin: AdminUser, ctx: Context) -> QueueOut:
    """Workers claim from this queue again, at once."""
    await ctx.engine.queues.resume(name)
    return _out(await ctx.engine.queues.get(name))
