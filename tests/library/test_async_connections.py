"""`aenqueue` on the caller's asyncpg and psycopg async connections, in their transaction."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from conveyor.library.enqueue import Job, aenqueue, aenqueue_batch
from tests.library.conftest import OWNER, jobs_and_events, rows
from tests.library.handlers import blueprint


async def test_asyncpg_commit_rollback_and_savepoint(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (1, 'paid')")
            kept = await aenqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER,
                                  registry=blueprint)  # fmt: skip
            savepoint = conn.transaction()  # nested: a savepoint
            await savepoint.start()
            await aenqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
            await savepoint.rollback()
        with pytest.raises(RuntimeError):
            await _failing_transaction(conn)
    finally:
        await conn.close()
    jobs, events = jobs_and_events(pg)
    assert [j[0] for j in jobs] == [kept.id]
    assert events == [(kept.id, "created")]


async def _failing_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await aenqueue(conn, "lib_order", {"order_id": 3}, owner=OWNER, registry=blueprint)
        raise RuntimeError("the caller's work fails")


async def test_asyncpg_duplicates_leave_the_transaction_usable(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        async with conn.transaction():
            first, again = await aenqueue_batch(
                conn,
                [Job("lib_unique", {"order_id": 1}), Job("lib_unique", {"order_id": 1})],
                owner=OWNER,
                registry=blueprint,
            )
            await conn.execute("INSERT INTO orders VALUES (1, 'after')")
    finally:
        await conn.close()
    assert (first.duplicate, again.id, again.duplicate) == (False, first.id, True)
    assert rows(pg, "SELECT note FROM orders") == [("after",)]


async def test_asyncpg_outside_a_transaction_enqueues_in_one_of_its_own(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        done = await aenqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
    finally:
        await conn.close()
    assert jobs_and_events(pg) == (
        [(done.id, "lib_order", OWNER, "queued")],
        [(done.id, "created")],
    )


async def test_psycopg_async_commit_and_rollback(pg: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg) as conn:
        await aenqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        await conn.rollback()
        kept = await aenqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
        await conn.execute("INSERT INTO orders VALUES (2, 'paid')")
        await conn.commit()
    jobs, events = jobs_and_events(pg)
    assert [j[0] for j in jobs] == [kept.id]
    assert events == [(kept.id, "created")]
