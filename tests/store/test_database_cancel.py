"""A write cancelled part-way (a stop, a client gone, a timeout) leaves nothing behind: the
next write gets the database at once. On SQLite a cancel inside the statement made
SQLAlchemy throw the connection away with its transaction still open, and the file's write
lock stayed with the discarded connection: every later write in the process waited out the
30 s busy timeout, then failed (a relay's stop outlasted its test's ten seconds in CI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend

PAUSES = [i / 10_000 for i in range(100)]  # 0 to 10 ms: before, inside and after the write


@pytest.fixture
async def bounded(db_url: str) -> AsyncIterator[QueueBackend]:
    """The backend with a request deadline of 5 s: a lock left behind fails a check in 5 s
    (Unavailable) instead of after the busy timeout."""
    opened = open_backend(db_url, request_timeout=5)
    yield opened
    await opened.close()


async def test_a_write_cancelled_part_way_leaves_no_lock_behind(bounded: QueueBackend) -> None:
    lease = bounded.leadership("cancelled", "holder", 30)
    for pause in PAUSES:
        taking = asyncio.create_task(lease.acquire())
        await asyncio.sleep(pause)
        taking.cancel()
        await asyncio.gather(taking, return_exceptions=True)
        with bounded.db.request_path():
            await lease.release()  # the same process's writer, as the relay's lane
