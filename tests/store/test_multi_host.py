"""A multi-host PostgreSQL URL (SQLAlchemy's form: ``?host=a:5432&host=b:5432``, with
``target_session_attrs=read-write``), as docs/operations.md advises for a highly available
database without a virtual IP: the pool *and* the sessions of their own (LISTEN, the
leader's advisory lock) try every host in order and take the first that answers.

Before, the DSN handed to asyncpg for those sessions kept only the last ``host=``: with the
primary listed first and the second host down, a worker could not start its listener and no
scheduler could lead, while the pool worked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from conveyor.domain.jobs import NewJob
from conveyor.store.database import plain_postgres_dsn
from conveyor.store.factory import open_backend
from tests.conftest import PG_PORT, fresh_database

DEADLINE = 10.0  # a wake-up on a busy machine (normally milliseconds)


def _closed_port() -> int:
    """A port nobody listens on: a host that is down."""
    from chaos.pgcluster import free_port

    return free_port()


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


def _multi_host(url: str, ports: list[int]) -> str:
    """`url` with its host replaced by every port of 127.0.0.1, in order, read-write only."""
    parsed = make_url(url)
    hosts = tuple(f"127.0.0.1:{port}" for port in ports)
    query = {"host": hosts, "target_session_attrs": "read-write"}
    multi = URL.create(parsed.drivername, parsed.username, parsed.password, None, None,
                       parsed.database, query)  # fmt: skip
    return multi.render_as_string(hide_password=False)


def test_the_sessions_dsn_keeps_every_host_and_port() -> None:
    url = "postgresql://u:p@/db?host=a:5433&host=b&host=[::1]:5434&target_session_attrs=read-write"
    dsn = make_url(plain_postgres_dsn(url))
    assert dsn.query["host"] == "a,b,::1"
    assert dsn.query["port"] == "5433,5432,5434"
    assert dsn.query["target_session_attrs"] == "read-write"
    assert (dsn.username, dsn.password, dsn.database) == ("u", "p", "db")
    single = "postgresql://u@h:6000/db"
    assert make_url(plain_postgres_dsn(single)).render_as_string(False) == single


async def test_listener_and_leadership_take_the_first_host_that_answers(pg_db: str) -> None:
    url = _multi_host(pg_db, [PG_PORT, _closed_port()])
    backend = open_backend(url)
    woke: list[str] = []
    try:
        listener = await backend.listen(woke.append, lambda _job: None)
        try:
            await backend.enqueue([NewJob(type="noop", payload={}, queue="ha")])
            deadline = time.monotonic() + DEADLINE
            while "ha" not in woke and "*" not in woke:
                assert time.monotonic() < deadline, "no wake-up through the multi-host URL"
                await asyncio.sleep(0.01)
        finally:
            await listener.close()
        lead = backend.leadership("multi-host-test", "host-a-1", 5.0)
        try:
            assert await lead.acquire()
        finally:
            await lead.release()
    finally:
        await backend.close()
