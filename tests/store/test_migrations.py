"""Migrations produce exactly the schema the code defines, on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, select, text

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import Concurrency
from conveyor.domain.jobs import NewJob, Outcome
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.factory import open_backend
from conveyor.store.jobs import job_row
from conveyor.store.migrate import alembic_config, current_revision, migrate
from conveyor.store.tables import (
    job_dependencies,
    jobs,
    metadata,
    schedule_fires,
    schedules,
    schema_of,
)
from tests.store.test_limits import held, limited
from tests.support.processes import eventually


def _diff(sync_conn: Connection) -> list[Any]:
    opts = {"compare_type": True, "include_object": schema_of(sync_conn.dialect.name)}
    context = MigrationContext.configure(sync_conn, opts=opts)
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_equals_the_tables_in_code(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db)  # already at head: a second run changes nothing
        async with db.read() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []
        assert await current_revision(db) is not None
    finally:
        await db.dispose()


async def test_0013_gives_stored_jobs_their_due_time_as_fair_tag_and_goes_back(
    db_url: str,
) -> None:
    """Jobs stored before fair dispatch keep their order: fair_tag = run_at's epoch."""
    db = Database(db_url)
    run_at = utcnow() - timedelta(minutes=5)
    try:
        async with db.write() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0011"))
            row = job_row(NewJob(type="noop", payload={}, run_at=run_at), utcnow())
            row.pop("fair_key")
            row.pop("trace_context")  # added by 0018
            await conn.execute(insert(jobs), [row])
        await migrate(db)
        async with db.read() as conn:
            tag = (await conn.execute(select(jobs.c.fair_tag))).scalar_one()
            diff = await conn.run_sync(_diff)
        assert abs(tag - run_at.timestamp()) < 0.01 and diff == []
    finally:
        await db.dispose()


async def test_0017_keeps_the_fires_of_stored_schedules(db_url: str) -> None:
    """SQLite recreates `schedules` for 0017; the fire rows that cascade from it survive,
    so a fire time fired before the upgrade is not fired again after it."""
    db = Database(db_url)
    now = utcnow()
    schedule: dict[str, Any] = {
        "id": "s1", "owner_id": "o", "name": "n", "cron": "* * * * *", "timezone": "UTC",
        "job_type": "noop", "queue": None, "payload": {}, "priority": 0, "max_attempts": None,
        "timeout_s": None, "tags": [], "paused": False, "misfire_policy": "once",
        "next_fire_at": now, "last_fire_at": None, "created_at": now, "updated_at": now,
    }  # fmt: skip
    fire = {"schedule_id": "s1", "fire_at": now, "job_id": "j1", "created_at": now}
    try:
        async with db.write() as conn:
            await conn.run_sync(
                lambda sync: command.downgrade(alembic_config(sync), "0016_workflows")
            )
            await conn.execute(insert(schedules), [schedule])
            await conn.execute(insert(schedule_fires), [fire])
        await migrate(db)
        async with db.read() as conn:
            kept = (await conn.execute(select(schedule_fires.c.job_id))).scalars().all()
            diff = await conn.run_sync(_diff)
        assert kept == ["j1"] and diff == []
    finally:
        await db.dispose()


async def test_0026_plain_jobs_write_no_entry_into_the_step_and_finished_indexes(
    backend: QueueBackend,
) -> None:
    """A plain job's submit and claim (no workflow, not finished) add nothing to the three
    indexes 0026 made partial: each stays the empty index's one metapage. Before, a queued
    or running plain job had an entry in each (a write per state change)."""
    if backend.driver.dialect != "postgresql":
        pytest.skip("SQLite keeps full indexes (migration 0026)")
    await backend.enqueue([NewJob(type="noop", payload={}) for _ in range(1_000)])
    assert len(await backend.claim("w", ["default"], 500, 30)) == 500
    async with backend.db.read() as conn:
        sizes = {
            name: (await conn.execute(text(f"SELECT pg_relation_size('{name}')"))).scalar_one()
            for name in ("uq_jobs_workflow_id_step", "ix_jobs_workflow_open", "ix_jobs_finished")
        }
    assert sizes == dict.fromkeys(sizes, 8192), sizes  # at 0025: 32 kB each


async def test_0027_a_slot_is_taken_and_freed_by_hot_updates(db_url: str) -> None:
    """On PostgreSQL a limited job's claim and finish change its slot's row in place (HOT:
    no index entry), and the release finds the slots through job_limits by key, even in a
    table never analyzed: 2,000 other limited jobs queued elsewhere are never read (a plain
    join scanned all of job_limits per finish). Counted by PostgreSQL's statistics once the
    backend's connections closed (each flushes its own)."""
    if not db_url.startswith("postgres"):
        pytest.skip("SQLite has no HOT updates (migration 0027)")
    backend = open_backend(db_url)
    try:
        await backend.define_limits([Concurrency("c", 2, key="payload.k")])
        others = [limited(("c", f"o{i}"), n=i, queue="elsewhere") for i in range(2_000)]
        await backend.enqueue(others)
        await backend.enqueue([limited(("c", f"k{i % 3}"), n=i) for i in range(12)])
        taken = 0
        while claimed := await backend.claim("w", ["default"], 4, 30):
            taken += len(claimed)
            await backend.finish("w", [Outcome(c.id, c.attempt, "completed") for c in claimed])
        assert taken == 12 and await held(backend) == {}
    finally:
        await backend.close()
    db = Database(db_url)
    try:

        async def counted() -> dict[str, int]:
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                found = (await conn.execute(text(_STATS))).all()
            return {f"{row.relname}.{key}": int(getattr(row, key)) for row in found
                    for key in ("upd", "hot", "seq")}  # fmt: skip

        async def flushed() -> bool:  # 6 slots made with their first holders; 18 updates
            return (await counted()).get("limit_slots.upd", 0) >= 18

        await eventually(flushed, timeout=20, what="the statistics")
        stats = await counted()
        assert stats["limit_slots.hot"] == stats["limit_slots.upd"], stats
        assert stats["job_limits.seq"] == 0, stats
    finally:
        await db.dispose()


_STATS = """
SELECT relname, n_tup_upd AS upd, n_tup_hot_upd AS hot, seq_scan AS seq
FROM pg_stat_user_tables WHERE relname IN ('limit_slots', 'job_limits')
"""


async def test_0028_gives_stored_steps_with_dependencies_depends_and_goes_back(
    db_url: str,
) -> None:
    """Steps stored before 0028 learn from their edges whether they have dependencies (the
    worker reads those results before it runs them); plain jobs and root steps do not."""
    db = Database(db_url)
    now = utcnow()

    def row(job_id: str, workflow_id: str | None, state: str) -> dict[str, Any]:
        stored = job_row(NewJob(type="noop", payload={}), now)
        stored.pop("depends", None)
        return {**stored, "id": job_id, "state": state, "workflow_id": workflow_id}

    try:
        async with db.write() as conn:
            await conn.run_sync(
                lambda sync: command.downgrade(alembic_config(sync), "0027_hot_slots")
            )
            stored = [row("root", "w1", "queued"), row("child", "w1", "waiting")]
            await conn.execute(insert(jobs).values([*stored, row("plain", None, "queued")]))
            await conn.execute(
                insert(job_dependencies).values(job_id="child", depends_on="root", workflow_id="w1")
            )
        await migrate(db)
        async with db.read() as conn:
            found = {r.id: r.depends for r in await conn.execute(select(jobs.c.id, jobs.c.depends))}
            diff = await conn.run_sync(_diff)
        assert found == {"root": False, "child": True, "plain": False} and diff == []
    finally:
        await db.dispose()
