"""The request path's database deadline (`Database.request_path`): an operation that takes
longer fails with `Unavailable` (retry_after) and its connection is dropped, the pool goes
on with fresh ones; outside a request path long statements and lock waits are left alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from conveyor.errors import Unavailable
from conveyor.settings import sqlite_file
from conveyor.store.database import Database

BUDGET_S = 0.5


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    opened = Database(db_url, request_timeout=BUDGET_S)
    yield opened
    await opened.dispose()


async def _sleep(db: Database, seconds: float) -> None:
    async with db.read() as conn:
        await conn.exec_driver_sql(f"SELECT pg_sleep({seconds})")


async def test_a_slow_statement_on_a_request_path_is_unavailable(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("pg_sleep")
    with db.request_path(), pytest.raises(Unavailable) as caught:
        await _sleep(db, 3 * BUDGET_S)
    assert caught.value.details["retry_after"] >= 1
    with db.request_path():  # the dropped connection is not handed out again
        for _ in range(3):
            await db.ping()
            async with db.raw() as raw:
                assert await raw.fetchval("SELECT 1") == 1


async def test_raw_connections_at_the_deadline_are_dropped(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("asyncpg's connections")
    with db.request_path():
        with pytest.raises(Unavailable):
            async with db.raw(transaction=True) as raw:
                await raw.execute(f"SELECT pg_sleep({3 * BUDGET_S})")
        async with db.raw() as raw:
            assert await raw.fetchval("SELECT 1") == 1


async def test_long_statements_outside_a_request_path_finish(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("pg_sleep")
    await _sleep(db, 3 * BUDGET_S)  # a worker's batch, a pruning slice: not bounded


async def test_a_locked_sqlite_file_is_unavailable_on_a_request_path(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite's write lock")
    path = sqlite_file(db.url)
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        with db.request_path(), pytest.raises(Unavailable):
            async with db.write() as conn:
                await conn.exec_driver_sql("DELETE FROM jobs WHERE id = 'none'")
        # Elsewhere the write waits for the lock (SQLite's long busy timeout) and succeeds.
        asyncio.get_running_loop().call_later(3 * BUDGET_S, other.execute, "ROLLBACK")
        async with db.write() as conn:
            await conn.exec_driver_sql("DELETE FROM jobs WHERE id = 'none'")
    finally:
        other.close()
    with db.request_path():  # and the request path's writes work again
        async with db.write() as conn:
            await conn.exec_driver_sql("DELETE FROM jobs WHERE id = 'none'")
