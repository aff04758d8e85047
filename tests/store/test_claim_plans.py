"""The claim of one queue (`claim_one`): a generic plan that stays on the queue's index, and
the idle worker's armed claim that runs it (docs/design.md "Idle latency")."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import Concurrency, Rate
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.drivers.postgres import SQL
from conveyor.store.factory import open_backend
from conveyor.store.types import sqlite_time
from tests.store.helpers import job
from tests.store.test_limits import limited
from tests.support.processes import eventually

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


@pytest.mark.parametrize("statement", ["claim_one", "claim_one_unprobed", "claim_one_admit"])
async def test_the_armed_claims_plan_stays_on_the_queues_index_after_an_idle_analyze(
    backend: QueueBackend, statement: str
) -> None:
    """PostgreSQL: statistics taken while nothing was queued (an idle system's, after a
    drain), then a backlog of scheduled jobs and a few queued ones. The generic plan an
    armed claim makes (`claim_begin_generic`) is still the ordered scan of ix_jobs_claim,
    nothing sorted: it was a scan of ix_jobs_owner_waiting (every queued, scheduled and
    retrying job of every owner and queue) and a sort of what it found."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    await backend.enqueue([job(n=i) for i in range(300)])
    later = utcnow() + timedelta(hours=1)
    async with backend.db.raw() as raw:
        await raw.execute("UPDATE jobs SET state = 'completed', finished_at = now()")
        await raw.execute("ANALYZE jobs")
    await backend.enqueue([job(n=i, run_at=later) for i in range(300)])
    await backend.enqueue([job(n=i) for i in range(3)])
    plan = await _generic_claim_plan(backend, limit=1, statement=statement)
    scans = [s for s in _scans(plan) if s.get("Relation Name") == "jobs"]
    assert scans[0].get("Index Name") == "ix_jobs_claim", scans
    # The pick sorts nothing (`claim_one_admit` sorts the slots it makes, a few rows).
    (picked,) = [n for n in plan["Plans"] if n.get("Subplan Name") == "CTE picked"]
    assert not _nodes(picked, "Sort"), plan


