"""Flow control as the doors see it: quotas at submit, and what limits hold right now.

Counts come from the jobs table (job_limits joined with jobs: the source of truth), never
from the concurrency slots; a rate bucket is read as stored, and refilled to now by the
caller (services/flow.py), never written here. docs/flow-control.md ("Quotas", "Seeing
limits").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import and_, case, func, literal, or_, select, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.flow_view import Bucket, KeyCount, LimitDefinition
from conveyor.domain.states import JobState
from conveyor.store.base import StoreBase
from conveyor.store.records import must
from conveyor.store.tables import flow_limits, job_limits, jobs, rate_buckets, users
from conveyor.store.transaction import Transaction

# A job in one of these states waits for its turn: what the queued quota counts.
WAITING_STATES = (JobState.SCHEDULED.value, JobState.QUEUED.value, JobState.RETRYING.value)
_RUNNING, _QUEUED = JobState.RUNNING.value, JobState.QUEUED.value


async def count_waiting(
    conn: AsyncConnection, dialect: str, caps: Mapping[str, int]
) -> dict[str, int]:
    """`FlowReads.waiting_counts` on `conn`, in its transaction (a service's, or a library
    caller's own: store/foreign.py)."""
    if not caps:
        return {}
    owners = sorted(caps)
    if dialect == "postgresql":
        lock = select(users.c.id).where(users.c.id.in_(owners)).order_by(users.c.id)
        await conn.execute(lock.with_for_update())
    counts = [
        select(literal(owner).label("owner"), func.count().label("n")).select_from(
            select(literal(1).label("one"))
            .where(jobs.c.owner_id == owner, jobs.c.state.in_(WAITING_STATES))
            .limit(caps[owner])
            .subquery()
        )
        for owner in owners
    ]
    statement = counts[0] if len(counts) == 1 else union_all(*counts)
    found = {row.owner: int(row.n) for row in await conn.execute(statement)}
    return {owner: found.get(owner, 0) for owner in owners}


class FlowReads(StoreBase):
    async def waiting_counts(self, tx: Transaction, caps: Mapping[str, int]) -> dict[str, int]:
        """Each owner's waiting jobs (scheduled, queued, retrying), counted up to its cap (a
        count never reads more rows than the cap), in `tx`.

        On PostgreSQL the owners' user rows are locked first, in id order, until `tx` ends:
        two transactions submitting for one owner take turns, and the second counts, in a
        statement that starts after the first committed (READ COMMITTED), what the first
        inserted. SQLite needs no lock: its writers take turns (BEGIN IMMEDIATE)."""
        return await count_waiting(tx.connection, self.dialect, caps)

    async def limit_definitions(self) -> list[LimitDefinition]:
        """Every limit flow_limits knows, by name (as many as the job types declare)."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(flow_limits).order_by(flow_limits.c.name))
            return [
                LimitDefinition(r.name, r.kind, r.max_running, r.rate_limit, r.per_s, r.burst)
                for r in rows
            ]

    async def key_counts(
        self,
        *,
        owner_id: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
        only: Sequence[tuple[str, str]] = (),
    ) -> list[KeyCount]:
        """Per limit and key with jobs running or ready: how many of each, ordered by (name,
        key), after the cursor `after`, at most `limit`; `owner_id` counts only that owner's
        jobs (and so shows only keys they have jobs under); `only` narrows to those keys."""
        running = func.sum(case((jobs.c.state == _RUNNING, 1), else_=0))
        ready = func.sum(case((jobs.c.state == _QUEUED, 1), else_=0))
        query = (
            select(job_limits.c.name, job_limits.c.key, running.label("r"), ready.label("q"))
            .select_from(job_limits.join(jobs, jobs.c.id == job_limits.c.job_id))
            .where(jobs.c.state.in_((_RUNNING, _QUEUED)))
            .group_by(job_limits.c.name, job_limits.c.key)
            .order_by(job_limits.c.name, job_limits.c.key)
            .limit(limit)
        )
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        if after is not None:
            name, key = after
            query = query.where(
                or_(
                    job_limits.c.name > name,
                    and_(job_limits.c.name == name, job_limits.c.key > key),
                )
            )
        if only:
            query = query.where(tuple_(job_limits.c.name, job_limits.c.key).in_(list(only)))
        async with self.db.read() as conn:
            return [KeyCount(r.name, r.key, int(r.r), int(r.q)) for r in await conn.execute(query)]

    async def buckets(self, keys: Sequence[tuple[str, str]]) -> list[Bucket]:
        """The stored rate buckets of these (name, key) pairs (read-only)."""
        if not keys:
            return []
        query = select(rate_buckets).where(
            tuple_(rate_buckets.c.name, rate_buckets.c.key).in_(list(keys))
        )
        async with self.db.read() as conn:
            return [
                Bucket(r.name, r.key, float(r.tokens), must(r.refreshed_at))
                for r in await conn.execute(query)
            ]

    async def job_limit_keys(self, job_id: str) -> list[tuple[str, str]]:
        """The (name, key) pairs a job is under."""
        query = (
            select(job_limits.c.name, job_limits.c.key)
            .where(job_limits.c.job_id == job_id)
            .order_by(job_limits.c.name)
        )
        async with self.db.read() as conn:
            return [(r.name, r.key) for r in await conn.execute(query)]

    async def running_count(self, owner_id: str, cap: int) -> int:
        """The owner's running jobs, counted up to `cap`."""
        inner = (
            select(literal(1).label("one"))
            .where(jobs.c.owner_id == owner_id, jobs.c.state == _RUNNING)
            .limit(cap)
            .subquery()
        )
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(inner)) or 0)

    async def owner_quota(self, owner_id: str) -> int | None:
        """The owner's own running quota (users.max_running; None: the settings')."""
        query = select(users.c.max_running).where(users.c.id == owner_id)
        async with self.db.read() as conn:
            value = await conn.scalar(query)
        return None if value is None else int(value)

    async def limit_totals(self) -> list[KeyCount]:
        """Per limit name (every key together): jobs running and ready, for the metrics."""
        running = func.sum(case((jobs.c.state == _RUNNING, 1), else_=0))
        ready = func.sum(case((jobs.c.state == _QUEUED, 1), else_=0))
        query = (
            select(job_limits.c.name, running.label("r"), ready.label("q"))
            .select_from(job_limits.join(jobs, jobs.c.id == job_limits.c.job_id))
            .where(jobs.c.state.in_((_RUNNING, _QUEUED)))
            .group_by(job_limits.c.name)
        )
        async with self.db.read() as conn:
            return [KeyCount(r.name, "", int(r.r), int(r.q)) for r in await conn.execute(query)]
