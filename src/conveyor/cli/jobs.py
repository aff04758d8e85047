"""`conveyor enqueue [--wait]`: submit a job straight into the database, and follow it there.

`--wait` reads the job's events from the outbox through the same `EventFeed` that feeds
`GET /api/v1/jobs/{id}/events`, and moves a progress bar with them.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.output import InputError, LimitOption, job_bar, json_object, limit_pairs
from conveyor.cli.plumbing import Handlers, die, load_settings, opened, quiet_logs, run_async
from conveyor.domain.states import JobState

if TYPE_CHECKING:
    from conveyor.domain.jobs import JobRecord
    from conveyor.runtime import Engine


def enqueue(
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="The job type.")],
    payload: Annotated[str, typer.Option(help="JSON object, or @file.json.")] = "{}",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option()] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds from now.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds.")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    limit: LimitOption = None,
    handlers: Handlers = None,
    wait: Annotated[
        bool, typer.Option(help="Follow it with a progress bar; exit 1 unless it completes.")
    ] = False,
) -> None:
    """Submit one job and print its id (with --wait: its final state and result)."""
    settings = load_settings(handler_modules=handlers)
    quiet_logs()
    body = _parse_payload(payload)
    try:
        limits = limit_pairs(limit)
    except InputError as exc:
        die(str(exc))
    run_at = datetime.now(UTC) + timedelta(seconds=delay) if delay else None

    async def main() -> Any:
        from conveyor.services.jobs import Submission

        submission = Submission(
            type=job_type,
            payload=body,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout,
            run_at=run_at,
            idempotency_key=idempotency_key,
            limits=limits,
        )
        async with opened(settings) as engine:
            enqueued = await engine.jobs.submit(submission)
            return await wait_in_outbox(engine, enqueued.id) if wait else enqueued

    try:
        done = run_async(main())
    except KeyboardInterrupt:  # Ctrl-C while waiting: the job goes on; no traceback
        raise typer.Exit(130) from None
    if wait:
        typer.echo(json.dumps(outcome(done)))
        raise typer.Exit(0 if done.state is JobState.COMPLETED else 1)
    said = {"id": done.id, "state": done.state.value, "created": done.created}
    typer.echo(json.dumps({**said, "duplicate": done.duplicate}))


def _parse_payload(text: str) -> dict[str, Any]:
    try:
        return json_object(text)
    except InputError as exc:
        die(str(exc))


async def wait_in_outbox(engine: Engine, job_id: str) -> JobRecord:
    """The job once its terminal event has been written (the bar shows every event)."""
    from conveyor.domain.events import Position
    from conveyor.services.events import TERMINAL_EVENTS, Scope

    feed = engine.events
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
