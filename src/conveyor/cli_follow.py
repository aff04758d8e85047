"""`conveyor enqueue --wait`: follow a job in the event outbox, as the SSE stream does.

The command talks to the database directly, so it reads the job's events through the same
`EventFeed` that feeds `GET /api/v1/jobs/{id}/events`, and moves a progress bar with them.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from conveyor.cli_output import job_bar
from conveyor.domain.events import Position
from conveyor.domain.jobs import JobRecord
from conveyor.runtime import Engine
from conveyor.services.events import TERMINAL_EVENTS, EventFeed, Scope


async def wait_in_outbox(engine: Engine, job_id: str) -> JobRecord:
    """The job once its terminal event has been written (the bar shows every event)."""
    feed = EventFeed(engine.backend)
    with job_bar(job_id) as bar:
        async with aclosing(feed.tail(Position(), Scope(job_id=job_id))) as batches:
            async for batch in batches:
                for event in batch:
                    bar.event(event.type, event.state, event.data)
                    if event.type in TERMINAL_EVENTS:
                        return await engine.jobs.get(job_id)
    raise AssertionError("the event feed never ends")  # pragma: no cover


def outcome(job: JobRecord) -> dict[str, Any]:
    """What `enqueue --wait` prints: the final state, and the result or the last error."""
    shown: dict[str, Any] = {"id": job.id, "state": job.state.value, "attempt": job.attempt}
    shown["result"] = job.result
    if job.errors:
        last = job.errors[-1]
        shown["error"] = {"type": last.get("type"), "message": last.get("message")}
    return shown
