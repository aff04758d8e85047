"""Limits: every flow-control limit's keys, with jobs running and ready and rate tokens now
(the same figures as `GET /api/v1/limits`; a user sees only their own jobs' keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from conveyor.dashboard.web import (
    PREFIX,
    Context,
    DashboardRoute,
    SessionDep,
    owner_scope,
    render,
)

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
PAGE = 100


@router.get("/limits")
async def limits(
    request: Request,
    session: SessionDep,
    ctx: Context,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    page = await ctx.engine.flow.limits(owner_scope(session), cursor=cursor, limit=PAGE)
    return render(request, "limits.html", session, page="limits", limits=page)
