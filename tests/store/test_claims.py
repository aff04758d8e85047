"""Claims and what a worker does with them: finish, heartbeat, release, progress."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta

import asyncpg
import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, ErrorInfo, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import Unavailable
from conveyor.store.backend import QueueBackend
from conveyor.store.drivers.postgres import SQL as PG_SQL
from conveyor.store.drivers.sqlite import _SQL as SQLITE_SQL
from conveyor.store.factory import open_backend
from tests.store.helpers import job

W = "worker-a"


async def test_enqueue_then_claim_and_complete(backend: QueueBackend) -> None:
    (enqueued,) = await backend.enqueue([job(n=1)])
    assert enqueued.created and enqueued.state is JobState.QUEUED

    (claimed,) = await backend.claim(W, ["default"], 10, lease_s=30)
    assert claimed.id == enqueued.id and claimed.attempt == 1 and claimed.payload == {"n": 1}
    running = await backend.get(enqueued.id)
    assert running.state is JobState.RUNNING and running.worker_id == W

    accepted = await backend.finish(W, [Outcome(claimed.id, 1, "completed", result={"ok": 1})])
    done = await backend.get(enqueued.id)
    assert accepted == {enqueued.id}
    assert done.state is JobState.COMPLETED and done.result == {"ok": 1} and done.progress == 100
    assert done.finished_at is not None and done.started_at is not None


async def test_claims_follow_priority_then_age_and_only_named_queues(
    backend: QueueBackend,
) -> None:
    low = await backend.enqueue([job(n=1, priority=0)])
    high = await backend.enqueue([job(n=2, priority=10)])
    other = await backend.enqueue([job(n=3, priority=99, queue="other")])
    (first,) = await backend.claim(W, ["default"], 1, 30)
    (second,) = await backend.claim(W, ["default"], 1, 30)
    assert [first.id, second.id] == [high[0].id, low[0].id]
    (third,) = await backend.claim(W, ["other", "default"], 5, 30)
    assert third.id == other[0].id


async def test_retry_outcome_waits_for_its_backoff(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=3)])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    retry_at = utcnow() + timedelta(seconds=1)
    error = ErrorInfo("RuntimeError", "boom", "trace")
    await backend.finish(W, [Outcome(claimed.id, 1, "retry", error=error, retry_at=retry_at)])
    record = await backend.get(queued.id)
    assert record.state is JobState.RETRYING and record.run_at == retry_at
    assert record.errors[0]["type"] == "RuntimeError" and record.errors[0]["attempt"] == 1
    assert await backend.promote_due() == 0
    await asyncio.sleep(1.1)
    assert await backend.promote_due() == 1
    (again,) = await backend.claim(W, ["default"], 1, 30)
    assert again.attempt == 2
    await backend.finish(W, [Outcome(again.id, 2, "failed", error=error)])
    failed = await backend.get(queued.id)
    assert failed.state is JobState.FAILED and len(failed.errors) == 2


async def test_late_result_from_a_worker_that_lost_its_lease_is_rejected(
    backend: QueueBackend,
) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=3)])
    (first,) = await backend.claim("slow", ["default"], 1, lease_s=0.2)
    await asyncio.sleep(0.3)
    report = await backend.rescue_expired()
    assert report.requeued == [queued.id]
    (second,) = await backend.claim("fast", ["default"], 1, lease_s=30)
    assert second.attempt == 2

    late = await backend.finish("slow", [Outcome(first.id, 1, "completed", result="late")])
    assert late == set()
    assert await backend.finish("fast", [Outcome(second.id, 2, "completed", result="ok")]) == {
        queued.id
    }
    record = await backend.get(queued.id)
    assert record.result == "ok" and record.attempt == 2
    assert record.errors[0]["type"] == "LeaseExpired"


async def test_heartbeat_extends_every_lease_of_the_worker(backend: QueueBackend) -> None:
    await backend.register_worker(W, "host", 1, ["default"], 4)
    await backend.enqueue([job(n=i) for i in range(3)])
    claimed = await backend.claim(W, ["default"], 3, lease_s=0.5)
    # Renewed for a minute, then past the claim's own lease: the rescuer finds nothing.
    # (It once renewed 0.3 s leases every 0.15 s, which a loaded machine outran.)
    owned = await backend.heartbeat(W, lease_s=60)
    assert owned == {c.id for c in claimed}
    await asyncio.sleep(0.6)
    assert (await backend.rescue_expired()).requeued == []
    assert await backend.heartbeat(W, lease_s=60) == owned
    (alive,) = await backend.list_workers(alive_within=5)
    assert alive.id == W


async def test_release_gives_jobs_back_without_spending_an_attempt(
    backend: QueueBackend,
) -> None:
    (queued,) = await backend.enqueue([job()])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    assert await backend.release("someone-else", [claimed.id]) == set()
    assert await backend.release(W, [claimed.id]) == {claimed.id}
    record = await backend.get(queued.id)
    assert record.state is JobState.QUEUED and record.attempt == 0
    (again,) = await backend.claim(W, ["default"], 1, 30)
    assert again.attempt == 1


async def test_progress_is_fenced_to_the_running_attempt(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job()])
    await backend.claim(W, ["default"], 1, 30)
    assert await backend.set_progress(W, queued.id, 1, 40, "reading")
    assert not await backend.set_progress("other", queued.id, 1, 90, "nope")
    record = await backend.get(queued.id)
    assert (record.progress, record.progress_message) == (40, "reading")


async def test_star_claims_every_queue_but_the_excluded(backend: QueueBackend) -> None:
    await backend.enqueue([job(queue="a"), job(queue="b"), job(queue="capped")])
    claimed = await backend.claim(W, ["*"], 10, 30, exclude=["capped"])
    assert sorted(j.queue for j in claimed) == ["a", "b"]
    (last,) = await backend.claim(W, ["capped"], 10, 30)
    assert last.queue == "capped"


async def test_a_claimed_job_carries_what_its_handler_needs(backend: QueueBackend) -> None:
    new = NewJob(
        type="mail", payload={"to": "a@b.c"}, queue="q", priority=4, max_attempts=5,
        timeout_s=7.5, idempotency_key="k", owner_id="ada",
    )  # fmt: skip
    await backend.enqueue([new])
    (claimed,) = await backend.claim(W, ["q"], 1, 30)
    assert (claimed.id, claimed.type, claimed.queue, claimed.payload) == (
        new.id,
        "mail",
        "q",
        {"to": "a@b.c"},
    )
    assert (claimed.attempt, claimed.max_attempts, claimed.timeout_s, claimed.priority) == (
        1,
        5,
        7.5,
        4,
    )
    assert (claimed.owner_id, claimed.idempotency_key) == ("ada", "k")
    assert claimed.run_at == (await backend.get(new.id)).run_at
    record = await backend.get(new.id)
    assert record.lease_expires_at is not None and record.lease_expires_at > utcnow()


async def test_nothing_asked_is_nothing_done(backend: QueueBackend) -> None:
    await backend.enqueue([job()])
    assert await backend.claim(W, ["default"], 0, 30) == []
    assert await backend.claim(W, [], 10, 30) == []
    assert await backend.finish(W, []) == set()
    assert await backend.release(W, []) == set()
    assert await backend.heartbeat(W, 30) == set()
    (left,) = await backend.list_jobs()
    assert left.state is JobState.QUEUED


async def test_two_processes_claiming_at_once_never_take_the_same_job(
    backend: QueueBackend, db_url: str
) -> None:
    other = open_backend(db_url)
    try:
        await backend.enqueue([job(n=i) for i in range(120)])
        taken: list[str] = []
        for _ in range(4):
            mine, theirs = await asyncio.gather(
                backend.claim("w1", ["default"], 20, 30), other.claim("w2", ["default"], 20, 30)
            )
            taken += [j.id for j in mine + theirs]
        assert len(taken) == len(set(taken)) == 120
    finally:
        await other.close()


async def test_one_finish_takes_mixed_outcomes_and_fences_each(backend: QueueBackend) -> None:
    await backend.enqueue([job(n=i, max_attempts=2) for i in range(4)])
    done, again, failed, stale = await backend.claim(W, ["default"], 4, 30)
    error = ErrorInfo("E", "m")
    later = utcnow() + timedelta(hours=1)
    accepted = await backend.finish(
        W,
        [
            Outcome(done.id, 1, "completed", result=[1, 2]),
            Outcome(again.id, 1, "retry", error=error, retry_at=later),
            Outcome(failed.id, 1, "failed", error=error, result={"partial": True}),
            Outcome(stale.id, 2, "completed"),  # not the attempt it runs: fenced out
        ],
    )
    assert accepted == {done.id, again.id, failed.id}
    states = {j: (await backend.get(j)).state for j in (done.id, again.id, failed.id, stale.id)}
    assert states == {
        done.id: JobState.COMPLETED,
        again.id: JobState.RETRYING,
        failed.id: JobState.FAILED,
        stale.id: JobState.RUNNING,
    }
    assert (await backend.get(done.id)).result == [1, 2]
    assert (await backend.get(failed.id)).result == {"partial": True}
    assert (await backend.get(again.id)).run_at == later


async def test_heartbeat_no_longer_names_a_job_cancelled_meanwhile(backend: QueueBackend) -> None:
    """How a worker without the cancel notification learns of a cancel at the latest."""
    await backend.enqueue([job(n=1), job(n=2)])
    kept, cancelled = await backend.claim(W, ["default"], 2, 30)
    await backend.cancel(cancelled.id)
    assert await backend.heartbeat(W, 30) == {kept.id}
    assert await backend.heartbeat("another-worker", 30) == set()


async def _plan_of(db_url: str, statement: str, args: list[object]) -> str:
    """The plan PostgreSQL runs `statement` with as a prepared statement's generic plan (what
    asyncpg's cached statements get after five runs), told by auto_explain; rolled back."""
    conn = await asyncpg.connect(db_url)
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    try:
        await conn.execute("LOAD 'auto_explain'")
        await conn.execute(
            "SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;"
            " SET auto_explain.log_level = notice; SET client_min_messages = notice;"
            " SET plan_cache_mode = force_generic_plan"
        )
        transaction = conn.transaction()
        await transaction.start()
        await conn.fetch(statement, *args)
        await transaction.rollback()
    finally:
        await conn.close()
    return plans[-1]


