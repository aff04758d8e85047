"""The request path's database deadline (`Database.request_path`): an operation that takes
longer fails with `Unavailable` (retry_after) and its connection is dropped, the pool goes
on with fresh ones; outside a request path long statements and lock waits are left alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable

import pytest

from conveyor.errors import Unavailable
from conveyor.settings import sqlite_file
from conveyor.store.database import Database, _Guarded
from tests.support.processes import eventually

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


async def test_a_connection_closed_in_the_pool_is_not_handed_out(db: Database) -> None:
    """A deadline's timer can close a connection its operation already gave back, or one
    whose COMMIT the operation saw succeed (the driver then forgets the transaction and the
    pool's reset finds nothing to roll back): such a connection sat in the pool as good, and
    the next request within `FRESH_S` (not pinged) failed with "connection is closed" (a 503
    on sign-in in the load suite). It gets a live connection instead."""
    if db.dialect != "postgresql":
        pytest.skip("asyncpg's connections")
    async with db.read() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    driver.terminate()  # closed while back in the pool, as a late deadline leaves it
    with db.request_path():  # at once: fresher than FRESH_S, so not pinged
        await db.ping()
        async with db.write() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1


async def test_a_deadline_ends_only_the_connections_its_operation_still_holds(
    db: Database,
) -> None:
    """An operation on a request path gives its connection back (SQLAlchemy's close runs in a
    task of its own, so the operation resumes later) and another one, here a worker's, takes
    it; the first one's deadline passes meanwhile: the worker's statement must not fail."""
    if db.dialect != "postgresql":
        pytest.skip("asyncpg's connections")
    given_back, holding, passed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def worker() -> object:  # outside any request path: unbounded
        await given_back.wait()
        async with db.write() as conn:
            holding.set()
            await passed.wait()
            return (await conn.exec_driver_sql("SELECT 1")).scalar()

    async def request() -> None:
        async with _Guarded():  # one operation's deadline, kept open past its check-in
            async with db.writer.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            given_back.set()
            await holding.wait()
            await asyncio.sleep(3 * BUDGET_S)

    taken = asyncio.create_task(worker())
    with db.request_path(), pytest.raises(Unavailable):
        await request()
    passed.set()
    assert await taken == 1


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


def test_a_protocol_state_error_counts_as_an_outage() -> None:
    """asyncpg's InternalClientError ("cannot switch to state ...; another operation is in
    progress") came out of a claim on a session the server had just terminated (its FATAL
    arriving as the statement started): the session is gone, so it is an outage (retried,
    503), not a bug (500); `raw` then drops that connection. It failed
    `test_an_armed_claim_whose_session_died_fails_once_then_claims_again` now and then."""
    from asyncpg.exceptions import InternalClientError

    from conveyor.store.database import is_outage

    assert is_outage(InternalClientError("cannot switch to state 11; another operation (2)"))
    assert not is_outage(ValueError("a bug"))


async def test_a_statement_whose_request_gave_up_ends_on_the_server(db: Database) -> None:
    """At the deadline the client ends its connection; the server went on with the
    statement until it next wrote to the socket: a lock wait (here on a lock held for the
    whole test) or a long query outlived its request, holding what it had locked and using a
    backend. Every pooled session now asks the server to look for a vanished client
    (`client_connection_check_interval`, PostgreSQL 14+): it ends within about a second."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's backends")
    async with db.raw() as holder:
        await holder.execute("SELECT pg_advisory_lock(4242)")
        try:
            with db.request_path(), pytest.raises(Unavailable):
                async with db.raw() as raw:
                    await raw.execute("SELECT pg_advisory_lock(4242)")

            async def waiters() -> int:
                found = await holder.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query = 'SELECT pg_advisory_lock(4242)' AND pid <> pg_backend_pid()"
                )
                return int(found)

            await eventually(
                lambda: _none(waiters()), timeout=5 * BUDGET_S + 3, what="the backend to end"
            )
        finally:
            await holder.execute("SELECT pg_advisory_unlock(4242)")


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0
