"""A workflow enqueued inside the caller's transaction (docs/library.md, "A workflow in your
transaction"): the steps, edges and created events commit or roll back with the caller's
rows, on every kind of connection; the same statements as the server's submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from conveyor.client import chain, chord, nested, step, workflow
from conveyor.domain.workflows import StepSpec, WorkflowSpec
from conveyor.errors import IdempotencyKeyReused, InvalidInput, QuotaExceeded
from conveyor.library.enqueue import EnqueuedWorkflow, aenqueue_workflow, enqueue_workflow
from tests.conftest import fresh_database
from tests.library.conftest import OWNER, rows, running_worker, settled_workflow
from tests.library.handlers import blueprint

WORKFLOW_ROWS = "SELECT id, owner_id, state FROM workflows"
STEP_ROWS = "SELECT step, state FROM jobs ORDER BY step"
EDGE_COUNT = "SELECT count(*) FROM job_dependencies"
CREATED = "SELECT count(*) FROM events WHERE type = 'created'"


def fan_in(width: int = 3, name: str = "ship-all") -> Any:
    """A chord as the client's builders make it: `width` orders, then a join."""
    parts = [step(f"order-{i}", "lib_order", {"order_id": i}) for i in range(width)]
    return chord(name, parts, step("join", "lib_order", {"order_id": 99}))


def stored(url: str) -> tuple[list[Any], list[Any], int, int]:
    """The workflows, their steps (name, state), edges and created events committed."""
    return (
        rows(url, WORKFLOW_ROWS), rows(url, STEP_ROWS), rows(url, EDGE_COUNT)[0][0],
        rows(url, CREATED)[0][0],
    )  # fmt: skip


def test_psycopg_commit_stores_the_workflow_with_the_callers_row(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        done = enqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint)
        assert rows(pg, WORKFLOW_ROWS) == []  # not before the caller commits
        conn.commit()
    flows, steps, edges, created = stored(pg)
    assert flows == [(done.id, OWNER, "running")]
    assert steps == [("join", "waiting"), *((f"order-{i}", "queued") for i in range(3))]
    assert (edges, created, done.duplicate) == (3, 4, False)
    assert rows(pg, "SELECT id FROM orders") == [(1,)]


def test_psycopg_rollback_leaves_nothing(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        enqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint)
        conn.rollback()
    assert stored(pg) == ([], [], 0, 0)
    assert rows(pg, "SELECT id FROM orders") == []


def test_an_idempotency_key_answers_the_stored_workflow_and_refuses_another(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        first = enqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint,
                                 idempotency_key="ship-1")  # fmt: skip
        again = enqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint,
                                 idempotency_key="ship-1")  # fmt: skip
        with pytest.raises(IdempotencyKeyReused):
            enqueue_workflow(conn, fan_in(5), owner=OWNER, registry=blueprint,
                             idempotency_key="ship-1")  # fmt: skip
        conn.execute("INSERT INTO orders VALUES (1, 'still usable')")
        conn.commit()
    assert again == EnqueuedWorkflow(first.id, True)
    assert [f[0] for f in rows(pg, WORKFLOW_ROWS)] == [first.id]
    assert rows(pg, "SELECT count(*) FROM jobs") == [(4,)]
    assert rows(pg, "SELECT id FROM orders") == [(1,)]


def test_a_bad_declaration_is_refused_before_anything_is_written(pg: str) -> None:
    a = step("a", "lib_order", {"order_id": 1}, depends_on=["b"])
    looped = workflow("loop", [a, step("b", "lib_order", {"order_id": 2}, depends_on=["a"])])
    bad_payload = workflow("bad", [step("a", "lib_order", {"order_id": "x"})])
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        for spec in (looped, bad_payload, {"name": "no steps"}):
            with pytest.raises(InvalidInput):
                enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint)
        conn.commit()  # never aborted
    assert stored(pg) == ([], [], 0, 0)
    assert rows(pg, "SELECT id FROM orders") == [(1,)]


def test_the_queued_quota_counts_every_step(pg: str) -> None:
    capped = "wf-capped-owner"  # an owner no other test read the caps of (cached per process)
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, password_hash, role, verified, disabled, created_at, "
            "updated_at, max_queued) VALUES (%s, %s, 'x', 'user', true, false, now(), now(), 3)",
            (capped, f"{capped}@example.com"),
        )
    with psycopg.connect(pg) as conn, pytest.raises(QuotaExceeded):
        enqueue_workflow(conn, fan_in(3), owner=capped, registry=blueprint)  # 4 steps > 3
    assert stored(pg) == ([], [], 0, 0)