async def _running_after_stale_statistics(backend: QueueBackend, db_url: str) -> list[str]:
    """300 jobs of worker W running, another worker's 300, statistics taken while all were
    queued (as after a bulk pre-fill): the planner believes no row is running."""
    await backend.enqueue([job(n=i) for i in range(600)])
    if db_url.startswith("postgresql"):
        conn = await asyncpg.connect(db_url)
        await conn.execute("ANALYZE jobs")
        await conn.close()
    mine = await backend.claim(W, ["default"], 300, 30)
    await backend.claim("worker-b", ["default"], 300, 30)
    return [c.id for c in mine]


async def test_a_finish_finds_each_job_by_primary_key(backend: QueueBackend, db_url: str) -> None:
    """Linear in the batch whatever the statistics: before, the planner rescanned every
    running row of the worker for each outcome (quadratic: 500 outcomes, 3,000 running
    rows: 460 ms on PostgreSQL, 514 ms on SQLite)."""
    ids = (await _running_after_stale_statistics(backend, db_url))[:100]
    if db_url.startswith("postgresql"):
        args: list[object] = [W, utcnow(), ids, [1] * 100, ["null"] * 100, ["{}"] * 100]
        plan = await _plan_of(db_url, PG_SQL["complete"], [*args, "completed", "completed"])
        assert "Join Filter" not in plan and "ix_jobs_worker" not in plan, plan
        scans = [line for line in plan.splitlines() if "Scan" in line and " on jobs" in line]
        assert scans and all("pk_jobs" in line for line in scans), plan
        assert "rows=100 loops=1" in plan  # every outcome found, each by its key
    else:
        raw = db_url.split(":///", 1)[1]
        with sqlite3.connect(raw) as conn:
            batch = json.dumps([[i, 1, None] for i in ids])
            params = {"batch": batch, "worker": W, "now": utcnow().isoformat()}
            for name in ("complete", "retry", "fail"):
                steps = [
                    r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {SQLITE_SQL[name]}", params)
                ]
                assert any("USING INDEX sqlite_autoindex_jobs_1 (id=?)" in s for s in steps), steps
                assert not any("ix_jobs_worker" in s for s in steps), steps


