"""Event rows: what each job state change says, and how the outbox is read in commit order.

The one rule for events on both databases: what an event says (its type, state and data) is
decided here, in Python; the statement that changes the job stores it beside the job's own
columns (id, owner, queue, type, attempt): on PostgreSQL inside the same statement, on
SQLite by `record` in the same transaction. Changing an event is one edit here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain import events as ev
from conveyor.domain.events import Event, Position
from conveyor.domain.jobs import Outcome
from conveyor.store.driver import Said
from conveyor.store.tables import events

# The state a job is in after each kind of finish, and the event that says so.
FINISHED: dict[str, Said] = {
    "completed": Said(ev.COMPLETED, "completed"),
    "retry": Said(ev.RETRYING, "retrying"),
    "failed": Said(ev.FAILED, "failed"),
}


def started(worker_id: str) -> Said:
    return Said(ev.STARTED, "running", {"worker_id": worker_id})


def requeued(reason: str) -> Said:
    """Queued again without a failure: "released" at shutdown, "retried" by a user."""
    return Said(ev.QUEUED, "queued", {"reason": reason})


def progressed(percent: int, message: str | None) -> Said:
    return Said(ev.PROGRESS, "running", {"percent": percent, "message": message})


CANCELLED = Said(ev.CANCELLED, "cancelled")


def rescued(state: str) -> Said:
    """A lease expired: the job is queued again (a retry) or failed (attempts spent)."""
    kind = ev.FAILED if state == "failed" else ev.RETRYING
    return Said(kind, state, {"reason": "lease expired"})


def set_by_admin(state: str) -> Said:
    return Said(state, state, {"reason": "set by an administrator"})


def finished(outcome: Outcome) -> Said:
    kind = FINISHED[outcome.kind]
    return Said(kind.type, kind.state, outcome_data(outcome))


def outcome_data(outcome: Outcome) -> dict[str, Any]:
    """What an outcome's event tells subscribers: the result, or the error and next try."""
    if outcome.kind == "completed":
        return {"result": outcome.result}
    data: dict[str, Any] = {}
    if outcome.error is not None:
        data["error"] = {"type": outcome.error.type, "message": outcome.error.message}
    if outcome.retry_at is not None:
        data["retry_at"] = outcome.retry_at.isoformat()
    if outcome.result is not None:
        data["result"] = outcome.result
    return data


def rescued_events(rows: Sequence[Any], at: datetime) -> list[dict[str, Any]]:
    """The events of jobs a rescue took back (rows of id, state, queue, owner_id, type,
    attempt): requeued, or failed with their attempts spent."""
    return [said_row(rescued(row.state), row, at) for row in rows]


def requeued_queues(rows: Sequence[Any]) -> set[str]:
    """The queues a rescue put jobs back in (to wake)."""
    return {row.queue for row in rows if row.state == "queued"}


def said_row(said: Said, job: Any, at: datetime) -> dict[str, Any]:
    return event_row(said.type, job, said.state, at, said.data)


def event_row(
    type: str, job: Any, state: str, at: datetime, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The columns of one event about `job` (a row or record with id, owner_id, queue, type,
    attempt)."""
    return {
        "type": type,
        "job_id": job.id,
        "owner_id": job.owner_id,
        "queue": job.queue,
        "job_type": job.type,
        "state": state,
        "attempt": job.attempt,
        "data": data,
        "created_at": at,
    }


async def record(
    conn: AsyncConnection, xid: ColumnElement[Any], rows: Iterable[dict[str, Any]]
) -> None:
    """Insert events in the caller's transaction (one statement for the batch)."""
    batch = list(rows)
    if batch:
        await conn.execute(insert(events).values(xid=xid), batch)


def after(position: Position, one_writer: bool = False) -> ColumnElement[bool]:
    """Events after `position` in reading order. With `one_writer` (SQLite: one writer at a
    time, so commit order is id order and every xid is 0) it is spelled `xid = x AND id > i`,
    the same there, because SQLite turns a row-value comparison into a scan from `xid > x`'s
    start: all of the table (measured: 169 ms against 0.6 ms per read of 500 at 1M events)."""
    if one_writer:
        return and_(events.c.xid == position.xid, events.c.id > position.id)
    return tuple_(events.c.xid, events.c.id) > tuple_(literal(position.xid), literal(position.id))


def up_to(position: Position, one_writer: bool = False) -> ColumnElement[bool]:
    """Events at or before `position` in reading order (`after`'s complement)."""
    if one_writer:
        return and_(events.c.xid == position.xid, events.c.id <= position.id)
    return tuple_(events.c.xid, events.c.id) <= tuple_(literal(position.xid), literal(position.id))


def visible(horizon: int | None) -> list[ColumnElement[bool]]:
    """Only events below the horizon, where nothing can commit any more (None: no such
    limit; store/outbox.py)."""
    return [] if horizon is None else [events.c.xid < horizon]


def scope(owner_id: str | None, job_id: str | None) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if owner_id is not None:
        clauses.append(events.c.owner_id == owner_id)
    if job_id is not None:
        clauses.append(events.c.job_id == job_id)
    return clauses


def page_query(
    position: Position,
    horizon: int | None,
    limit: int,
    *,
    owner_id: str | None = None,
    job_id: str | None = None,
    types: Sequence[str] = (),
    one_writer: bool = False,
) -> Any:
    clauses = [after(position, one_writer), *visible(horizon), *scope(owner_id, job_id)]
    if types:
        clauses.append(events.c.type.in_(list(types)))
    return select(events).where(and_(*clauses)).order_by(events.c.xid, events.c.id).limit(limit)


def to_event(row: Any) -> Event:
    return Event(
        id=row.id,
        xid=row.xid,
        type=row.type,
        job_id=row.job_id,
        owner_id=row.owner_id,
        queue=row.queue,
        job_type=row.job_type,
        state=row.state,
        attempt=row.attempt,
        data=row.data,
        created_at=row.created_at,
    )
