"""A library enqueue's owner is held to their quotas as a REST submit is: the queued quota
counted in the caller's transaction, the running quota as the job's built-in limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from conveyor.errors import QuotaExceeded
from conveyor.library import enqueue as library
from conveyor.library.enqueue import aenqueue, enqueue
from tests.conftest import fresh_database
from tests.library.conftest import OWNER, rows
from tests.library.handlers import blueprint

CAPPED = "user-with-caps"  # max_queued 1, max_running 2 (their own caps)
ADD_USER = (
    "INSERT INTO users (id, email, password_hash, role, verified, disabled, created_at, "
    "updated_at, max_queued, max_running) VALUES (:id, :email, 'x', 'user', true, false, "
    "'2026-01-01', '2026-01-01', 1, 2)"
)


@pytest.fixture
def quotas(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The settings' default quotas: 2 waiting jobs per owner, 3 running."""
    monkeypatch.setenv("CONVEYOR_QUOTA_MAX_QUEUED", "2")
    monkeypatch.setenv("CONVEYOR_QUOTA_MAX_RUNNING", "3")
    library._settings.cache_clear()
    yield
    library._settings.cache_clear()


@pytest.mark.usefixtures("quotas")
def test_psycopg_the_default_queued_quota_refuses_and_the_transaction_goes_on(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        for order in (1, 2):
            enqueue(conn, "lib_order", {"order_id": order}, owner=OWNER, registry=blueprint)
        with pytest.raises(QuotaExceeded):
            enqueue(conn, "lib_order", {"order_id": 3}, owner=OWNER, registry=blueprint)
        conn.execute("INSERT INTO orders VALUES (1, 'still usable')")
        conn.commit()
    assert rows(pg, "SELECT count(*) FROM jobs") == [(2,)]
    limits = rows(pg, "SELECT name, key FROM job_limits")
    assert limits == [("quota.running", OWNER)] * 2  # under the default running quota


@pytest.mark.usefixtures("quotas")
async def test_asyncpg_an_owners_own_caps_win(pg: str) -> None:
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(ADD_USER.replace(":id", "%(id)s").replace(":email", "%(email)s"),
                     {"id": CAPPED, "email": "capped@example.com"})  # fmt: skip
    conn = await asyncpg.connect(pg)
    try:
        async with conn.transaction():
            await aenqueue(conn, "lib_order", {"order_id": 1}, owner=CAPPED, registry=blueprint)
            with pytest.raises(QuotaExceeded):
                await aenqueue(conn, "lib_order", {"order_id": 2}, owner=CAPPED,
                               registry=blueprint)  # fmt: skip
    finally:
        await conn.close()
    assert rows(pg, "SELECT owner_id FROM jobs") == [(CAPPED,)]


@pytest.mark.usefixtures("quotas")
def test_sqlalchemy_on_sqlite_counts_the_queued_quota(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with fresh_database("sqlite", request, tmp_path) as url:
        engine = create_engine(url)
        try:
            with Session(engine) as session:
                session.execute(text(ADD_USER), {"id": CAPPED, "email": "capped@example.com"})
                enqueue(session, "lib_order", {"order_id": 1}, owner=CAPPED, registry=blueprint)
                with pytest.raises(QuotaExceeded):
                    enqueue(session, "lib_order", {"order_id": 2}, owner=CAPPED,
                            registry=blueprint)  # fmt: skip
                session.commit()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
                limits = conn.execute(text("SELECT name, key FROM job_limits")).all()
            assert [tuple(r) for r in limits] == [("quota.running", CAPPED)]
        finally:
            engine.dispose()