async def test_a_claim_updates_its_rows_by_primary_key(backend: QueueBackend, db_url: str) -> None:
    """The claim's UPDATE never reads the whole table: joined to the picked rows it took a
    Seq Scan and a Hash Join on an analyzed table of 1,000 rows."""
    if not db_url.startswith("postgresql"):
        return  # SQLite's claim is `WHERE id IN (...)`: by primary key already
    await backend.enqueue([job(n=i) for i in range(1000)])
    conn = await asyncpg.connect(db_url)
    await conn.execute("ANALYZE jobs")
    await conn.close()
    now = utcnow()
    args = [["default"], 64, W, now, now + timedelta(seconds=30), "started", "running", "{}"]
    plan = await _plan_of(db_url, PG_SQL["claim"], args)
    assert "Seq Scan on jobs" not in plan and "Hash Join" not in plan, plan
    assert "Index Scan using pk_jobs on jobs" in plan, plan


async def test_a_claim_tells_its_jobs_early_and_still_commits_them(backend: QueueBackend) -> None:
    """An idle worker starts jobs while the claim commits; what it was told is what is
    claimed, and the claim is committed when `claim` returns."""
    await backend.enqueue([job(n=i) for i in range(3)])
    told: list[list[str]] = []
    claimed = await backend.claim(
        W, ["default"], 2, 30, early=lambda js: told.append([j.id for j in js])
    )
    assert told == [[c.id for c in claimed]] and len(claimed) == 2
    for c in claimed:
        assert (await backend.get(c.id)).state is JobState.RUNNING
    assert await backend.claim(W, ["default"], 5, 30, early=lambda js: told.append([])) != []
    assert await backend.claim(W, ["default"], 5, 30, early=lambda js: told.append(["x"])) == []
    assert told[-1] == []  # nothing claimed: not told


