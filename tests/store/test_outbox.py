"""The outbox: every state change writes its event atomically; reads are commit-ordered."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from itertools import pairwise

import asyncpg
import pytest
from sqlalchemy import select, update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.store import events as outbox
from conveyor.store import tables
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.store.jobs import EVENT_COLUMNS
from conveyor.store.outbox import SharedHorizon
from tests.events.conftest import churning_elsewhere, writing_elsewhere
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


async def a_life(backend: QueueBackend) -> str:
    """One job enqueued, claimed and completed: three events."""
    (made,) = await backend.enqueue([job()])
    (claimed,) = await backend.claim("w", ["default"], 1, 30)
    await backend.finish("w", [Outcome(claimed.id, claimed.attempt, "completed")])
    return made.id


async def test_a_write_open_in_another_database_holds_nothing_back(
    backend: QueueBackend,
) -> None:
    """PostgreSQL used to read below the oldest transaction of the whole server: another
    database's open write held every event back until it ended."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has one writer: commit order is id order")
    async with writing_elsewhere():
        done = await a_life(backend)
        assert await types_of(backend, done, 3) == ["created", "started", "completed"]


async def test_a_transaction_of_ours_that_writes_no_event_holds_nothing_back(
    backend: QueueBackend, db_url: str
) -> None:
    """An operator's UPDATE left open in psql, or any transaction of this database that
    did not mark itself as writing events: it cannot add one below the readers."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has one writer: commit order is id order")
    (bystander,) = await backend.enqueue([job(queue="elsewhere")])
    operator = await asyncpg.connect(db_url)
    try:
        async with operator.transaction():
            await operator.execute("UPDATE jobs SET priority = 5 WHERE id = $1", bystander.id)
            done = await a_life(backend)
            assert await types_of(backend, done, 3) == ["created", "started", "completed"]
    finally:
        await operator.close()


async def cancel_slowly(backend: QueueBackend, pause: float) -> None:
    """A Core writer at its slowest: it changes a job (its transaction id is assigned then),
    waits, and only then writes the job's event, so readers pass its id meanwhile."""
    (made,) = await backend.enqueue([job(queue="slow")])
    async with backend.db.write() as conn:
        found = await conn.execute(
            update(tables.jobs)
            .where(tables.jobs.c.id == made.id)
            .values(state="cancelled", finished_at=utcnow())
            .returning(*EVENT_COLUMNS)
        )
        changed = found.all()
        await asyncio.sleep(pause)
        await backend._log(conn, [outbox.said_row(outbox.CANCELLED, r, utcnow()) for r in changed])


async def mixed_finishes(backend: QueueBackend) -> None:
    """The hot path: enqueue, claim, and a finish of several kinds (several statements in
    one transaction, its id assigned by the first)."""
    await backend.enqueue([job(max_attempts=3) for _ in range(4)])
    claimed = await backend.claim("w", ["default"], 4, 30)
    retry_at = utcnow() + timedelta(hours=1)
    outcomes = [
        Outcome(c.id, c.attempt, "completed")
        if i % 2
        else Outcome(c.id, c.attempt, "retry", error=ErrorInfo("E", "x"), retry_at=retry_at)
        for i, c in enumerate(claimed)
    ]
    await backend.finish("w", outcomes)


async def test_a_follower_gets_every_event_once_in_order_with_writers_of_every_kind(
    backend: QueueBackend,
) -> None:
    """A reader following the outbox by position (the relay, an SSE stream), while the hot
    path, slow Core writers and transactions that write no event commit concurrently, sees
    exactly what is there afterwards, in the same order: none lost, none twice, each job's
    events in the order they happened."""
    running = True

    async def repeat(work: Callable[[], Awaitable[None]]) -> None:
        while running:
            await work()

    (bystander,) = await backend.enqueue([job(queue="none")])

    async def bystand() -> None:  # writes (so has a transaction id), but no event
        async with backend.db.write() as conn:
            change = update(tables.jobs).where(tables.jobs.c.id == bystander.id)
            await conn.execute(change.values(priority=tables.jobs.c.priority + 1))
            await asyncio.sleep(0.05)

    followed: list[ev.Event] = []

    async def follow(until: Callable[[], bool]) -> None:
        position = ev.Position()
        while not until():
            page = await backend.read_events(position, 100)
            followed.extend(page)
            position = page[-1].position if page else position
            await asyncio.sleep(0 if page else 0.005)

    writers = [
        asyncio.create_task(repeat(lambda: mixed_finishes(backend))),
        asyncio.create_task(repeat(lambda: cancel_slowly(backend, 0.05))),
        asyncio.create_task(repeat(lambda: cancel_slowly(backend, 0.2))),
        asyncio.create_task(repeat(bystand)),
    ]
    reader = asyncio.create_task(follow(lambda: not running and len(followed) >= total))
    total = 1 << 62
    await asyncio.sleep(3)
    running = False
    await asyncio.gather(*writers)
    async with backend.db.read() as conn:  # all committed now: the table itself
        order = select(tables.events).order_by(tables.events.c.xid, tables.events.c.id)
        everything = (await conn.execute(order)).all()
    total = len(everything)
    await asyncio.wait_for(reader, 30)
    assert [e.id for e in followed] == [e.id for e in everything]
    by_job: dict[str, list[int]] = {}
    for event in followed:
        by_job.setdefault(event.job_id, []).append(event.id)
    assert all(ids == sorted(ids) for ids in by_job.values())
    assert total > 50 and {e.type for e in everything} >= {"cancelled", "retrying", "completed"}


async def test_readers_waiting_together_share_one_horizon_asked_after_they_asked() -> None:
    """A reader woken by a commit needs a horizon asked after that commit: one asked
    before it asked is not enough, but every reader that asked meanwhile shares the next."""
    asked = 0
    gate = asyncio.Event()

    async def ask() -> int:
        nonlocal asked
        asked += 1
        number = asked
        await gate.wait()
        return number

    shared = SharedHorizon(ask, asyncio.get_running_loop())
    first = asyncio.create_task(shared.get())
    await asyncio.sleep(0)  # the first query is under way
    later = [asyncio.create_task(shared.get()) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 50
    assert asked == 2


async def test_the_horizon_never_goes_back_beside_a_busy_neighbour(
    backend: QueueBackend,
) -> None:
    """CI saw a reader find 21 events, then none: the server's horizon went back. Another
    database's transaction, running at the horizon's snapshot and gone from the lock table
    a moment later, was kept as if it could still write events, below horizons already
    read; an ended one is no longer kept (`pg_xact_status`, docs/events.md)."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has no horizon")
    seen: list[int] = []
    async with churning_elsewhere():
        for _ in range(10_000):
            horizon = await backend.read_horizon()
            assert horizon is not None
            seen.append(horizon)
    went_back = [(a, b) for a, b in pairwise(seen) if b < a]
    assert went_back == []


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
