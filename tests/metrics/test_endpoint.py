"""A real `conveyor worker --metrics-port` serves its job metrics, here in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR must be set before prometheus-client is imported, so only a fresh
process can test it), and stops cleanly on SIGTERM."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from conveyor.runtime import load_handlers
from conveyor.services.jobs import JobService, Submission
from conveyor.store.factory import open_backend
from tests.metrics.samples import Samples
from tests.support.processes import CONVEYOR, ROOT, Proc, clean_environ, eventually

pytestmark = pytest.mark.slow
QUEUE = "metered"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_worker(tmp_path: Path, db_url: str, port: int, multiproc_dir: Path) -> Proc:
    env = clean_environ() | {
        "PYTHONUNBUFFERED": "1",
        "CONVEYOR_DATABASE_URL": db_url,
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256",
        "CONVEYOR_LOG_FILE": "",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
    }
    out = tmp_path / "worker.out"
    args = ["worker", "--queues", QUEUE, "--concurrency", "2", "--metrics-port", str(port)]
    with out.open("wb") as sink:
        popen = subprocess.Popen(
            [CONVEYOR, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc("worker", popen, out)


async def test_the_worker_serves_metrics_on_its_port(sqlite_template: Path, tmp_path: Path) -> None:
    database = tmp_path / "conveyor.db"
    shutil.copy(sqlite_template, database)
    db_url = f"sqlite:///{database}"
    backend = open_backend(db_url)
    try:
        jobs = JobService(backend, load_handlers([]))
        await jobs.submit_many([Submission(type="noop", queue=QUEUE)] * 3)
    finally:
        await backend.close()
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    port = free_port()
    worker = start_worker(tmp_path, db_url, port, multiproc_dir)
    try:
        samples = await scrape_until_completed(port, 3)
        assert samples.get("conveyor_jobs_started_total", queue=QUEUE, type="noop") == 3
        assert samples.get("conveyor_job_run_seconds_count", queue=QUEUE, type="noop") == 3
        assert not samples.has("conveyor_workers_alive")  # the API's figure, not a worker's
        assert list(multiproc_dir.glob("counter_*.db")), "multiprocess mode wrote no files"
        worker.send(signal.SIGTERM)
        assert await worker.wait_exit(20) == 0, worker.output()
    except BaseException:
        print(worker.output())
        raise
    finally:
        worker.kill()


async def scrape_until_completed(port: int, jobs: int) -> Samples:
    """The first scrape showing `jobs` completed noops (the port opens once the worker runs)."""
    scraped: list[Samples] = []
    async with httpx.AsyncClient(timeout=5) as client:

        async def completed() -> bool:
            try:
                r = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return False
            scraped.append(Samples(r.text))
            done = scraped[-1].get("conveyor_jobs_completed_total", queue=QUEUE, type="noop")
            return r.status_code == 200 and done == jobs

        await eventually(completed, timeout=30, what=f"{jobs} completed jobs on /metrics")
    return scraped[-1]
