"""An outbox reader never misses the `created` event of a job enqueued in a caller's
transaction that wrote before it enqueued (its transaction id is older than events that
others committed meanwhile, which the reader may already have passed)."""

from __future__ import annotations

import psycopg

from conveyor.client import group, step
from conveyor.domain.events import Position
from conveyor.domain.jobs import NewJob
from conveyor.library.enqueue import enqueue, enqueue_workflow
from conveyor.store.factory import open_backend
from tests.library.conftest import OWNER
from tests.library.handlers import blueprint


async def test_a_reader_past_a_later_commit_still_reads_the_callers_event(pg: str) -> None:
    backend = open_backend(pg)
    try:
        with psycopg.connect(pg) as conn:
            conn.execute("INSERT INTO orders VALUES (1, 'paid')")  # its transaction id: now
            (other,) = await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
            seen = await backend.read_events(Position())
            assert [e.job_id for e in seen] == [other.id]  # the reader is past it now
            mine = enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
            conn.commit()
        # A key at least the xmax after the lock, as the Core writers' events have: read once
        # a later transaction has started (any write does), like theirs.
        await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
        after = Position(seen[-1].xid, seen[-1].id)
        read = [(e.job_id, e.type) for e in await backend.read_events(after)]
        assert (mine.id, "created") in read
    finally:
        await backend.close()


async def test_a_workflows_created_events_after_a_later_commit_are_read_too(pg: str) -> None:
    """The same for a workflow's steps: its statements take the events lock before the
    workflow row, and key the steps' events after it (the driver's `xid()`)."""
    backend = open_backend(pg)
    try:
        with psycopg.connect(pg) as conn:
            conn.execute("INSERT INTO orders VALUES (1, 'paid')")  # its transaction id: now
            (other,) = await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
            seen = await backend.read_events(Position())
            assert [e.job_id for e in seen] == [other.id]
            spec = group("g", [step("a", "lib_order", {"order_id": 1})])
            enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint)
            conn.commit()
        await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
        after = Position(seen[-1].xid, seen[-1].id)
        read = [(e.job_type, e.type) for e in await backend.read_events(after)]
        assert read.count(("lib_order", "created")) == 2  # the step's, and the later job's
    finally:
        await backend.close()
