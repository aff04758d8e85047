"""A fresh migrated PostgreSQL database per test, and how the tests look into it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import JobState
from conveyor.domain.workflows import WorkflowDetail
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.conftest import fresh_database
from tests.library.handlers import blueprint

OWNER = "svc-orders"
POLL_S = 60.0  # longer than any wait: only a wake-up gets a job run in time
WAIT_S = 30.0  # generous on a busy machine


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database's URL (postgresql://...)."""
    with fresh_database("postgres", request, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        yield url


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """What another session sees now (committed rows only)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def jobs_and_events(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The jobs (id, type, owner, state) and their events (job id, type) stored."""
    jobs = rows(url, "SELECT id, type, owner_id, state FROM jobs ORDER BY id")
    events = rows(url, "SELECT job_id, type FROM events ORDER BY id")
    return jobs, events


@asynccontextmanager
async def running_worker(url: str, schema: str = "") -> AsyncIterator[QueueBackend]:
    """A real worker of the `library` queue on `url`, which polls only once a minute (so a
    job it runs in time was a wake-up's), idle when this yields its store."""
    backend = open_backend(url, schema=schema)
    config = WorkerConfig(queues={"library": None}, concurrency=2, poll_interval=POLL_S,
                          lease_s=30.0, heartbeat_interval=1.0, grace=5.0)  # fmt: skip
    worker = Worker(backend, Registry(blueprint), config)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(1.0)  # it has listened and gone idle
        yield backend
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)
        await backend.close()


async def completed(backend: QueueBackend, job_id: str) -> JobRecord:
    """The job once completed, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while (job := await backend.get(job_id)).state is not JobState.COMPLETED:
        assert time.monotonic() < deadline, f"still {job.state.value}"
        await asyncio.sleep(0.05)
    return job


async def settled_workflow(backend: QueueBackend, workflow_id: str) -> WorkflowDetail:
    """The workflow once settled (no longer running), within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while (detail := await backend.get_workflow(workflow_id)).workflow.state.value == "running":
        assert time.monotonic() < deadline, [(s.name, s.state.value) for s in detail.steps]
        await asyncio.sleep(0.05)
    return detail
