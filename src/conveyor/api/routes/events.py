"""Server-sent events: live job changes from the outbox, resumable with `Last-Event-ID`.

Each message is `id: <position>` (`"xid.id"`, what a client sends back to resume),
`event: <type>` and one line of JSON `data` (`EventMessage`). Clients must send
`Accept: text/event-stream` (406 otherwise), as EventSource does. The routes are left out of the
OpenAPI schema: a response that never ends is not something a schema-driven client can call
(tests/api/test_schemathesis.py would wait on `/events` forever), so this module is their
documentation.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from conveyor.api.deps import Context, VerifiedUser, owner_scope
from conveyor.api.errors import error_body
from conveyor.api.sse import POSITION_PATTERN, event_stream
from conveyor.domain.events import Position
from conveyor.services.events import Scope

router = APIRouter(prefix="/api/v1", tags=["events"])

LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", pattern=POSITION_PATTERN, description="Resume after this."),
]
After = Annotated[
    str | None,
    Query(pattern=POSITION_PATTERN, description="Start after this position (`id` of an event)."),
]


@router.get("/jobs/{job_id}/events", include_in_schema=False)
async def job_events(
    job_id: str,
    request: Request,
    user: VerifiedUser,
    ctx: Context,
    follow: bool = False,
    after: After = None,
    last_event_id: LastEventId = None,
) -> Response:
    """One job's story from its first event (or after `Last-Event-ID` / `after`); the stream
    ends after a terminal event unless `follow=true`. A client resuming after the end gets
    204, which tells a browser's EventSource to stop reconnecting."""
    job = await ctx.engine.jobs.get(job_id, owner_scope(user))  # another user's: 404 first
    if not accepts_event_stream(request):
        return not_acceptable()
    feed = ctx.engine.events
    scope = Scope(owner_scope(user), job.id)
    start = start_position(last_event_id, after)
    if start is not None and not follow and await feed.story_told(job, start, scope):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return event_stream(request, feed, scope, start or Position(), until_terminal=not follow)


@router.get("/events", include_in_schema=False)
async def events(
    request: Request,
    user: VerifiedUser,
    ctx: Context,
    after: After = None,
    last_event_id: LastEventId = None,
) -> Response:
    """Every change to the caller's jobs (an admin's: everyone's) from now on, or after
    `Last-Event-ID` / `after`. It never ends by itself."""
    if not accepts_event_stream(request):
        return not_acceptable()
    feed = ctx.engine.events
    scope = Scope(owner_scope(user))
    start = start_position(last_event_id, after) or await feed.head(scope.owner_id)
    return event_stream(request, feed, scope, start, until_terminal=False)


def accepts_event_stream(request: Request) -> bool:
    """Streams go only to clients that ask for one (EventSource always does). Anything else
    (curl without -H, a generic HTTP client, a route-walking test) would wait forever for the
    end of a body that has none; it gets a 406 that says what to send."""
    return "text/event-stream" in request.headers.get("accept", "").lower()


def not_acceptable() -> JSONResponse:
    message = "this is an event stream: send 'Accept: text/event-stream'"
    return JSONResponse(error_body("not_acceptable", message), status_code=406)


def start_position(last_event_id: str | None, after: str | None) -> Position | None:
    """The header wins: a reconnecting EventSource sends it along with the first URL."""
    text = last_event_id or after
    return Position.parse(text) if text else None
