"""The overview page, the summary its script re-reads, and the cookie-authenticated stream.

The page is rendered whole; then `dashboard.js` listens to `/dashboard/events` (the same
`EventFeed` and per-owner scope as the API's SSE, but authenticated by the session cookie,
since EventSource cannot send an Authorization header) and, debounced, re-reads
`/dashboard/summary`, which carries the numbers and the re-rendered regions (queues,
workers, charts) as HTML made by the same templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor.api.sse import POSITION_PATTERN, event_stream
from conveyor.dashboard import charts, formats
from conveyor.dashboard.web import (
    PREFIX,
    Context,
    DashboardRoute,
    SessionDep,
    owner_scope,
    render,
    templates,
)
from conveyor.domain.events import Position
from conveyor.runtime import Engine
from conveyor.services.accounts.web_sessions import WebSession
from conveyor.services.events import Scope
from conveyor.services.queues import QueueOverview
from conveyor.services.workers import WorkerView

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
CHART_MINUTES = 60


@dataclass
class Summary:
    totals: dict[str, int]
    queues: list[QueueOverview]
    workers: list[WorkerView]
    throughput: charts.Chart
    failures: charts.Chart
    finished: int
    failed: int


async def summary(engine: Engine, session: WebSession) -> Summary:
    """Everything the overview shows, for the session's scope (an admin: everyone)."""
    scope = owner_scope(session)
    queues = await engine.queues.overview(scope)
    totals = dict.fromkeys(formats.STATE_NAMES, 0)
    for queue in queues:
        for state, count in queue.counts_by_state.items():
            totals[state.value] += count
    series = await engine.jobs.throughput(CHART_MINUTES, scope)
    return Summary(
        totals=totals,
        queues=queues,
        workers=await engine.workers.alive(),
        throughput=charts.throughput_chart(series),
        failures=charts.failure_chart(series),
        finished=sum(m.completed + m.failed for m in series),
        failed=sum(m.failed for m in series),
    )


@router.get("/")
async def overview(request: Request, session: SessionDep, ctx: Context) -> Response:
    data = await summary(ctx.engine, session)
    return render(request, "overview.html", session, summary=data, page="overview")


@router.get("/summary")
async def summary_json(request: Request, session: SessionDep, ctx: Context) -> Response:
    """The overview's numbers and regions, for the live script (debounced on its side)."""
    data = await summary(ctx.engine, session)
    parts = templates.env.get_template("_overview.html").make_module(
        {"user": session.user, "session": session, "prefix": PREFIX}
    )
    body = {
        "totals": data.totals,
        "finished": data.finished,
        "failed": data.failed,
        "workers_alive": len(data.workers),
        "html": {
            "queues": str(parts.queues(data.queues)),  # type: ignore[attr-defined]
            "workers": str(parts.workers(data.workers)),  # type: ignore[attr-defined]
            "throughput": str(parts.chart(data.throughput)),  # type: ignore[attr-defined]
            "failures": str(parts.chart(data.failures)),  # type: ignore[attr-defined]
        },
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/events")
async def events(
    request: Request,
    session: SessionDep,
    ctx: Context,
    job: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(pattern=POSITION_PATTERN)] = None,
) -> Response:
    """Live changes to the user's jobs (an admin's: everyone's), or to one job of theirs.
    EventSource resumes with `Last-Event-ID` after a dropped connection."""
    scope = Scope(owner_scope(session), job)
    if job is not None:
        await ctx.engine.jobs.get(job, scope.owner_id)  # another user's job: 404
    feed = ctx.engine.events
    resume = request.headers.get("last-event-id") or after
    start = Position.parse(resume) if resume else await feed.head(scope.owner_id)
    return event_stream(request, feed, scope, start, until_terminal=False)
