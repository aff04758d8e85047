"""Issue #13 item 1: a database outage of a few seconds stops nobody. Real PostgreSQL behind
the chaos suite's TCP proxy (chaos/proxy.py), cut (every connection closed, new ones refused)
and then healed: the listener reconnects and hears notifications again; a `conveyor worker`
process keeps running through the cut and completes the jobs submitted after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chaos.proxy import Proxy

from conveyor.domain.jobs import NewJob
from conveyor.store.drivers.pg_sessions import PgListener
from conveyor.store.factory import open_backend
from tests.conftest import fresh_database, through_proxy
from tests.store.test_listener import listening, new_job
from tests.support.processes import Cluster

pytest.importorskip("asyncpg")

DEADLINE = 60.0  # seconds anything may take on a loaded machine (normally well under 2)
OUTAGE = 3.0  # seconds the database stays cut


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


async def until(check: Callable[[], bool], seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s")
        await asyncio.sleep(0.02)


async def test_a_listener_survives_a_cut_and_hears_again_after_it(pg_db: str, proxy: Proxy) -> None:
    backend, direct = open_backend(through_proxy(pg_db, proxy)), open_backend(pg_db)
    listener, heard = await listening(backend)
    assert isinstance(listener, PgListener)
    try:
        await direct.enqueue([new_job("before")])
        await until(lambda: heard.woke("before"))

        await proxy.set_mode("cut")
        await until(lambda: not listener.connected())
        await asyncio.sleep(OUTAGE)  # reconnect attempts are refused meanwhile
        assert listener.alive() and listener.reconnects == 0
        await direct.enqueue([new_job("during")])  # its NOTIFY is lost with the session

        await proxy.set_mode("pass")
        await until(lambda: listener.reconnects == 1)
        assert "" in heard.queues  # told to look at once: what came during the gap
        await direct.enqueue([new_job("after")])
        await until(lambda: heard.woke("after"))
        assert not heard.woke("during")
    finally:
        await listener.close()
        await backend.close()
        await direct.close()


@pytest.mark.slow
async def test_a_worker_process_survives_a_cut_and_runs_the_jobs_submitted_after(
    pg_db: str, proxy: Proxy, tmp_path: Path
) -> None:
    cluster = Cluster(through_proxy(pg_db, proxy), tmp_path)
    direct = open_backend(pg_db)
    try:
        worker = cluster.worker("worker")

        async def submit(count: int) -> None:
            await direct.enqueue([NewJob(type="record", payload={}) for _ in range(count)])

        await submit(2)
        await until(lambda: len(cluster.runs("end")) == 2)

        await proxy.set_mode("cut")
        await asyncio.sleep(OUTAGE)
        await submit(3)  # straight to the database: the worker cannot see it yet
        await asyncio.sleep(OUTAGE)
        assert worker.running(), cluster.report()

        await proxy.set_mode("pass")
        await until(lambda: len(cluster.runs("end")) == 5)
        await submit(3)
        await until(lambda: len(cluster.runs("end")) == 8)
        assert worker.running(), cluster.report()
        log = (tmp_path / "logs" / "worker.app.log").read_text() + worker.output()
        assert "Traceback" not in log, log
        assert "database reachable again" in log, log
    finally:
        cluster.close()
        await direct.close()
