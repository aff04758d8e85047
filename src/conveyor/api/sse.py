"""Server-sent events from the outbox, shared by the doors that stream them (the API's
`/api/v1/.../events` routes and the dashboard's cookie-authenticated stream).

Each message is `id: <position>` (`"xid.id"`, what a client sends back to resume),
`event: <type>` and one line of JSON `data` (`EventMessage`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from conveyor.domain.events import Event, Position
from conveyor.errors import Unavailable
from conveyor.services.events import TERMINAL_EVENTS, EventFeed, Scope

KEEPALIVE_S = 15.0  # a comment this often keeps proxies from closing an idle stream
# 18 digits: below 2**63, so a 64-bit database integer holds it (a position a database wrote
# never comes near; one beyond is a 422, not an overflow in the query)
POSITION_PATTERN = r"^\d{1,18}(\.\d{1,18})?$"
RETRY_S = 1.0  # after a read the database did not answer in time, the stream reads again
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


class EventJob(BaseModel):
    id: str
    type: str
    queue: str
    state: str
    attempt: int


class EventMessage(BaseModel):
    """The `data` of one message. `event_id` is the message's `id`, for clients that read
    only the data (it is also what `?after=` takes)."""

    event_id: str
    type: str
    job: EventJob
    data: dict[str, Any] | None
    at: datetime

    @classmethod
    def of(cls, event: Event) -> EventMessage:
        job = EventJob(
            id=event.job_id,
            type=event.job_type,
            queue=event.queue,
            state=event.state,
            attempt=event.attempt,
        )
        return cls(
            event_id=str(event.position),
            type=event.type,
            job=job,
            data=event.data,
            at=event.created_at,
        )


def sse_message(event: Event) -> str:
    """One SSE message; the JSON is on one line, so it needs one `data:` field."""
    data = EventMessage.of(event).model_dump_json()
    return f"id: {event.position}\nevent: {event.type}\ndata: {data}\n\n"


# Which of a batch's events a stream sends (a workflow's: its steps' and its own), and after
# which event it ends (a job's terminal event; a workflow's settled 'workflow' event).
Keep = Callable[[Sequence[Event]], Awaitable[list[Event]]]
Ends = Callable[[Event], bool]


def _terminal(event: Event) -> bool:
    return event.type in TERMINAL_EVENTS


def event_stream(
    request: Request,
    feed: EventFeed,
    scope: Scope,
    start: Position,
    *,
    until_terminal: bool,
    keep: Keep | None = None,
    ends: Ends = _terminal,
) -> StreamingResponse:
    """The outbox from `start` on as an SSE response, for any door that authenticated the
    caller and scoped the feed (the API's routes, the dashboard). `keep` narrows each batch
    beyond what the store's scope can say; with `until_terminal` the stream ends after the
    first event `ends` accepts."""
    body = _messages(request, feed, scope, start, until_terminal, keep, ends)
    return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)


async def _messages(
    request: Request,
    feed: EventFeed,
    scope: Scope,
    start: Position,
    until_terminal: bool,
    keep: Keep | None,
    ends: Ends,
) -> AsyncIterator[str]:
    """Messages until the client goes away (or the job's end, if `until_terminal`), with a
    keep-alive comment whenever the stream has been quiet for `KEEPALIVE_S`.

    A read the database does not answer within the request deadline (`Unavailable`: the
    server overloaded, restarting or out of reach) ends that read, not the stream: the
    response has started, so nothing could answer 503 and the stream would be cut mid-body
    with an "unhandled error" (`make soak` found it at load 20). The stream says so in a
    comment and reads again from its last event after `RETRY_S`."""
    quiet_since = time.monotonic()
    after = start
    while True:
        try:
            async with aclosing(feed.tail(after, scope)) as batches:
                async for batch in batches:
                    if await request.is_disconnected():
                        return
                    sent = batch if keep is None or not batch else await keep(batch)
                    for event in sent:
                        yield sse_message(event)
                        after = event.position
                        if until_terminal and ends(event):
                            return
                    now = time.monotonic()
                    if sent:
                        quiet_since = now
                    elif now - quiet_since >= KEEPALIVE_S:
                        quiet_since = now
                        yield ": keep-alive\n\n"
        except Unavailable:
            if await request.is_disconnected():
                return
            yield ": the database is not answering; retrying\n\n"
            await asyncio.sleep(RETRY_S)
