"""Flow control made visible: every limit and its keys, running, ready and rate tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from conveyor.api.deps import Context, VerifiedUser, owner_scope
from conveyor.api.schemas import LimitKeyOut, LimitOut, LimitsOut
from conveyor.services.flow import MAX_LIMITS_PAGE

router = APIRouter(prefix="/api/v1", tags=["limits"])


@router.get("/limits")
async def list_limits(
    user: VerifiedUser,
    ctx: Context,
    cursor: Annotated[
        str | None,
        Query(max_length=300, description="`next_cursor` of the page before (limit/key)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMITS_PAGE)] = 100,
) -> LimitsOut:
    """Per limit and key with jobs running or ready: how many of each (counted from the jobs
    themselves), and a rate limit's tokens now. An administrator sees every key; a user only
    the keys of their own jobs, with counts of their own jobs. A page at a time, by (limit,
    key); `next_cursor` is null on the last."""
    page = await ctx.engine.flow.limits(owner_scope(user), cursor=cursor, limit=limit)
    return LimitsOut(
        limits=[
            LimitOut(
                name=d.name,
                kind=d.kind,
                max_running=d.max_running,
                rate_limit=d.rate_limit,
                per_s=d.per_s,
                burst=d.burst,
            )
            for d in page.limits
        ],
        keys=[
            LimitKeyOut(
                name=k.name,
                kind=k.kind,
                key=k.key,
                running=k.running,
                ready=k.ready,
                max_running=k.max_running,
                tokens=k.tokens,
                capacity=k.capacity,
            )
            for k in page.keys
        ],
        next_cursor=page.next_cursor,
    )