def test_a_domain_spec_and_the_rest_body_are_taken_too(pg: str) -> None:
    domain = WorkflowSpec("one", (StepSpec("a", "lib_order", {"order_id": 1}),))
    with psycopg.connect(pg) as conn:
        enqueue_workflow(conn, domain, owner=OWNER, registry=blueprint)
        enqueue_workflow(conn, fan_in().body(), owner=OWNER, registry=blueprint)
        conn.commit()
    assert len(rows(pg, WORKFLOW_ROWS)) == 2


async def test_asyncpg_commit_and_rollback(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    try:
        async with conn.transaction():
            kept = await aenqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint)
        with pytest.raises(RuntimeError):
            await _failing(conn)
    finally:
        await conn.close()
    assert stored(pg) == ([(kept.id, OWNER, "running")], stored(pg)[1], 3, 4)
    assert len(stored(pg)[1]) == 4


async def _failing(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await aenqueue_workflow(conn, fan_in(2), owner=OWNER, registry=blueprint)
        raise RuntimeError("the caller's work fails")


def test_sqlalchemy_session_commit_and_rollback(pg: str) -> None:
    """A SQLAlchemy Session on PostgreSQL (psycopg driver): commit, then rollback."""
    engine = create_engine(pg.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with Session(engine) as session:
            session.execute(text("INSERT INTO orders VALUES (1, 'paid')"))
            done = enqueue_workflow(session, fan_in(), owner=OWNER, registry=blueprint)
            session.commit()
        with Session(engine) as session:
            enqueue_workflow(session, fan_in(), owner=OWNER, registry=blueprint)
            session.rollback()
    finally:
        engine.dispose()
    assert [f[0] for f in rows(pg, WORKFLOW_ROWS)] == [done.id]


async def test_a_worker_completes_the_workflow_once_committed(pg: str) -> None:
    async with running_worker(pg) as backend:
        conn = await psycopg.AsyncConnection.connect(pg)
        async with conn:
            await conn.execute("INSERT INTO orders VALUES (1, 'paid')")
            done = await aenqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint)
            await conn.commit()
        detail = await settled_workflow(backend, done.id)
    assert detail.workflow.state.value == "completed"
    assert {s.name: s.result for s in detail.steps}["join"] == {"shipped": 99}


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", request, tmp_path) as url:
        yield url


def test_a_nested_workflow_is_stored_as_its_steps_and_a_bad_one_named_where_declared(
    pg: str,
) -> None:
    spec = chain("ship", [step("pick", "lib_order", {"order_id": 1}), nested("pack", fan_in(2))])
    bad = chain("bad", [step("pick", "lib_order", {"order_id": 1}),
                        nested("pack", [step("box", "lib_order", {"order_id": "x"})])])  # fmt: skip
    with psycopg.connect(pg) as conn:
        enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint)
        with pytest.raises(InvalidInput) as refused:
            enqueue_workflow(conn, bad, owner=OWNER, registry=blueprint)
        conn.commit()
    assert refused.value.details["field"] == "steps.1.steps.0.payload"
    _, steps, edges, _ = stored(pg)
    assert steps == [("pack.join", "waiting"), ("pack.order-0", "waiting"),
                     ("pack.order-1", "waiting"), ("pick", "queued")]  # fmt: skip
    assert edges == 4  # pick -> both orders, both orders -> the join


def test_sqlite_session_commit_rollback_and_duplicate(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        with Session(engine) as session:
            enqueue_workflow(session, fan_in(), owner=OWNER, registry=blueprint)
            session.rollback()
        with Session(engine) as session:
            kept = enqueue_workflow(session, fan_in(), owner=OWNER, registry=blueprint,
                                    idempotency_key="k")  # fmt: skip
            again = enqueue_workflow(session, fan_in(), owner=OWNER, registry=blueprint,
                                     idempotency_key="k")  # fmt: skip
            session.commit()
        with engine.connect() as conn:
            flows = conn.execute(text("SELECT id FROM workflows")).all()
            steps = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
            created = conn.execute(text(CREATED)).scalar_one()
    finally:
        engine.dispose()
    assert [f[0] for f in flows] == [kept.id]
    assert (steps, created, again) == (4, 4, EnqueuedWorkflow(kept.id, True))


async def test_sqlite_a_worker_completes_what_an_async_connection_committed(
    sqlite_url: str,
) -> None:
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    try:
        async with running_worker(sqlite_url) as backend:
            async with engine.connect() as conn:
                done = await aenqueue_workflow(conn, fan_in(), owner=OWNER, registry=blueprint)
                await conn.commit()
            detail = await settled_workflow(backend, done.id)
    finally:
        await engine.dispose()
    assert detail.workflow.state.value == "completed"
