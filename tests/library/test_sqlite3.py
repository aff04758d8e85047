"""The application's own `sqlite3` connection to Conveyor's file: the job (or workflow)
commits or rolls back with the caller's rows, and Conveyor never ends their transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import chord, step
from conveyor.errors import IdempotencyKeyReused
from conveyor.library.enqueue import EnqueuedWorkflow, enqueue, enqueue_workflow
from tests.conftest import fresh_database
from tests.library.conftest import OWNER, completed, running_worker
from tests.library.handlers import blueprint


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", request, tmp_path) as url:
        with sqlite3.connect(_path(url)) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        yield url


def _path(url: str) -> str:
    return url.split(":///", 1)[1]


def _seen(url: str, sql: str) -> list[Any]:
    """What another connection sees now (committed rows only)."""
    conn = sqlite3.connect(_path(url))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _jobs(url: str) -> tuple[list[Any], list[Any], list[Any]]:
    return (
        _seen(url, "SELECT id, state FROM jobs ORDER BY id"),
        _seen(url, "SELECT job_id, type FROM events ORDER BY id"),
        _seen(url, "SELECT id FROM orders ORDER BY id"),
    )


def test_commit_and_rollback_in_sqlite3s_implicit_transaction(sqlite_url: str) -> None:
    conn = sqlite3.connect(_path(sqlite_url))  # the default: a transaction before a write
    try:
        conn.execute("INSERT INTO orders VALUES (1)")
        enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        assert conn.in_transaction
        conn.rollback()
        assert _jobs(sqlite_url) == ([], [], [])
        conn.execute("INSERT INTO orders VALUES (2)")
        done = enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
        assert _jobs(sqlite_url) == ([], [], [])  # not before the caller commits
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (3)")  # still the caller's, still open
        conn.commit()
    finally:
        conn.close()
    assert _jobs(sqlite_url) == ([(done.id, "queued")], [(done.id, "created")], [(2,), (3,)])


def test_an_explicit_begin_in_autocommit_mode_holds_the_enqueue(sqlite_url: str) -> None:
    conn = sqlite3.connect(_path(sqlite_url), isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO orders VALUES (1)")
        enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert _jobs(sqlite_url) == ([], [], [])


def test_duplicates_leave_the_transaction_usable(sqlite_url: str) -> None:
    conn = sqlite3.connect(_path(sqlite_url))
    try:
        kept = enqueue(conn, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
        twin = enqueue(conn, "lib_unique", {"order_id": 1}, owner=OWNER, registry=blueprint)
        keyed = enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint,
                        idempotency_key="o-2")  # fmt: skip
        again = enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint,
                        idempotency_key="o-2")  # fmt: skip
        conn.execute("INSERT INTO orders VALUES (1)")
        conn.commit()
    finally:
        conn.close()
    assert (twin.id, twin.duplicate, again.id, again.duplicate) == (kept.id, True, keyed.id, True)
    jobs, events, orders = _jobs(sqlite_url)
    assert (len(jobs), len(events), orders) == (2, 2, [(1,)])


def test_a_workflow_commits_rolls_back_and_answers_its_key(sqlite_url: str) -> None:
    spec = chord("ship", [step(f"o-{i}", "lib_order", {"order_id": i}) for i in range(3)],
                 step("join", "lib_order", {"order_id": 9}))  # fmt: skip
    conn = sqlite3.connect(_path(sqlite_url))
    try:
        enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint)
        conn.rollback()
        kept = enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint, idempotency_key="k")
        again = enqueue_workflow(conn, spec, owner=OWNER, registry=blueprint, idempotency_key="k")
        other = chord("other", [step("a", "lib_order", {"order_id": 1})], step("b", "lib_order",
                      {"order_id": 2}))  # fmt: skip
        with pytest.raises(IdempotencyKeyReused):
            enqueue_workflow(conn, other, owner=OWNER, registry=blueprint, idempotency_key="k")
        conn.commit()
    finally:
        conn.close()
    assert again == EnqueuedWorkflow(kept.id, True)
    assert _seen(sqlite_url, "SELECT id FROM workflows") == [(kept.id,)]
    assert _seen(sqlite_url, "SELECT count(*) FROM jobs") == [(4,)]
    assert _seen(sqlite_url, "SELECT count(*) FROM job_dependencies") == [(3,)]


async def test_a_worker_runs_what_a_sqlite3_connection_committed(sqlite_url: str) -> None:
    async with running_worker(sqlite_url) as backend:
        conn = sqlite3.connect(_path(sqlite_url))
        try:
            done = enqueue(conn, "lib_order", {"order_id": 5}, owner=OWNER, registry=blueprint)
            conn.commit()
        finally:
            conn.close()
        assert (await completed(backend, done.id)).result == {"shipped": 5}
