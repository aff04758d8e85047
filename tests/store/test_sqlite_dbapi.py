"""SQLite's adapter (store/drivers/sqlite_dbapi.py): one trip to the connection's thread per
statement, and one for each hot path's whole transaction (BEGIN to COMMIT). Each trip
costs two thread switches and a wake-up of the event loop: SQLAlchemy's own adapter made
16 for a single submit and 16 for a claim of one job (4.1 and 3.7 ms, in-process, idle).
The trips are what these tests count: they are the latency."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import Outcome
from conveyor.domain.workflows import StepSpec, WorkflowSpec
from conveyor.services.workflows import SLICE
from conveyor.store.backend import QueueBackend
from conveyor.store.drivers.sqlite import record_events
from conveyor.store.drivers.sqlite_dbapi import in_one_trip
from conveyor.store.tables import events, jobs
from tests.services.test_workflows import service
from tests.store.helpers import job, settled

W = "w-trips"


# The store's own `backend` fixture, on SQLite only.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many calls went to aiosqlite's threads (each a trip there and back)."""
    count = [0]
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return count


async def _counted(trips: list[int], work: Any) -> tuple[Any, int]:
    before = trips[0]
    done = await work
    return done, trips[0] - before


async def test_a_submit_a_claim_and_a_finish_are_one_trip_each(
    backend: QueueBackend, trips: list[int]
) -> None:
    await backend.enqueue([job()])  # the pools' connections opened
    await backend.claim(W, ["default"], 1, 30)
    (enqueued,), sent = await _counted(trips, backend.enqueue([job(n=1)]))
    assert sent == 1  # BEGIN IMMEDIATE, the statements, COMMIT
    (claimed,), sent = await _counted(trips, backend.claim(W, ["default"], 1, 30))
    assert (claimed.id, claimed.payload, sent) == (enqueued.id, {"n": 1}, 1)
    assert claimed.run_at.tzinfo is not None
    stored = await backend.get(enqueued.id)
    assert (stored.state.value, stored.attempt, stored.worker_id) == ("running", 1, W)
    events = await backend.read_events(ev.Position(), job_id=enqueued.id)
    assert [(e.type, e.state) for e in events] == [("created", "queued"), ("started", "running")]
    assert events[1].data == {"worker_id": W}


async def test_a_statement_is_one_trip_and_a_clean_check_in_none(
    backend: QueueBackend, trips: list[int]
) -> None:
    db = backend.db
    async with db.read() as conn:  # both pools' connections opened
        await conn.execute(select(jobs.c.id))
    async with db.write() as conn:
        await conn.execute(select(jobs.c.id))
    before = trips[0]
    async with db.read() as conn:
        assert (await conn.execute(select(jobs.c.id))).all() == []
        assert trips[0] - before == 1  # BEGIN and the statement
    assert trips[0] - before == 2  # the read's rollback
    before = trips[0]
    async with db.write() as conn:
        await conn.execute(text("CREATE TEMP TABLE seen (n int)"))
        assert trips[0] - before == 1
    assert trips[0] - before == 2  # the commit; the pool's reset of it makes none


async def test_rows_counts_and_many_are_the_statements(backend: QueueBackend) -> None:
    await backend.enqueue([job(n=i) for i in range(3)])
    async with backend.db.write() as conn:
        moved = await conn.execute(update(jobs).values(priority=5).where(jobs.c.priority == 0))
        assert moved.rowcount == 3
        rows = (await conn.execute(select(jobs.c.payload).order_by(jobs.c.id))).all()
        assert [r.payload for r in rows] == [{"n": 0}, {"n": 1}, {"n": 2}]
        await conn.execute(text("CREATE TEMP TABLE t (n int)"))
        await conn.execute(text("INSERT INTO t VALUES (:n)"), [{"n": 1}, {"n": 2}])
        assert (await conn.execute(text("SELECT sum(n) FROM t"))).scalar() == 3