@pytest.mark.parametrize("statement", ["claim_one", "claim_one_unprobed", "claim_one_admit"])
async def test_the_generic_claim_made_on_an_empty_table_takes_its_rows_by_key(
    backend: QueueBackend, statement: str
) -> None:
    """PostgreSQL: `claim_one`'s generic plan is made once per connection, and the first
    one may be made on a table still empty (idle workers of a fresh deployment). Its UPDATE
    read the whole table then (a Seq Scan is cheapest for a table of no pages), and every
    later claim on that connection did the same: a 10,000-step workflow submitted to idle
    workers drained 0.35 s slower. Sequential scans are off in its transaction: the picked
    rows are taken by primary key."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    plan = await _generic_claim_plan(backend, limit=64, statement=statement)
    scans = [s for s in _scans(plan) if s.get("Relation Name") == "jobs"]
    assert scans and not [s for s in scans if "Seq" in s["Node Type"]], scans


async def _generic_claim_plan(
    backend: QueueBackend, limit: int, statement: str = "claim_one"
) -> dict[str, Any]:
    """The plan `statement` (`claim_one` and its variants) gets in a transaction begun
    by `claim_begin_generic` (as a worker's), for the queue "default": the generic plan,
    made now from the statistics of now, as a worker's connection makes it at its first
    such claim."""
    async with backend.db.raw() as raw:
        await raw.execute(SQL["claim_begin_generic"])
        try:
            await raw.execute(f"PREPARE one_queue AS {SQL[statement]}")
            args = f"'default', {limit}, 'w', now(), now(), 'started', 'running', '{{}}'"
            answer = await raw.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE one_queue({args})")
        finally:
            await raw.execute("ROLLBACK")
            await raw.execute("DEALLOCATE one_queue")
    plan: Any = json.loads(answer) if isinstance(answer, str) else answer
    return plan[0]["Plan"]  # type: ignore[no-any-return]


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


async def test_two_workers_of_one_driver_arming_at_once_hold_one_transaction(
    backend: QueueBackend,
) -> None:
    """Two idle workers sharing a driver ready their claims at the same moment: one
    transaction is held, and given back when disarmed. Both saw none armed before their
    BEGIN's round trip, and the second overwrote the first, whose pooled connection was
    never given back (SQLAlchemy's warning when it was collected)."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite arms nothing")
    assert not await backend.claim(W, ["default"], 5, 30)
    await asyncio.gather(backend.arm_claim(), backend.arm_claim())
    assert await _idle_in_transaction(backend) == 1
    await backend.disarm_claim()
    assert await _idle_in_transaction(backend) == 0


async def _idle_in_transaction(backend: QueueBackend) -> int:
    """Sessions of this database idle in a transaction (armed claims), seen from another."""
    async with backend.db.raw() as raw:
        return int(
            await raw.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction'"
            )
        )


async def test_claims_of_one_queue_in_a_transaction_are_not_planned_each_time(
    backend: QueueBackend,
) -> None:
    """PostgreSQL: a claim of one queue that opens a transaction anyway (its jobs told
    early, or after a claim with limited candidates) runs `claim_one`'s generic plan: each
    was planned again (0.5 ms of a claim of 64, 160 ms of a 20,000-job drain), and the
    admission after it still runs with the usual plans and admits its jobs."""
    if backend.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    told: list[Any] = []
    for n in range(6):
        (queued,) = await backend.enqueue([job(n=n)])
        got = await backend.claim(
            W, ["default"], 5, 30, early=lambda j: told.extend(c.id for c in j)
        )
        assert [c.id for c in got] == [queued.id]
    assert len(told) == 6  # every one told early
    first, second = await backend.enqueue([limited(("c", "a"), n=1), limited(("c", "a"), n=2)])
    assert [c.id for c in await backend.claim(W, ["default"], 5, 30)] == [first.id]
    (third,) = await backend.enqueue([limited(("c", "b"), n=3)])
    assert [c.id for c in await backend.claim(W, ["default"], 5, 30)] == [third.id]
    assert (await backend.get(second.id)).state is JobState.QUEUED
    ones = await _prepared(backend, "%queue >= $1::text%")  # (generic, custom) plans
    assert sum(g for g, _ in ones) >= 7 and not any(c for _, c in ones), ones
    admissions = await _prepared(backend, "WITH mine AS%")
    assert admissions and all(generic == 0 for generic, _ in admissions), admissions


async def _prepared(backend: QueueBackend, like: str) -> list[tuple[int, int]]:
    """(generic, custom) plans of the prepared statements LIKE `like`, summed over every
    connection the claims may have used: the spare and each one idle in the pool, all
    held at once so that each is read once (which one a claim got depends on what else
    ran meanwhile: the events NOTIFY takes one too). First every connection back in the
    pool: the NOTIFY's side task, up to 50 ms after a change, held one while the suite ran
    on a busy machine, and the statements it had prepared were not read."""
    sql = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE $1"
    found: list[tuple[int, int]] = []
    pool: Any = backend.db.writer.pool  # a QueuePool: it counts its connections
    for _ in range(500):
        if not pool.checkedout():
            break
        await asyncio.sleep(0.01)
    idle = pool.checkedin()
    async with contextlib.AsyncExitStack() as held:
        for _ in range(idle + 1):
            raw = await held.enter_async_context(backend.db.raw())
            rows = await raw.fetch(sql, like)
            found += [(int(r["generic_plans"]), int(r["custom_plans"])) for r in rows]
    return found


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


def _nodes(node: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every node of `kind` of an EXPLAIN (FORMAT JSON) plan."""
    found = [node] if node["Node Type"] == kind else []
    for child in node.get("Plans", ()):
        found += _nodes(child, kind)
    return found


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scan node of an EXPLAIN (FORMAT JSON) plan."""
    found = [node] if "Scan" in node["Node Type"] else []
    for child in node.get("Plans", ()):
        found += _scans(child)
    return found


@pytest.mark.parametrize("limits", [1, 2])
async def test_a_busy_claim_of_one_queue_reads_only_the_jobs_it_takes(
    db_url: str, limits: int
) -> None:
    """PostgreSQL, a table never analyzed, beside another queue's backlog: a busy worker's
    claim of one queue reads its queue's rows in claim order and stops at its LIMIT, and
    the admission of its limited jobs (one limit each: `limit_start`; two:
    `limit_demands` .. `limit_admit`) finds them by primary key. Before, the claim
    (`queue = ANY($1)`) read all 2,808 queued rows of its queue, ran each one's limit
    probe and sorted them (73 ms for 64), and the admission ANDed the bitmaps of two
    partial indexes on state, every queued row of every queue (58 ms). Counted by
    PostgreSQL's statistics once the backend's connections closed (each flushes its own)."""
    if not db_url.startswith("postgres"):
        pytest.skip("PostgreSQL's plans")
    backend = open_backend(db_url)
    claims = 3
    try:
        defined: list[Concurrency | Rate] = [
            Concurrency("c", 2, key="payload.k"),
            Rate("r", 1_000, per_s=1, key="queue"),
        ]
        await backend.define_limits(defined)
        keys = [("c", "t{}"), ("r", "default")][:limits]
        await backend.enqueue(
            [limited(*((n, k.format(i % 1000)) for n, k in keys), n=i) for i in range(3_000)]
        )
        for start in range(0, 20_000, 5_000):
            await backend.enqueue([job(n=i, queue="other") for i in range(start, start + 5_000)])
        for _ in range(claims):
            assert len(await backend.claim(W, ["default"], 64, 30)) == 64
    finally:
        await backend.close()
    db = Database(db_url)
    try:

        async def read() -> dict[str, int]:
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                return {row.name: int(row.n) for row in await conn.execute(text(_READ))}

        async def flushed() -> bool:  # the claims' connections: their starts counted
            return (await read()).get("jobs.updated", 0) >= claims * 64

        await eventually(flushed, timeout=20, what="the statistics")
        found = await read()
        assert found["jobs.seq_scan"] == 0, found
        reads = {k: n for k, n in found.items() if k.startswith("ix_") and n}
        assert sum(reads.values()) <= claims * 64 * 2, reads
    finally:
        await db.dispose()


_READ = """
SELECT 'jobs.updated' AS name, n_tup_upd AS n FROM pg_stat_user_tables WHERE relname = 'jobs'
UNION ALL
SELECT 'jobs.seq_scan', seq_scan FROM pg_stat_user_tables WHERE relname = 'jobs'
UNION ALL
SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes WHERE relname = 'jobs'
"""


async def test_the_generic_claim_gives_its_transaction_the_usual_plans_back(
    backend: QueueBackend,
) -> None:
    """`claim_one` in a transaction begun by `claim_begin_generic` puts the plan settings
    back to the session's for the rest of its transaction as it runs, so the admission of
    its limited candidates that follows is planned as usual without a round trip of its
    own (`claim_plan_default` was one, in every limited claim of a busy one-queue worker)."""
    if backend.dialect != "postgresql":
        pytest.skip("plan settings are PostgreSQL's")
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    await backend.enqueue([limited(("c", "a"), n=1), job(n=2)])
    now = utcnow()
    async with backend.db.raw() as raw:
        default_jit = await raw.fetchval("SHOW jit")
        await raw.execute(SQL["claim_begin_generic"])
        try:
            assert await raw.fetchval("SHOW enable_sort") == "off"
            assert await raw.fetchval("SHOW jit") == "off"
            rows = await raw.fetch(
                SQL["claim_one"], "default", 5, W, now, now + timedelta(seconds=30),
                "started", "running", "{}",
            )  # fmt: skip
            assert rows[0]["waiting"] and [r["id"] for r in rows if r["id"]]
            settings = [
                await raw.fetchval(f"SHOW {name}")
                for name in ("plan_cache_mode", "enable_sort", "enable_seqscan", "jit")
            ]
        finally:
            await raw.execute("ROLLBACK")
    assert settings == ["auto", "on", "on", default_jit]


@pytest.mark.parametrize(
    ("queues", "every_queue", "index"),
    [
        (["default"], False, "ix_jobs_claim"),
        (["other", "default"], False, "ix_jobs_claim"),
        (["elsewhere"], True, "ix_jobs_claim_any"),
    ],
    ids=["one queue", "several queues", "every queue"],
)
async def test_a_sqlite_claim_never_analyzed_reads_its_jobs_in_order_from_the_claim_index(
    backend: QueueBackend, queues: list[str], every_queue: bool, index: str
) -> None:
    """SQLite has no statistics until something runs ANALYZE (Conveyor does not): its
    claim's plan must not need them. Without them the claim of a worker of one queue, or
    of every queue, read the queued jobs from ix_jobs_finished (state, finished_at) and
    sorted all of them for each claim (4 ms a claim of 64 at 10,000 queued, 0.05 ms in
    the claim index's order); a worker of several queues, through its claim's
    `queue IN (...)`, too: it now reads each queue as a one-queue worker does and takes
    the best of them."""
    if backend.dialect != "sqlite":
        pytest.skip("PostgreSQL's claims: the tests above")
    from conveyor.store.drivers.sqlite import claim_statement

    await backend.enqueue([job(n=i, priority=i % 3) for i in range(300)])
    await backend.enqueue([job(n=i, priority=3, queue="other") for i in range(10)])
    params = {"queues": json.dumps(queues), "queue": queues[0], "limit": 64, "now": "x"}
    async with backend.db.read() as conn:
        analyzed = await conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"
        )
        assert analyzed.scalar() == 0
        found = await conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + claim_statement(every_queue), params
        )
        plan = [str(row[-1]) for row in found.all()]  # the detail column
    reads = [line for line in plan if line.startswith(("SCAN jobs", "SEARCH jobs"))]
    assert reads[0].endswith((f"INDEX {index}", f"INDEX {index} (queue=?)")), plan
    assert not [line for line in plan if "TEMP B-TREE" in line], plan
    claimed = await backend.claim(W, queues if not every_queue else ["*"], 64, 30)
    first = [3] * 10 if len(queues) > 1 or every_queue else []  # "other"'s, ahead
    took = sorted((c.priority for c in claimed), reverse=True)
    assert took == first + [2] * (64 - len(first))