async def test_sqlite_tells_claimed_jobs_only_once_their_claim_is_committed(
    backend: QueueBackend, db_url: str
) -> None:
    """SQLite commits on aiosqlite's thread: a job started before that commit could kill the
    process and take its own claim with it (claimed again for ever, no attempt spent). So
    when it is told, another connection already sees the job running."""
    if db_url.startswith("postgresql"):
        return  # its COMMIT is sent before any handler can run (drivers/postgres.py)
    await backend.enqueue([job(n=1)])
    seen: list[str] = []

    def look(claimed: list[ClaimedJob]) -> None:
        with sqlite3.connect(db_url.split("///", 1)[1], timeout=0) as other:
            row = other.execute("SELECT state FROM jobs WHERE id = ?", (claimed[0].id,)).fetchone()
            seen.append(row[0])

    assert len(await backend.claim(W, ["default"], 1, 30, early=look)) == 1
    assert seen == ["running"]


async def _idle_in_transaction(db_url: str) -> int:
    """Sessions of this test's database that hold an open, idle transaction."""
    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction'"
            )
        )
    finally:
        await conn.close()


async def test_an_armed_claim_takes_jobs_enqueued_after_it_was_armed(
    backend: QueueBackend, db_url: str
) -> None:
    """`arm_claim` readies the next claim's transaction while its worker is idle: that claim
    still sees what was enqueued since (no snapshot taken ahead), tells it early, commits
    it; and an armed transaction given back unused leaves nothing open."""
    pg = db_url.startswith("postgresql")
    await backend.arm_claim()
    await backend.arm_claim()  # armed once
    if pg:
        assert await _idle_in_transaction(db_url) == 1
    (queued,) = await backend.enqueue([job(n=1)])
    told: list[str] = []
    claimed = await backend.claim(
        W, ["default"], 5, 30, early=lambda js: told.extend(j.id for j in js)
    )
    assert [c.id for c in claimed] == told == [queued.id]
    assert (await backend.get(queued.id)).state is JobState.RUNNING
    if pg:
        assert await _idle_in_transaction(db_url) == 0
    await backend.arm_claim()
    await backend.disarm_claim()
    await backend.disarm_claim()
    if pg:
        assert await _idle_in_transaction(db_url) == 0
    (later,) = await backend.enqueue([job(n=2)])
    assert [c.id for c in await backend.claim(W, ["default"], 5, 30)] == [later.id]


async def test_an_armed_claim_whose_session_died_fails_once_then_claims_again(
    backend: QueueBackend, db_url: str
) -> None:
    """The held connection can die while its worker waits (a restart, a timeout on idle
    transactions): that claim fails like any claim in an outage, and the next one, on a
    connection of the pool, takes the job."""
    if not db_url.startswith("postgresql"):
        return  # nothing is held ahead on SQLite
    await backend.arm_claim()
    (queued,) = await backend.enqueue([job(n=1)])
    conn = await asyncpg.connect(db_url)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle in transaction'"
        )
    finally:
        await conn.close()
    assert killed == 1
    with pytest.raises(Unavailable):  # as any claim in an outage
        await backend.claim(W, ["default"], 5, 30, early=lambda js: None)
    (claimed,) = await backend.claim(W, ["default"], 5, 30, early=lambda js: None)
    assert claimed.id == queued.id
    assert (await backend.get(queued.id)).state is JobState.RUNNING
