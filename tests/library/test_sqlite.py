"""SQLite: the same calls on the application's SQLAlchemy connection to Conveyor's file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from conveyor.library.enqueue import aenqueue, enqueue
from conveyor.store.drivers.sqlite_sessions import LocalBus, SqliteListener, WakeSockets
from tests.conftest import fresh_database
from tests.library.conftest import OWNER, completed, running_worker
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
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    try:
        async with running_worker(sqlite_url) as backend:
            async with engine.connect() as conn:
                done = await aenqueue(conn, "lib_order", {"order_id": 4}, owner=OWNER,
                                      registry=blueprint)  # fmt: skip
                await conn.commit()
            assert (await completed(backend, done.id)).result == {"shipped": 4}
    finally:
        await engine.dispose()


def test_a_sync_connection_commits_an_enqueue_that_was_its_first_statement(
    sqlite_url: str,
) -> None:
    """The enqueue's statements go to the sqlite3 connection underneath in one call: the
    connection's transaction must still be SQLAlchemy's to commit (an enqueue as the first
    statement of `engine.connect()` was lost at its close)."""
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            done = enqueue(conn, "lib_order", {"order_id": 5}, owner=OWNER, registry=blueprint)
            conn.commit()
        assert _stored(engine) == ([(done.id, "queued")], [(done.id, "created")])
    finally:
        engine.dispose()


async def test_a_commit_on_the_callers_connection_wakes_the_files_listeners_at_once(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conveyor's own commits ring the file's listeners; the caller's SQLAlchemy connection
    rings them (this process's too) when it commits what it enqueued, once per transaction,
    instead of leaving it to the next `data_version` look. A rollback rings nothing."""
    monkeypatch.setattr("conveyor.store.drivers.sqlite_sessions.CROSS_PROCESS_POLL", 30.0)
    path = make_url(sqlite_url).database
    assert path is not None
    heard: list[str] = []
    listener = SqliteListener(LocalBus(), path, heard.append, lambda _job: None, WakeSockets(path))
    await listener.start("PRAGMA data_version")  # its first look now, the next in 30 s
    engine = create_engine(sqlite_url)
    try:
        with Session(engine) as session:
            enqueue(session, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
            session.rollback()
        await asyncio.sleep(0.2)
        assert heard == []
        with Session(engine) as session:
            for order in (2, 3):
                enqueue(session, "lib_order", {"order_id": order}, owner=OWNER, registry=blueprint)
            session.commit()
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert heard == ["*"]
    finally:
        await listener.close()
        engine.dispose()
