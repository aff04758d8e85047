"""A real worker runs a job enqueued in the caller's transaction once it commits: woken by
the NOTIFY the enqueue statement sends on commit, not by polling (its poll is a minute)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from conveyor.errors import NotFound
from conveyor.library.enqueue import aenqueue
from tests.library.conftest import OWNER, completed, running_worker
from tests.library.handlers import blueprint


async def test_a_worker_runs_the_job_once_the_transaction_commits(pg: str) -> None:
    async with running_worker(pg) as backend:
        async with await psycopg.AsyncConnection.connect(pg) as conn:
            done = await aenqueue(conn, "lib_order", {"order_id": 5}, owner=OWNER,
                                  registry=blueprint)  # fmt: skip
            await asyncio.sleep(0.5)
            with pytest.raises(NotFound):  # not committed yet: nobody else sees it
                await backend.get(done.id)
            await conn.commit()
        assert (await completed(backend, done.id)).result == {"shipped": 5}
