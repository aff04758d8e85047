"""A SQLAlchemy application: enqueue on its Session / Connection (psycopg) and AsyncSession
(asyncpg), in the transaction the session holds."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from conveyor.library.enqueue import aenqueue, enqueue
from tests.library.conftest import OWNER, jobs_and_events, rows
from tests.library.handlers import blueprint


def _url(pg: str, driver: str) -> str:
    return pg.replace("postgresql://", f"postgresql+{driver}://", 1)


def test_session_commit_rollback_and_nested_rollback(pg: str) -> None:
    engine = create_engine(_url(pg, "psycopg"))
    try:
        with Session(engine) as session:
            session.execute(text("INSERT INTO orders VALUES (1, 'paid')"))
            kept = enqueue(session, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
            nested = session.begin_nested()
            enqueue(session, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
            nested.rollback()
            session.commit()
        with Session(engine) as session:
            enqueue(session, "lib_order", {"order_id": 3}, owner=OWNER, registry=blueprint)
            session.rollback()
        with engine.connect() as conn:  # a Connection, not a Session
            enqueue(conn, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
            again = enqueue(conn, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
            conn.execute(text("INSERT INTO orders VALUES (2, 'after the duplicate')"))
            conn.commit()
    finally:
        engine.dispose()
    jobs, events = jobs_and_events(pg)
    assert sorted(j[1] for j in jobs) == ["lib_order", "lib_unique"]
    assert kept.id in {j[0] for j in jobs}
    assert len(events) == 2
    assert again.duplicate
    assert rows(pg, "SELECT id FROM orders ORDER BY id") == [(1,), (2,)]


async def _failing_transaction(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await aenqueue(session, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
        raise RuntimeError("the caller's work fails")


async def test_async_session_commit_and_rollback(pg: str) -> None:
    engine = create_async_engine(_url(pg, "asyncpg"))
    try:
        async with AsyncSession(engine) as session:
            await session.execute(text("INSERT INTO orders VALUES (1, 'paid')"))
            kept = await aenqueue(session, "lib_order", {"order_id": 1}, owner=OWNER,
                                  registry=blueprint)  # fmt: skip
            await session.commit()
        with pytest.raises(RuntimeError):
            await _failing_transaction(engine)
    finally:
        await engine.dispose()
    jobs, events = jobs_and_events(pg)
    assert [j[0] for j in jobs] == [kept.id]
    assert events == [(kept.id, "created")]
