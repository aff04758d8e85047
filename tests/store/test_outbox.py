"""The outbox: every state change writes its event atomically; reads are commit-ordered."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.store import tables
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from tests.store.helpers import settled


def job(**fields: object) -> NewJob:
    return NewJob(type="noop", payload={}, **fields)  # type: ignore[arg-type]


async def types_of(backend: QueueBackend, job_id: str, count: int) -> list[str]:
    return [e.type for e in await settled(backend, count, job_id=job_id)]


async def test_a_jobs_life_is_told_in_order(backend: QueueBackend) -> None:
    (done,) = await backend.enqueue([job(max_attempts=2)])
    (claimed,) = await backend.claim("w", ["default"], 1, 30)
    await backend.set_progress("w", done.id, 1, 50, "half")
    error = ErrorInfo("E", "boom")
    retry_at = utcnow() - timedelta(seconds=1)
    await backend.finish("w", [Outcome(done.id, 1, "retry", error=error, retry_at=retry_at)])
    await backend.promote_due()
    await backend.claim("w", ["default"], 1, 30)
    await backend.finish("w", [Outcome(done.id, 2, "completed", result={"n": 1})])
    assert await types_of(backend, done.id, 6) == [
        "created", "started", "progress", "retrying", "started", "completed",
    ]  # fmt: skip
    events = await settled(backend, 6, job_id=done.id)
    assert events[-1].data == {"result": {"n": 1}} and events[-1].attempt == 2
    assert events[3].data is not None and events[3].data["error"]["message"] == "boom"
    assert events[1].data == {"worker_id": "w"}
    assert claimed.attempt == 1


async def test_cancel_user_retry_fail_and_rescue_are_told(backend: QueueBackend) -> None:
    (a,) = await backend.enqueue([job()])
    await backend.cancel(a.id)
    await backend.retry(a.id)
    (b,) = await backend.enqueue([job(max_attempts=1)])
    await backend.claim("w", ["default"], 10, lease_s=0.01)
    await asyncio.sleep(0.05)
    await backend.rescue_expired()
    assert await types_of(backend, a.id, 5) == [
        "created",
        "cancelled",
        "queued",
        "started",
        "retrying",
    ]
    assert await types_of(backend, b.id, 3) == ["created", "started", "failed"]


async def test_no_event_without_its_change(backend: QueueBackend) -> None:
    class Boom(Exception):
        pass

    async def enqueue_then_fail() -> None:
        async with backend.transaction() as conn:
            await backend.enqueue([job()], tx=conn)
            raise Boom

    with pytest.raises(Boom):
        await enqueue_then_fail()
    assert await backend.read_events(ev.Position()) == []
    # a late result fenced out writes no event either
    (e,) = await backend.enqueue([job()])
    await backend.claim("w", ["default"], 1, 30)
    assert await backend.finish("someone-else", [Outcome(e.id, 1, "completed")]) == set()
    assert await types_of(backend, e.id, 2) == ["created", "started"]


async def test_reading_pages_by_position_and_owner(backend: QueueBackend) -> None:
    await backend.enqueue([job(owner_id="ada") for _ in range(5)] + [job(owner_id="bob")])
    await settled(backend, 6)
    first = await backend.read_events(ev.Position(), limit=3, owner_id="ada")
    rest = await backend.read_events(first[-1].position, limit=10, owner_id="ada")
    assert len(first) == 3 and len(rest) == 2
    assert {e.owner_id for e in first + rest} == {"ada"}
    assert ev.Position.parse(str(first[-1].position)) == first[-1].position


async def test_cursors_persist_and_pruning_spares_undelivered(backend: QueueBackend) -> None:
    await backend.enqueue([job() for _ in range(4)])
    events = await settled(backend, 4)
    await backend.save_cursor("rabbitmq", events[1].position)
    await backend.save_cursor("rabbitmq", events[1].position)  # idempotent
    assert await backend.cursor("rabbitmq") == events[1].position
    assert await backend.cursor("unknown") == ev.Position()
    pruned = await backend.prune_events(utcnow() + timedelta(seconds=1), ["rabbitmq"])
    assert pruned == 2
    left = await settled(backend, 2)
    assert [e.id for e in left] == [e.id for e in events[2:]]


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


async def age_cursor(backend: QueueBackend, sink: str, age: timedelta) -> None:
    """Make `sink`'s cursor look untouched for `age` (a sink removed that long ago)."""
    async with backend.db.write() as conn:
        await conn.execute(
            update(tables.sink_cursors)
            .where(tables.sink_cursors.c.sink == sink)
            .values(updated_at=utcnow() - age)
        )