async def test_a_failed_statement_is_sqlalchemys_error_and_rolls_back(
    backend: QueueBackend,
) -> None:
    (first,) = await backend.enqueue([job()])
    async with backend.db.write() as conn:
        await conn.execute(update(jobs).values(priority=9))
        with pytest.raises(IntegrityError):
            await conn.execute(insert(jobs).values(id=first.id))  # taken, and NOT NULLs
        await conn.rollback()
    assert (await backend.get(first.id)).priority == 0  # rolled back
    (second,) = await backend.enqueue([job()])  # the writer is free
    assert (await backend.get(second.id)).state.value == "queued"


async def test_a_claim_waiting_for_another_processs_write_starts_after_it(
    backend: QueueBackend,
) -> None:
    """BEGIN IMMEDIATE goes with the claim's first statement: a claim that waited there for
    another process's write lock (the finish that made its job runnable) takes its start
    time once the lock is its own, not before it waited."""
    (enqueued,) = await backend.enqueue([job()])
    path = backend.db.url.split(":///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        claiming = asyncio.create_task(backend.claim(W, ["default"], 1, 30))
        await asyncio.sleep(0.3)
        assert not claiming.done()
        other.execute("UPDATE jobs SET priority = 1")
        other.execute("COMMIT")
        released = utcnow()
        (claimed,) = await claiming
    finally:
        other.close()
    stored = await backend.get(enqueued.id)
    assert stored.started_at is not None and stored.started_at >= released
    assert claimed.priority == 1  # it read what the other process committed


async def test_a_finish_is_one_trip(backend: QueueBackend, trips: list[int]) -> None:
    await backend.enqueue([job(), job(n=1)])
    claimed = await backend.claim(W, ["default"], 2, 30)
    outcomes = [Outcome(c.id, c.attempt, "completed", result={"ok": c.id}) for c in claimed]
    _, sent = await _counted(trips, backend.finish(W, outcomes))
    assert sent == 1
    for c in claimed:
        stored = await backend.get(c.id)
        assert (stored.state.value, stored.result) == ("completed", {"ok": c.id})


async def test_a_heartbeat_is_one_trip(backend: QueueBackend, trips: list[int]) -> None:
    """BEGIN to COMMIT in one call: a handler that blocks the loop can never start while
    the heartbeat holds the write lock between two of its statements."""
    await backend.enqueue([job()])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    before = (await backend.get(claimed.id)).lease_expires_at
    assert before is not None
    held, sent = await _counted(trips, backend.heartbeat(W, 3600))
    assert (held, sent) == ({claimed.id}, 1)
    after = (await backend.get(claimed.id)).lease_expires_at
    assert after is not None and after > before


async def test_a_progress_report_is_one_trip(backend: QueueBackend, trips: list[int]) -> None:
    """A handler's progress, fenced, with its event, BEGIN to COMMIT in one call (as the
    heartbeat); a report for an attempt that is not the worker's changes nothing."""
    await backend.enqueue([job()])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    kept, sent = await _counted(trips, backend.set_progress(W, claimed.id, 1, 40, "half"))
    assert (kept, sent) == (True, 1)
    stale, _ = await _counted(trips, backend.set_progress(W, claimed.id, 2, 90, "late"))
    assert stale is False
    stored = await backend.get(claimed.id)
    assert (stored.progress, stored.progress_message) == (40, "half")
    told = await settled(backend, 3, job_id=claimed.id)  # created, started, progress
    assert [(e.type, e.data) for e in told][2:] == [
        ("progress", {"percent": 40, "message": "half"})
    ]


async def test_a_scheduler_tick_s_promotion_and_rescue_are_one_trip_each(
    backend: QueueBackend, trips: list[int]
) -> None:
    """Each tick's promotion and rescue take the write lock, in the same process as handlers
    under `conveyor run`: BEGIN to COMMIT in one call, with the rescue's events."""
    first, due = await backend.enqueue([job(), job(n=1)])
    async with backend.db.write() as conn:  # `due` scheduled for a moment ago
        await conn.execute(update(jobs).values(state="scheduled").where(jobs.c.id == due.id))
    (claimed,) = await backend.claim(W, ["default"], 1, lease_s=0.01)
    assert claimed.id == first.id
    await asyncio.sleep(0.05)  # its lease runs out
    promoted, sent = await _counted(trips, backend.promote_due())
    assert (promoted, sent) == (1, 1)
    report, sent = await _counted(trips, backend.rescue_expired())
    assert (report.requeued, sent) == ([first.id], 1)
    states = {j: (await backend.get(j)).state.value for j in (first.id, due.id)}
    assert states == {first.id: "queued", due.id: "queued"}
    told = await backend.read_events(ev.Position(), job_id=first.id)
    assert [e.type for e in told] == ["created", "started", "retrying"]
    assert (await _counted(trips, backend.promote_due()))[1] == 1  # nothing due: still one


async def test_leadership_is_one_trip_to_take_renew_and_give_up(
    backend: QueueBackend, trips: list[int]
) -> None:
    """Every scheduler tick renews it: BEGIN to COMMIT in one call, as the tick's other
    writes; another holder cannot take it while it is held."""
    await backend.enqueue([job()])  # the pools' connections opened
    mine, theirs = backend.leadership("tick", "a", 30), backend.leadership("tick", "b", 30)
    assert await _counted(trips, mine.acquire()) == (True, 1)
    assert await _counted(trips, mine.acquire()) == (True, 1)  # renewed
    assert (await theirs.acquire()) is False  # held: read who holds it, not taken
    assert (await _counted(trips, mine.release()))[1] == 1
    assert await theirs.acquire() is True


async def test_each_slice_of_a_workflows_submit_is_one_trip(
    backend: QueueBackend, trips: list[int]
) -> None:
    """Its steps, their fair tags (in SQL), events, edges and limits: one trip per slice of
    the submit (services/workflows.py `SLICE`), so the event loop builds the next slice
    while it runs. A trip per statement waited for that building to end (each trip resumes
    on the event loop), and the slices' inserts never ran beside it."""
    submit = service(backend).submit
    await submit(fan_in("warm", 10), owner_id="u")
    _, one_slice = await _counted(trips, submit(fan_in("one", SLICE - 1), owner_id="u"))
    _, three_slices = await _counted(trips, submit(fan_in("three", 3 * SLICE - 1), owner_id="u"))
    assert three_slices - one_slice == 2


def fan_in(name: str, width: int) -> WorkflowSpec:
    """`width` steps and a join after all of them: `width + 1` steps."""
    steps = [StepSpec(f"s{i}", "wf_step", {"log": "-"}) for i in range(width)]
    join = StepSpec("join", "wf_step", {"log": "-"}, tuple(s.name for s in steps))
    return WorkflowSpec(name, (*steps, join))


async def test_events_sharing_their_data_and_time_are_stored_each_as_sent(
    backend: QueueBackend,
) -> None:
    """`record_events` encodes each distinct data object and time once per batch (a claim's
    events share them): events that share them, others whose data only look alike, and
    none, read back as they were given."""
    shared, at = {"reason": "shared"}, utcnow()
    later = at + timedelta(seconds=1)
    given = [
        _event(0, shared, at), _event(1, shared, at), _event(2, {"reason": "own"}, later),
        _event(3, None, at), _event(4, {"reason": "shared"}, later), _event(5, shared, later),
    ]  # fmt: skip
    async with backend.db.write() as conn:
        await in_one_trip(conn, lambda raw: record_events(raw, given))
    async with backend.db.read() as conn:
        query = select(events.c.job_id, events.c.data, events.c.created_at).order_by(events.c.id)
        stored = [tuple(row) for row in (await conn.execute(query)).all()]
    assert stored == [(e["job_id"], e["data"], e["created_at"]) for e in given]


def _event(n: int, data: dict[str, Any] | None, at: datetime) -> dict[str, Any]:
    return {
        "type": "job.progress", "job_id": f"job-{n}", "owner_id": "u", "queue": "q",
        "job_type": "t", "state": "running", "attempt": 1, "data": data, "created_at": at,
    }  # fmt: skip
