"""A real worker runs a job enqueued in the caller's transaction once it commits: woken by
the NOTIFY the enqueue statement sends on commit, not by polling (its poll is a minute)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.library.enqueue import aenqueue
from conveyor.store.factory import open_backend
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.library.conftest import OWNER
from tests.library.handlers import blueprint

POLL_S = 60.0  # longer than the wait: only a wake-up gets the job run in time
WAIT_S = 30.0  # generous on a busy machine


async def test_a_worker_runs_the_job_once_the_transaction_commits(pg: str) -> None:
    backend = open_backend(pg)
    config = WorkerConfig(queues={"library": None}, concurrency=2, poll_interval=POLL_S,
                          lease_s=30.0, heartbeat_interval=1.0, grace=5.0)  # fmt: skip
    worker = Worker(backend, Registry(blueprint), config)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.0)  # the worker has listened and gone idle
        async with await psycopg.AsyncConnection.connect(pg) as conn:
            done = await aenqueue(conn, "lib_order", {"order_id": 5}, owner=OWNER,
                                  registry=blueprint)  # fmt: skip
            await asyncio.sleep(0.5)
            with pytest.raises(NotFound):  # not committed yet: nobody else sees it
                await backend.get(done.id)
            await conn.commit()
        deadline = time.monotonic() + WAIT_S
        while (job := await backend.get(done.id)).state is not JobState.COMPLETED:
            assert time.monotonic() < deadline, f"still {job.state.value}"
            await asyncio.sleep(0.05)
        assert job.result == {"shipped": 5}
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)
        await backend.close()