async def test_pruning_deletes_in_bounded_batches_and_respects_sinks_in_use(
    backend: QueueBackend,
) -> None:
    await backend.enqueue([job() for _ in range(10)])
    events = await settled(backend, 10)
    async with backend.db.write() as conn:  # all written two hours ago
        await conn.execute(update(tables.events).values(created_at=utcnow() - hours(2)))
    await backend.save_cursor("in-use", events[6].position)
    await backend.save_cursor("removed", events[1].position)
    await age_cursor(backend, "removed", hours(3))
    retention = utcnow() - hours(1)
    # A configured sink that has delivered nothing yet holds everything back.
    assert await backend.prune_events(retention, ["configured"], batch=3) == 0
    assert await backend.prune_events(utcnow() - hours(3), batch=3) == 0  # none that old
    # The fresh cursor counts; the one untouched for longer than the retention does not.
    assert await backend.prune_events(retention, batch=3) == 7  # 3 + 3 + 1 per statement
    left = await settled(backend, 3)
    assert [e.id for e in left] == [e.id for e in events[7:]]
    await backend.save_cursor("in-use", events[-1].position)
    assert await backend.prune_events(retention, batch=3) == 3  # one full batch, then none
    assert await backend.read_events(ev.Position()) == []


async def test_without_any_sink_old_events_are_pruned(backend: QueueBackend) -> None:
    await backend.enqueue([job() for _ in range(4)])
    await settled(backend, 4)
    assert await backend.prune_events(utcnow() + timedelta(seconds=1)) == 4


async def test_a_late_commit_is_never_skipped(backend: QueueBackend) -> None:
    """PostgreSQL: an open transaction's event holds back later ones until it commits."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has one writer: commit order is id order")
    async with backend.transaction() as slow:
        (late,) = await backend.enqueue([job()], tx=slow)
        (early,) = await backend.enqueue([job()])  # commits first, with a later xid
        assert await backend.read_events(ev.Position()) == []  # held back, not skipped
    seen = [e.job_id for e in await settled(backend, 2)]
    assert seen == [late.id, early.id]


async def test_a_reader_waiting_for_events_wakes_when_another_backend_commits_some(
    backend: QueueBackend, db_url: str
) -> None:
    """`event_wakeups`: a reader with a slow poll returns soon after a commit with events,
    made here through another backend (the relay and SSE feeds wait this way)."""
    other = open_backend(db_url)
    try:
        async with backend.event_wakeups() as pace:
            waiting = asyncio.create_task(pace.wait(poll=60))
            await asyncio.sleep(0)  # let it start waiting
            await other.enqueue([job()])
            assert await asyncio.wait_for(waiting, 10) is True  # woken, not timed out
        assert len(await settled(backend, 1)) == 1
    finally:
        await other.close()


async def test_a_cursor_moves_forward_and_back_as_saved(backend: QueueBackend) -> None:
    await backend.enqueue([job() for _ in range(3)])
    events = await settled(backend, 3)
    for position in (events[0].position, events[2].position, events[1].position):
        await backend.save_cursor("sink", position)
        assert await backend.cursor("sink") == position
    await backend.save_cursor("other", events[0].position)
    assert await backend.cursor("sink") == events[1].position


async def test_pruning_walks_the_reading_order_and_stops_at_the_first_event_still_needed(
    backend: QueueBackend,
) -> None:
    """No index on the events' age: a slice deletes the oldest events in reading order, up to
    the first one too young to go; older ones behind it wait for it (clocks of several
    hosts may disagree a little)."""
    await backend.enqueue([job() for _ in range(6)])
    events = await settled(backend, 6)
    young = events[3].id
    async with backend.db.write() as conn:
        await conn.execute(update(tables.events).values(created_at=utcnow() - hours(2)))
        await conn.execute(
            update(tables.events).where(tables.events.c.id == young).values(created_at=utcnow())
        )
    retention = utcnow() - hours(1)
    first, mark = await backend.prune_old_events(retention, limit=2)
    assert (first, mark) == (2, events[1].position)  # a full slice
    assert await backend.prune_old_events(retention, limit=2, after=mark) == (
        1,
        events[2].position,
    )  # then up to the young one
    assert await backend.prune_old_events(retention, limit=2) == (0, None)
    left = await settled(backend, 3)
    assert [e.id for e in left] == [e.id for e in events[3:]]


async def test_every_reader_reads_an_index_range_from_its_position(backend: QueueBackend) -> None:
    """The relay (all events), SSE per owner and per job: on SQLite a row-value comparison
    read every event from the table's start (its index range begins at `xid > ?`), so
    a reader's cost grew with the outbox; now it starts at the position."""
    if backend.dialect != "sqlite":
        pytest.skip("PostgreSQL's plans depend on the table's size: bench/README, design.md")
    at = ev.Position(0, 10)
    reads = [
        backend.events_query(at, 500),
        backend.events_query(at, 100, owner_id="ada"),
        backend.events_query(at, 100, job_id="j"),
    ]
    async with backend.db.read() as conn:
        for query in reads:
            sql = str(query.compile(conn.sync_engine, compile_kwargs={"literal_binds": True}))
            found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
            plan = " ".join(str(row[-1]) for row in found)  # (id, parent, -, detail)
            assert re.search(r"\b(row)?id>\?", plan), plan  # not only "xid>?"
