"""CONVEYOR_DATABASE_SCHEMA: Conveyor's tables in their own schema of the application's
database; an enqueue in the application's transaction, a worker's claim and finish."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from conveyor.client import group, step
from conveyor.library import enqueue as library
from conveyor.services.migrations import apply_migrations
from tests.conftest import _drop, _pg_admin, pg_url
from tests.library.conftest import OWNER, completed, rows, running_worker, settled_workflow
from tests.library.handlers import blueprint

SCHEMA = "conveyor_app"
WAIT_S = 30.0


@pytest.fixture
async def empty_pg() -> AsyncIterator[str]:
    """A new PostgreSQL database with nothing in it (not the migrated template)."""
    name = f"conveyor_s_{uuid.uuid4().hex[:12]}"
    try:
        admin = await _pg_admin()
    except OSError as exc:  # pragma: no cover - no server
        pytest.skip(f"PostgreSQL is not reachable ({exc})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_url(name)
    await _drop(name)


async def test_tables_migrations_enqueue_and_worker_in_their_own_schema(
    empty_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_migrations(empty_pg, SCHEMA)
    await apply_migrations(empty_pg, SCHEMA)  # again: already at head, nothing to do
    found = rows(
        empty_pg, "SELECT to_regclass(%s)::text, to_regclass('public.jobs')::text", f"{SCHEMA}.jobs"
    )
    assert found == [(f"{SCHEMA}.jobs", None)]
    assert rows(empty_pg, f"SELECT count(*) FROM {SCHEMA}.alembic_version") == [(1,)]
    with psycopg.connect(empty_pg, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id int PRIMARY KEY, note text)")

    monkeypatch.setenv("CONVEYOR_DATABASE_SCHEMA", SCHEMA)
    library._settings.cache_clear()
    try:
        async with running_worker(empty_pg, SCHEMA) as backend:
            async with await psycopg.AsyncConnection.connect(empty_pg) as conn:
                before = await (await conn.execute("SHOW search_path")).fetchone()
                await conn.execute("INSERT INTO orders VALUES (1, 'paid')")
                done = await library.aenqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER,
                                              registry=blueprint)  # fmt: skip
                flow = await library.aenqueue_workflow(
                    conn,
                    group("g", [step("s", "lib_order", {"order_id": 3})]),
                    owner=OWNER,
                    registry=blueprint,
                )  # the workflow statements find Conveyor's tables too
                after = await (await conn.execute("SHOW search_path")).fetchone()
                await conn.execute("INSERT INTO orders VALUES (2, 'after the enqueue')")
                await conn.commit()
            assert after == before  # the caller's statements resolve as before
            assert (await completed(backend, done.id)).result == {"shipped": 1}
            assert (await settled_workflow(backend, flow.id)).workflow.state.value == "completed"
    finally:
        library._settings.cache_clear()
    assert rows(empty_pg, f"SELECT type FROM {SCHEMA}.events WHERE job_id = %s ORDER BY id",
                done.id)[0] == ("created",)  # fmt: skip
    assert rows(empty_pg, "SELECT count(*) FROM public.orders") == [(2,)]
