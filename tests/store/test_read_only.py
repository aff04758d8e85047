"""A PostgreSQL server that refuses writes (SQLSTATE 25006) is an outage, not a bug.

Around a failover the address Conveyor uses can lead to a server in read-only state for a
while: the old primary restarted as a standby before HAProxy's check marks it down, a stale
DNS answer, a multi-host URL without ``target_session_attrs=read-write``. Every write then
fails with ``cannot execute ... in a read-only transaction``. Before, that was a 500 to API
clients (not 503 with Retry-After), and the pooled connections to that server were kept:
once the address led to a writable primary again they went on failing. Now it is
`Unavailable` and the pool's connections are replaced.

The server here is the shared test server with ``default_transaction_read_only`` set for
the test's database: the same error a hot standby gives, and, like a connection to a
standby, a session opened meanwhile keeps it until it is replaced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from conveyor.domain.jobs import NewJob
from conveyor.errors import Unavailable
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from tests.conftest import PG_ADMIN_DB, fresh_database, pg_url


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


@pytest.fixture
async def backend(pg_db: str) -> AsyncIterator[QueueBackend]:
    opened = open_backend(pg_db)
    yield opened
    await opened.close()


async def _read_only(url: str, on: bool) -> None:
    """The database refuses writes in every session opened from now on (or stops)."""
    name = make_url(url).database
    admin = await asyncpg.connect(pg_url(PG_ADMIN_DB), timeout=30)
    try:
        if on:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        else:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    finally:
        await admin.close()


def _job() -> NewJob:
    return NewJob(type="noop", payload={}, queue="ro")


async def test_writes_on_a_read_only_server_are_unavailable_then_recover(
    pg_db: str, backend: QueueBackend
) -> None:
    await backend.enqueue([_job()])  # a pooled connection, opened while writable
    await _read_only(pg_db, True)
    await backend.db.dispose()  # every connection from now on is to the read-only server
    try:
        with pytest.raises(Unavailable):  # the hot path: asyncpg's own connection
            await backend.enqueue([_job()])
        with pytest.raises(Unavailable):  # SQLAlchemy Core in a write transaction
            await backend.release("nobody", ["no-such-job"])
    finally:
        await _read_only(pg_db, False)
    # The address leads to a writable server again: the read-only sessions were dropped.
    for _ in range(3):
        (job,) = await backend.enqueue([_job()])
        await backend.release("nobody", [job.id])


async def test_leadership_is_not_taken_on_a_read_only_server(
    pg_db: str, backend: QueueBackend
) -> None:
    """An advisory lock can be taken on a standby (locks are not replicated), so a leader
    whose session landed there would lead alone on a server that takes none of its writes,
    and keep leading after the address led to the primary again (its pings still answer):
    with one scheduler nothing would rescue, promote or fire. Such a session is refused,
    and one that turns read-only is left, so the next try goes where the address leads."""
    lead = backend.leadership("read-only-test", "host-a-1", 5.0)
    try:
        assert await lead.acquire()
        await _read_only(pg_db, True)
        assert await lead.acquire()  # the session from before is still writable
        await lead.release()
        assert not await lead.acquire()  # a new session: read-only, so no leadership
        assert not await lead.acquire()
        await _read_only(pg_db, False)
        assert await lead.acquire()
    finally:
        await _read_only(pg_db, False)
        await lead.release()
