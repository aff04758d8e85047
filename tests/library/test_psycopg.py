"""Enqueue on the caller's psycopg 3 connection: the job commits or rolls back with their rows."""

from __future__ import annotations

import psycopg
import pytest

from conveyor.errors import IdempotencyKeyReused, InvalidInput, UnknownJobType
from conveyor.library import enqueue as library
from conveyor.library.enqueue import Job, enqueue, enqueue_batch
from tests.library.conftest import OWNER, jobs_and_events, rows
from tests.library.handlers import blueprint


def test_commit_stores_the_job_and_its_created_event_with_the_callers_row(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        done = enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        assert jobs_and_events(pg) == ([], [])  # not before the caller commits
        conn.commit()
    jobs, events = jobs_and_events(pg)
    assert jobs == [(done.id, "lib_order", OWNER, "queued")]
    assert events == [(done.id, "created")]
    assert not done.duplicate
    assert rows(pg, "SELECT id FROM orders") == [(1,)]


def test_a_limited_job_commits_with_its_limit_key(pg: str) -> None:
    """A job under a limit: its limit key is stored by its insert statement, in the
    caller's transaction (`enqueue_fresh_limited`), and rolls back with it."""
    with psycopg.connect(pg) as conn:
        done = enqueue(conn, "lib_packing", {"order_id": 7}, owner=OWNER, registry=blueprint)
        conn.rollback()
        kept = enqueue(conn, "lib_packing", {"order_id": 8}, owner=OWNER, registry=blueprint)
        conn.commit()
    assert rows(pg, "SELECT job_id, name, key FROM job_limits") == [(kept.id, "packers", "8")]
    assert done.id not in {j[0] for j in jobs_and_events(pg)[0]}


def test_rollback_leaves_no_job_and_no_event(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        conn.rollback()
    assert jobs_and_events(pg) == ([], [])
    assert rows(pg, "SELECT id FROM orders") == []


def test_a_savepoint_rolled_back_takes_its_job_the_outer_transaction_commits(pg: str) -> None:
    with psycopg.connect(pg, autocommit=True) as conn, conn.transaction():
        kept = enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint)
        with conn.transaction() as savepoint:
            enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint)
            raise psycopg.Rollback(savepoint)  # the nested block rolls back
    jobs, events = jobs_and_events(pg)
    assert [j[0] for j in jobs] == [kept.id]
    assert events == [(kept.id, "created")]


def test_a_duplicate_key_leaves_the_callers_transaction_usable(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        first = enqueue(
            conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint,
            idempotency_key="order-1",
        )  # fmt: skip
        again = enqueue(
            conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint,
            idempotency_key="order-1",
        )  # fmt: skip
        unique = enqueue(conn, "lib_unique", {"order_id": 7}, owner=OWNER, registry=blueprint)
        twin = enqueue(conn, "lib_unique", {"order_id": 7}, owner=OWNER, registry=blueprint)
        conn.execute("INSERT INTO orders VALUES (1, 'after the duplicates')")
        conn.commit()
    assert (again.id, again.duplicate) == (first.id, True)
    assert (twin.id, twin.duplicate) == (unique.id, True)
    assert len(jobs_and_events(pg)[0]) == 2
    assert rows(pg, "SELECT note FROM orders") == [("after the duplicates",)]


def test_a_duplicate_committed_by_another_transaction_is_answered_with_its_id(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        first = enqueue(conn, "lib_unique", {"order_id": 3}, owner=OWNER, registry=blueprint)
        conn.commit()
        again = enqueue(conn, "lib_unique", {"order_id": 3}, owner=OWNER, registry=blueprint)
        conn.execute("INSERT INTO orders VALUES (3, 'still usable')")
        conn.commit()
    assert (again.id, again.duplicate) == (first.id, True)
    assert rows(pg, "SELECT id FROM orders") == [(3,)]


def test_a_batch_is_checked_whole_before_anything_is_written(pg: str) -> None:
    good, bad = Job("lib_order", {"order_id": 1}), Job("lib_order", {"order_id": "x"})
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'paid')")
        with pytest.raises(InvalidInput, match="invalid payload"):
            enqueue_batch(conn, [good, bad], owner=OWNER, registry=blueprint)
        with pytest.raises(UnknownJobType):
            enqueue(conn, "no_such_type", {}, owner=OWNER, registry=blueprint)
        done = enqueue_batch(conn, [good, Job("lib_order", {"order_id": 2}, priority=5)],
                             owner=OWNER, registry=blueprint)  # fmt: skip
        conn.commit()  # the caller's transaction was never aborted
    assert sorted(j[0] for j in jobs_and_events(pg)[0]) == sorted(d.id for d in done)
    assert rows(pg, "SELECT priority FROM jobs ORDER BY priority") == [(0,), (5,)]


def test_an_owner_is_required(pg: str) -> None:
    with psycopg.connect(pg) as conn, pytest.raises(InvalidInput, match="owner"):
        enqueue(conn, "lib_order", {"order_id": 1}, owner="", registry=blueprint)


def test_an_autocommit_connection_enqueues_in_a_transaction_of_its_own(pg: str) -> None:
    with psycopg.connect(pg, autocommit=True) as conn:
        done = enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint,
                       delay=3600)  # fmt: skip
    assert rows(pg, "SELECT id, state FROM jobs") == [(done.id, "scheduled")]


def test_a_key_reused_for_another_payload_is_refused_and_the_transaction_goes_on(
    pg: str,
) -> None:
    with psycopg.connect(pg) as conn:
        enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint,
                idempotency_key="k")  # fmt: skip
        with pytest.raises(IdempotencyKeyReused):
            enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint,
                    idempotency_key="k")  # fmt: skip
        conn.execute("INSERT INTO orders VALUES (1, 'still usable')")
        conn.commit()
    assert rows(pg, "SELECT payload->>'order_id' FROM jobs") == [("1",)]


def test_the_owner_setting_names_the_owner(pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LIBRARY_OWNER", "svc-from-settings")
    library._settings.cache_clear()
    try:
        with psycopg.connect(pg) as conn:
            enqueue(conn, "lib_order", {"order_id": 1}, registry=blueprint)
            conn.commit()
    finally:
        library._settings.cache_clear()
    assert rows(pg, "SELECT owner_id FROM jobs") == [("svc-from-settings",)]


def test_a_batch_with_a_reused_key_leaves_none_of_its_jobs_in_the_callers_transaction(
    pg: str,
) -> None:
    """The batch's other jobs were inserted before the reused key was found: they are taken
    back (a savepoint of Conveyor's own), so the refusal changes nothing and the caller's
    transaction commits its own rows only."""
    with psycopg.connect(pg) as conn:
        kept = enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint,
                       idempotency_key="k")  # fmt: skip
        batch = [
            Job("lib_order", {"order_id": 3}, idempotency_key="fresh"),
            Job("lib_order", {"order_id": 2}, idempotency_key="k"),
        ]
        with pytest.raises(IdempotencyKeyReused):
            enqueue_batch(conn, batch, owner=OWNER, registry=blueprint)
        conn.execute("INSERT INTO orders VALUES (1, 'still usable')")
        conn.commit()
    assert rows(pg, "SELECT id FROM jobs") == [(kept.id,)]
    assert rows(pg, "SELECT count(*) FROM events") == [(1,)]
    assert rows(pg, "SELECT id FROM orders") == [(1,)]