async def test_a_sqlite_rescue_never_analyzed_reads_only_expired_leases(
    backend: QueueBackend,
) -> None:
    """The rescuer's scan (each scheduler tick) without statistics read every running job
    through ix_jobs_finished (state, finished_at) and sorted them by lease; it takes the
    expired leases in order from ix_jobs_lease."""
    if backend.dialect != "sqlite":
        pytest.skip("PostgreSQL's rescue: its planner has statistics (autovacuum)")
    from conveyor.store.drivers.sqlite import _SQL

    await backend.enqueue([job(n=i) for i in range(300)])
    assert len(await backend.claim(W, ["default"], 200, 30)) == 200
    params = {"now": "x", "now_iso": "x", "limit": 100}
    async with backend.db.read() as conn:
        found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + _SQL["rescue"], params)
        plan = [str(row[-1]) for row in found.all()]
    reads = [line for line in plan if line.startswith(("SCAN jobs", "SEARCH jobs"))]
    assert any("INDEX ix_jobs_lease" in line for line in reads), plan
    assert not [line for line in plan if "TEMP B-TREE" in line or "ix_jobs_finished" in line]


async def test_a_sqlite_promotion_reads_only_due_jobs_from_the_due_index(
    backend: QueueBackend,
) -> None:
    """Each scheduler tick promotes scheduled and retrying jobs whose time has come. On
    SQLite its state condition was bound (`state IN (?, ?)`), which no partial index can
    serve, so with or without statistics it read every scheduled and retrying job through
    ix_jobs_finished and sorted them by run_at: a backlog of delayed jobs cost each tick
    all of it. It takes the due rows in order from ix_jobs_due, and promotes them."""
    if backend.dialect != "sqlite":
        pytest.skip("PostgreSQL's promotion: its planner sees the bound states")
    from conveyor.store.drivers.sqlite import _SQL

    later = utcnow() + timedelta(hours=1)
    await backend.enqueue([job(n=i, run_at=later) for i in range(300)])
    (soon,) = await backend.enqueue([job(n=300, run_at=utcnow() + timedelta(seconds=1))])
    assert await backend.promote_due() == 0
    params = {"now": sqlite_time(utcnow()), "limit": 1000}
    async with backend.db.read() as conn:
        found = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + _SQL["promote"], params)
        plan = [str(row[-1]) for row in found.all()]
    assert any("INDEX ix_jobs_due" in line for line in plan), plan
    assert not [line for line in plan if "TEMP B-TREE" in line or "ix_jobs_finished" in line]
    await asyncio.sleep(1.1)
    assert await backend.promote_due() == 1
    assert (await backend.get(soon.id)).state is JobState.QUEUED
