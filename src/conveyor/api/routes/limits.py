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
        limits=[LimitOut.model_validate(d, from_attributes=True) for d in page.limits],
        keys=[LimitKeyOut.model_validate(k, from_attributes=True) for k in page.keys],
        next_cursor=page.next_cursor,
    )
