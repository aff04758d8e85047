"""SQLite: the same calls on the application's SQLAlchemy connection to Conveyor's file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from conveyor.domain.states import JobState
from conveyor.library.enqueue import aenqueue, enqueue
from conveyor.store.factory import open_backend
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.conftest import fresh_database
from tests.library.conftest import OWNER
from tests.library.handlers import blueprint

WAIT_S = 30.0


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", request, tmp_path) as url:
        yield url


def _stored(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        jobs = conn.execute(text("SELECT id, state FROM jobs")).all()
        events = conn.execute(text("SELECT job_id, type FROM events")).all()
    return [tuple(r) for r in jobs], [tuple(r) for r in events]


def test_session_commit_rollback_and_duplicate(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        with Session(engine) as session:
            session.execute(text("CREATE TABLE orders (id int PRIMARY KEY)"))
            session.commit()
        with Session(engine) as session:
            session.execute(text("INSERT INTO orders VALUES (1)"))
            enqueue(session, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
            session.rollback()
        assert _stored(engine) == ([], [])
        with Session(engine) as session:
            session.execute(text("INSERT INTO orders VALUES (1)"))
            kept = enqueue(session, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
            again = enqueue(session, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
            session.execute(text("INSERT INTO orders VALUES (2)"))  # still usable
            session.commit()
        assert _stored(engine) == ([(kept.id, "queued")], [(kept.id, "created")])
        assert (again.id, again.duplicate) == (kept.id, True)
    finally:
        engine.dispose()


async def test_a_worker_runs_what_an_async_connection_committed(sqlite_url: str) -> None:
    backend = open_backend(sqlite_url)
    config = WorkerConfig(queues={"library": None}, concurrency=2, poll_interval=60.0,
                          lease_s=30.0, heartbeat_interval=1.0, grace=5.0)  # fmt: skip
    worker = Worker(backend, Registry(blueprint), config)
    task = asyncio.create_task(worker.run())
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    try:
        async with engine.connect() as conn:
            done = await aenqueue(conn, "lib_order", {"order_id": 4}, owner=OWNER,
                                  registry=blueprint)  # fmt: skip
            await conn.commit()
        deadline = time.monotonic() + WAIT_S
        while (job := await backend.get(done.id)).state is not JobState.COMPLETED:
            assert time.monotonic() < deadline, f"still {job.state.value}"
            await asyncio.sleep(0.05)
        assert job.result == {"shipped": 4}
    finally:
        await engine.dispose()
        worker.stop(force=True)
        await asyncio.wait_for(task, 20)
        await backend.close()
