"""Issue #13 item 1: a database outage of a few seconds stops nobody. Real PostgreSQL behind
the chaos suite's TCP proxy (chaos/proxy.py), cut (every connection closed, new ones refused)
and then healed: the listener reconnects and hears notifications again; a `conveyor worker`
process keeps running through the cut and completes the jobs submitted after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from chaos.proxy import Proxy, Toward

from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
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


@pytest.fixture
async def proxied(
    pg_db: str, proxy: Proxy, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, QueueBackend]]:
    """Processes that reach the database through the proxy, and a backend that does not
    (to submit and read whatever the proxy does)."""
    cluster = Cluster(through_proxy(pg_db, proxy), tmp_path)
    direct = open_backend(pg_db)
    try:
        yield cluster, direct
    finally:
        cluster.close()
        await direct.close()


async def until(
    check: Callable[[], bool], seconds: float = DEADLINE, why: Callable[[], str] = str
) -> None:
    """Poll `check`; at the deadline fail with what `why` says (a process's log, say)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s\n{why()}")
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
        app_log = tmp_path / "logs" / "worker.app.log"

        async def submit(count: int) -> None:
            await direct.enqueue([NewJob(type="record", payload={}) for _ in range(count)])

        def ended(count: int) -> bool:
            return len({run.job_id for run in cluster.runs("end")}) >= count

        def why() -> str:  # what a failure needs to be explained (it once failed in CI)
            ends = [f"{r.job_id}/{r.attempt}" for r in cluster.runs("end")]
            return f"ends: {ends}\n{cluster.report()}\n{app_log.read_text()[-20000:]}"

        await submit(2)
        await until(lambda: ended(2), why=why)

        await proxy.set_mode("cut")
        await asyncio.sleep(OUTAGE)
        await submit(3)  # straight to the database: the worker cannot see it yet
        await asyncio.sleep(OUTAGE)
        assert worker.running(), cluster.report()

        await proxy.set_mode("pass")
        await until(lambda: ended(5), why=why)
        await submit(3)
        await until(lambda: ended(8), why=why)
        assert worker.running(), cluster.report()
        log = app_log.read_text() + worker.output()
        assert "Traceback" not in log, log
        assert "database reachable again" in log, log
    finally:
        cluster.close()
        await direct.close()


async def _idle_worker(
    cluster: Cluster, direct: QueueBackend, settings: dict[str, str] | None = None
) -> None:
    """A worker started and idle: its warm-up job durably completed, its finish answered."""
    cluster.worker("worker", settings={"heartbeat_interval": "0.5", **(settings or {})})
    [warm] = await direct.enqueue([NewJob(type="record", payload={})])
    await until(lambda: bool(cluster.runs("end")))
    for _ in range(int(DEADLINE / 0.05)):
        if (await direct.get(warm.id)).state is JobState.COMPLETED:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # no statement of the warm-up still on the wire


async def _completed(direct: QueueBackend, job_id: str) -> None:
    for _ in range(int(DEADLINE / 0.05)):
        if (await direct.get(job_id)).state is JobState.COMPLETED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} not completed within {DEADLINE:.0f} s")


async def _claim_losing(
    cluster: Cluster,
    direct: QueueBackend,
    proxy: Proxy,
    toward: Toward,
    job: NewJob,
    settings: dict[str, str] | None = None,
) -> None:
    """An idle worker claims `job` and loses its claim's COMMIT (`toward="server"`) or that
    COMMIT's answer (`"client"`) with the connection; returns once the proxy dropped it."""
    await _idle_worker(cluster, direct, settings)
    marker = b"COMMIT\x00" if toward == "client" else b"COMMIT"  # the answer's tag, the query
    proxy.drop_at(marker, toward=toward, after=job.id.encode())  # the claim's answer names it
    await direct.enqueue([job])
    await asyncio.wait_for(proxy.dropped.wait(), DEADLINE)


@pytest.mark.slow
async def test_a_claim_whose_commit_answer_is_lost_runs_its_jobs_once(
    proxied: tuple[Cluster, QueueBackend], proxy: Proxy, tmp_path: Path
) -> None:
    """An idle worker starts the jobs its claim returned before the claim's COMMIT answers
    (one WAL flush less before a job starts). When that answer is lost with its connection
    the COMMIT was applied: the jobs are the worker's, they run on, and their outcomes are
    recorded. They used to be stopped at once and given back by the next heartbeat, so
    each ran twice (found by a cut in CI: `test_a_worker_process_survives_a_cut...`)."""
    cluster, direct = proxied
    job = NewJob(type="record", payload={})
    await _claim_losing(cluster, direct, proxy, "client", job)
    await _completed(direct, job.id)
    await asyncio.sleep(2.0)  # four heartbeats: none gives the job back to run again
    runs = [run for run in cluster.runs("start") if run.job_id == job.id]
    assert len(runs) == 1, cluster.report()
    log = (tmp_path / "logs" / "worker.app.log").read_text()
    assert "the answer to a claim of 1 jobs was lost" in log, log
    assert "released" not in log, log


@pytest.mark.slow
async def test_a_claim_whose_commit_never_arrives_runs_its_jobs_again_recorded_once(
    proxied: tuple[Cluster, QueueBackend], proxy: Proxy, tmp_path: Path
) -> None:
    """The other fate of that lost answer: the COMMIT never reached the server, which rolled
    the claim back. The jobs ran (started early) but were not the worker's: their outcomes
    are fenced out, and they run again and complete."""
    cluster, direct = proxied
    job = NewJob(type="record", payload={})
    await _claim_losing(cluster, direct, proxy, "server", job)
    await _completed(direct, job.id)
    record = await direct.get(job.id)
    assert record.attempt == 1  # the rolled-back claim spent no attempt
    ends = [run for run in cluster.runs("end") if run.job_id == job.id]
    assert 1 <= len(ends) <= 2, cluster.report()


@pytest.mark.slow
async def test_jobs_of_an_unanswered_claim_stop_once_their_lease_may_have_run_out(
    proxied: tuple[Cluster, QueueBackend], proxy: Proxy, tmp_path: Path
) -> None:
    """Jobs running on after their claim's answer was lost, and the database then away: no
    heartbeat can say whether they are the worker's, and once the lease their claim set may
    have run out (another worker may have been given them) they are stopped, as the jobs
    renewed before the outage are."""
    cluster, direct = proxied
    job = NewJob(type="record_sleep", payload={"seconds": 120})
    short = {"lease_seconds": "3", "heartbeat_interval": "1"}
    await _claim_losing(cluster, direct, proxy, "client", job, short)
    await proxy.set_mode("cut")  # before any heartbeat can confirm the claim
    log = tmp_path / "logs" / "worker.app.log"
    await until(lambda: f"lease lost (another worker may run it): stopped  job={job.id}"
                in log.read_text(), why=log.read_text)  # fmt: skip
