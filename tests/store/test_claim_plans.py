"""The claim of one queue (`claim_one`): a generic plan that stays on the queue's index, and
the idle worker's armed claim that runs it (docs/design.md "Idle latency")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from conveyor.domain.flow import Concurrency
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.drivers.postgres import SQL
from tests.store.helpers import job
from tests.store.test_limits import limited

W = "worker-a"


async def test_the_claim_of_one_queue_has_a_generic_plan_on_the_queues_index(
    backend: QueueBackend,
) -> None:
    """PostgreSQL: the generic plan (blind to the queue) of `claim_one` scans ix_jobs_claim
    in order with the queue as its index condition, for a rare queue behind a backlog of
    another: with `queue = $1` it scanned ix_jobs_claim_any, filtering every row of the
    other queue's backlog before the rare one's (docs/design.md "Idle latency")."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    for start in range(0, 3000, 500):
        await backend.enqueue([job(n=i) for i in range(start, start + 500)])
    await backend.enqueue([job(n=i, queue="rare") for i in range(3)])
    async with backend.db.write() as conn:
        await conn.execute(text("ANALYZE jobs"))
        await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await conn.exec_driver_sql(f"PREPARE one_queue AS {SQL['claim_one']}")
        args = "'rare', 64, 'w', now(), now(), 'started', 'running', '{}'"
        found = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE one_queue({args})")
        answer = found.scalar()
        plan: Any = json.loads(answer) if isinstance(answer, str) else answer
        await conn.exec_driver_sql("DEALLOCATE one_queue")
        await conn.rollback()
    scans = _scans(plan[0]["Plan"])
    on_queue = [s for s in scans if s.get("Index Name") == "ix_jobs_claim"]
    assert on_queue, scans
    assert "queue" in on_queue[0].get("Index Cond", ""), on_queue
    assert not [s for s in scans if s.get("Index Name") == "ix_jobs_claim_any"], scans
    assert not [s for s in scans if s.get("Relation Name") == "jobs" and "Seq" in s["Node Type"]]


async def test_an_armed_claim_of_one_queue_keeps_its_order_and_the_sessions_plan_mode(
    backend: QueueBackend,
) -> None:
    """The armed claim of a one-queue worker (generic plan on PostgreSQL) takes the highest
    priority first, skips a paused queue, and leaves the session's plan cache mode as it
    was (set for its transaction only)."""
    assert not await backend.claim(W, ["default"], 5, 30)  # an empty claim, then idle
    await backend.arm_claim()
    low, high = await backend.enqueue([job(n=1, priority=0), job(n=2, priority=5)])
    claimed = await backend.claim(W, ["default"], 1, 30)
    assert [c.id for c in claimed] == [high.id]
    await backend.pause_queue("default")
    await backend.arm_claim()
    assert not await backend.claim(W, ["default"], 5, 30)
    await backend.resume_queue("default")
    await backend.arm_claim()
    assert [c.id for c in await backend.claim(W, ["default"], 5, 30)] == [low.id]
    assert (await backend.get(low.id)).state is JobState.RUNNING
    if backend.dialect == "postgresql":
        async with backend.db.raw() as raw:  # the claim's connection, kept as the spare
            assert await raw.fetchval("SHOW plan_cache_mode") == "auto"
            counts = await raw.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%queue >= $1::text%'"
            )
        assert counts and counts[0]["generic_plans"] >= 1, counts


async def test_an_armed_generic_claim_taken_by_a_claim_of_several_queues(
    backend: QueueBackend,
) -> None:
    """An armed transaction readied for a one-queue claim, taken by another worker's claim
    of several queues (one driver): that claim is planned as usual and takes its jobs."""
    assert not await backend.claim(W, ["default"], 5, 30)
    await backend.arm_claim()
    (other,) = await backend.enqueue([job(n=1, queue="other")])
    claimed = await backend.claim("worker-b", ["default", "other"], 5, 30)
    assert [c.id for c in claimed] == [other.id]


async def test_an_armed_generic_claim_admits_its_limited_jobs_with_the_usual_plans(
    backend: QueueBackend,
) -> None:
    """The generic plan mode of an armed one-queue claim is checked safe for `claim_one`
    only: the admission of its limited candidates runs with the plans chosen as usual (no
    generic plan for `limit_start` on its first run: it had one before the fix), and
    admits them."""
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    assert not await backend.claim(W, ["default"], 5, 30)  # an empty claim, then idle
    await backend.arm_claim()
    armed = getattr(backend.driver, "_armed", None)  # PostgreSQL: (stack, connection, generic)
    first, second = await backend.enqueue([limited(("c", "a"), n=1), limited(("c", "a"), n=2)])
    assert [c.id for c in await backend.claim(W, ["default"], 5, 30)] == [first.id]
    assert (await backend.get(second.id)).state is JobState.QUEUED
    if armed is not None:
        assert armed[2]  # readied for a generic claim_one
        plans = await armed[1].fetch(  # that session's prepared statements
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'WITH mine AS%'"
        )
        assert plans and all(p["generic_plans"] == 0 for p in plans), plans


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scan node of an EXPLAIN (FORMAT JSON) plan."""
    found = [node] if "Scan" in node["Node Type"] else []
    for child in node.get("Plans", ()):
        found += _scans(child)
    return found
