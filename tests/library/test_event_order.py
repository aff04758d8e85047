"""An outbox reader never misses the `created` event of a job enqueued in a caller's
transaction that wrote before it enqueued (its transaction id is older than events that
others committed meanwhile, which the reader may already have passed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from conveyor.client import group, step
from conveyor.domain.events import Position
from conveyor.domain.jobs import NewJob
from conveyor.library.enqueue import enqueue, enqueue_workflow
from conveyor.store.factory import open_backend
from tests.library.conftest import OWNER, rows
from tests.library.handlers import blueprint


async def test_a_reader_past_a_later_commit_still_reads_the_callers_event(pg: str) -> None:
    def enqueue_it(conn: psycopg.Connection[Any]) -> str:
        return enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint).id

    mine, read = await _read_past_a_later_commit(pg, enqueue_it)
    assert (mine, "created") in [(e.job_id, e.type) for e in read]


async def test_a_workflows_created_events_after_a_later_commit_are_read_too(pg: str) -> None:
    """The same for a workflow's steps: its statements take the events lock before the
    workflow row, and key the steps' events after it (the driver's `xid()`)."""

    def enqueue_it(conn: psycopg.Connection[Any]) -> str:
        spec = group("g", [step("a", "lib_order", {"order_id": 1})])
        return enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint).id

    workflow_id, read = await _read_past_a_later_commit(pg, enqueue_it)
    steps = rows(pg, "SELECT id FROM jobs WHERE workflow_id = %s", workflow_id)
    assert (steps[0][0], "created") in [(e.job_id, e.type) for e in read]


async def _read_past_a_later_commit(
    pg: str, enqueue_it: Callable[[psycopg.Connection[Any]], str]
) -> tuple[str, list[Any]]:
    """`enqueue_it` in a transaction that wrote first, after another transaction's event
    that a reader has passed; what it enqueued, and the events read after that one."""
    backend = open_backend(pg)
    try:
        with psycopg.connect(pg) as conn:
            conn.execute("INSERT INTO orders VALUES (1, 'paid')")  # its transaction id: now
            (other,) = await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
            seen = await backend.read_events(Position())
            assert [e.job_id for e in seen] == [other.id]  # the reader is past it now
            mine = enqueue_it(conn)
            conn.commit()
        # A key at least the xmax after the lock, as the Core writers' events have: read once
        # a later transaction has started (any write does), like theirs.
        await backend.enqueue([NewJob(type="lib_order", payload={}, queue="x")])
        after = Position(seen[-1].xid, seen[-1].id)
        return mine, list(await backend.read_events(after))
    finally:
        await backend.close()
