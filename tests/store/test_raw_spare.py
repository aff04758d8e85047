"""`Database.raw`'s spare connection: the hot path's last connection is handed out again
without a pool checkout, but never once it is dead, and request paths keep the pool's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from conveyor.errors import Unavailable
from conveyor.store.database import FRESH_S, Database, plain_postgres_dsn

BUDGET_S = 0.5


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    if not db_url.startswith("postgres"):
        pytest.skip("raw() is PostgreSQL's (asyncpg)")
    opened = Database(db_url, request_timeout=BUDGET_S)
    yield opened
    await opened.dispose()


async def _pid(db: Database) -> int:
    async with db.raw() as raw:
        return int(await raw.fetchval("SELECT pg_backend_pid()"))


async def test_the_last_connection_is_handed_out_again(db: Database) -> None:
    first = await _pid(db)
    assert [await _pid(db) for _ in range(5)] == [first] * 5
    async with db.raw(transaction=True) as raw:  # a transaction's connection too
        assert await raw.fetchval("SELECT pg_backend_pid()") == first


async def test_a_spare_that_died_while_idle_is_replaced(db: Database) -> None:
    dead = await _pid(db)
    admin = await asyncpg.connect(plain_postgres_dsn(db.url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", dead)
    finally:
        await admin.close()
    await asyncio.sleep(FRESH_S + 0.2)  # idle long enough to be pinged, as the pool would
    alive = await _pid(db)
    assert alive != dead
    assert await _pid(db) == alive


async def test_a_failed_operation_gives_its_connection_back_to_the_pool(db: Database) -> None:
    with pytest.raises(asyncpg.PostgresError):
        async with db.raw() as raw:
            await raw.execute("SELECT no_such_function()")
    async with db.raw() as raw:  # whichever connection it gets, it works
        assert await raw.fetchval("SELECT 1") == 1


async def test_the_request_paths_deadline_still_ends_its_statement(db: Database) -> None:
    """A request path's deadline ends the connections its checkouts saw (the pool's hook):
    with a spare kept from the hot path, a slow statement there is still cut at the deadline
    (Unavailable), not left to run."""
    await _pid(db)  # a spare is kept
    with db.request_path(), pytest.raises(Unavailable):
        async with db.raw() as raw:
            await raw.execute(f"SELECT pg_sleep({4 * BUDGET_S})")
    assert await _pid(db) != 0  # and the hot path goes on
