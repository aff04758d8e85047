"""A real 503 (the server's PostgreSQL refusing connections): idempotent calls are retried
until the database is back; a POST without an idempotency key is sent once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conveyor.client import AsyncClient, Client, RetryPolicy, ServiceUnavailable
from tests.api.test_outage import _block
from tests.client.conftest import AsyncCounting, Counting, Login
from tests.support.live import LiveServer

PATIENT = RetryPolicy(attempts=100, backoff=0.05, cap=0.1)


@contextmanager
def outage(database: str, *, lasting: float | None = None) -> Iterator[None]:
    """No new connections to `database` (and its open ones cut); back after `lasting`
    seconds if given, else when the block ends."""
    asyncio.run(_block(database, allowed=False))
    timer = threading.Timer(lasting or 0, lambda: asyncio.run(_block(database, allowed=True)))
    if lasting is not None:
        timer.start()
    try:
        yield
    finally:
        if lasting is not None:
            timer.join()
        asyncio.run(_block(database, allowed=True))


def test_503_is_retried_only_where_sending_twice_is_safe(
    server: LiveServer, ada: Login, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("an outage of an embedded SQLite file is not a network event")
    database = db_url.rsplit("/", 1)[1]
    counting = Counting()
    with Client(server.url, retry=PATIENT, transport=counting) as c:
        c.login(ada.email, ada.password)
        job = c.submit("noop")

        counting.sent.clear()
        with outage(database), pytest.raises(ServiceUnavailable) as down:
            c.submit("noop")
        assert down.value.code == "unavailable" and down.value.status == 503
        assert counting.sent == ["POST /api/v1/jobs"]  # once: it might have been stored

        counting.sent.clear()
        with outage(database, lasting=0.8):
            assert c.get(job.id).id == job.id
        assert counting.sent.count(f"GET /api/v1/jobs/{job.id}") > 1

        counting.sent.clear()
        with outage(database, lasting=0.8):
            keyed = c.submit("noop", idempotency_key="only-once")
        assert counting.sent.count("POST /api/v1/jobs") > 1
        ids = [j.id for j in c.list()]
        assert keyed.id in ids and len(ids) == 2  # the first job and the keyed one: no more


async def test_the_async_client_rides_out_an_outage_on_get(
    server: LiveServer, ada: Login, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("an outage of an embedded SQLite file is not a network event")
    database = db_url.rsplit("/", 1)[1]
    counting = AsyncCounting()
    async with AsyncClient(server.url, retry=PATIENT, transport=counting) as c:
        await c.login(ada.email, ada.password)
        job = await c.submit("noop")
        await _block(database, allowed=False)

        async def reopen() -> None:
            await asyncio.sleep(0.8)
            await _block(database, allowed=True)

        reopening = asyncio.create_task(reopen())
        try:
            assert (await c.get(job.id)).id == job.id
        finally:
            await reopening
    assert counting.sent.count(f"GET /api/v1/jobs/{job.id}") > 1
