"""Reading jobs: one, many, a filtered list, a sorted page, and the dashboard's counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Text, cast, func, or_, select

from conveyor.domain.jobs import JobFilter, JobListPage, JobRecord, JobSort, ThroughputPoint
from conveyor.domain.queues import QueueCount
from conveyor.domain.states import JobState
from conveyor.errors import NotFound
from conveyor.store.base import StoreBase
from conveyor.store.records import aware, job_record, must
from conveyor.store.tables import jobs

# Ids per query of `get_many`: a whole batch (at most 1,000 jobs) is one query, well under
# SQLite's and PostgreSQL's limits on bound parameters (32,766 and 32,767).
_MANY = 1000


class JobReads(StoreBase):
    async def get(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        """One job; `owner_id` scopes the lookup (None: any owner, for admins and workers)."""
        query = select(jobs).where(jobs.c.id == job_id)
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such job", job_id=job_id)
        return job_record(row)

    async def get_many(
        self, job_ids: Sequence[str], owner_id: str | None = None
    ) -> list[JobRecord]:
        """The jobs of `job_ids`, in that order (repeats included), read in one query per
        `_MANY` ids; NotFound names any that are missing or `owner_id`'s not."""
        found: dict[str, JobRecord] = {}
        unique = list(dict.fromkeys(job_ids))
        async with self.db.read() as conn:
            for start in range(0, len(unique), _MANY):
                chunk = unique[start : start + _MANY]
                query = select(jobs).where(*scoped([jobs.c.id.in_(chunk)], owner_id))
                found.update((row.id, job_record(row)) for row in await conn.execute(query))
        missing = [job_id for job_id in unique if job_id not in found]
        if missing:
            raise NotFound("no such job", job_id=missing[0], missing=len(missing))
        return [found[job_id] for job_id in job_ids]

    async def list_jobs(
        self, where: JobFilter | None = None, *, after_id: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Newest first, cursor-paginated by id (ids are time-ordered)."""
        query = select(jobs).where(*self.filter_clauses(where or JobFilter()))
        if after_id is not None:
            query = query.where(jobs.c.id < after_id)
        query = query.order_by(jobs.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [job_record(row) for row in await conn.execute(query)]

    def filter_clauses(self, where: JobFilter) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if where.owner_id is not None:
            clauses.append(jobs.c.owner_id == where.owner_id)
        if where.states:
            clauses.append(jobs.c.state.in_([s.value for s in where.states]))
        if where.queue is not None:
            clauses.append(jobs.c.queue == where.queue)
        if where.type is not None:
            clauses.append(jobs.c.type == where.type)
        if where.tag is not None:
            clauses.append(self.driver.has_tag(where.tag))
        if where.created_after is not None:
            clauses.append(jobs.c.created_at >= where.created_after)
        if where.created_before is not None:
            clauses.append(jobs.c.created_at < where.created_before)
        if where.text:
            clauses.append(_contains_text(where.text))
        return clauses

    async def page_jobs(
        self, where: JobFilter, order: JobSort, *, offset: int = 0, limit: int = 50
    ) -> JobListPage:
        """One offset page in `order` (missing times last), and how many jobs match in all."""
        clauses = self.filter_clauses(where)
        column, tiebreak = jobs.c[order.key], jobs.c.id
        if order.descending:
            ordering = [column.desc().nulls_last(), tiebreak.desc()]
        else:
            ordering = [column.asc().nulls_last(), tiebreak.asc()]
        query = select(jobs).where(*clauses).order_by(*ordering).offset(offset).limit(limit)
        count = select(func.count()).select_from(jobs).where(*clauses)
        async with self.db.read() as conn:
            total = await conn.scalar(count)
            items = [job_record(row) for row in await conn.execute(query)]
        return JobListPage(items, int(total or 0))

    async def throughput(
        self, since: datetime, owner_id: str | None = None
    ) -> list[ThroughputPoint]:
        """Jobs finished per minute since `since`, completed and failed."""
        minute = self.driver.minute(jobs.c.finished_at).label("minute")
        query = (
            select(minute, jobs.c.state, func.count())
            .where(
                jobs.c.finished_at >= since,
                jobs.c.state.in_([JobState.COMPLETED.value, JobState.FAILED.value]),
            )
            .group_by(minute, jobs.c.state)
        )
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        points: dict[datetime, dict[str, int]] = {}
        for value, state, count in rows:
            points.setdefault(must(value), {})[state] = count
        return [
            ThroughputPoint(m, c.get("completed", 0), c.get("failed", 0))
            for m, c in sorted(points.items())
        ]

    async def enqueued_per_minute(
        self, since: datetime, owner_id: str | None = None
    ) -> dict[datetime, int]:
        """Jobs created per minute since `since` (those not pruned yet), by minute."""
        minute = self.driver.minute(jobs.c.created_at).label("minute")
        query = select(minute, func.count()).where(jobs.c.created_at >= since).group_by(minute)
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {must(value): count for value, count in rows}

    async def counts(self, owner_id: str | None = None) -> list[QueueCount]:
        query = select(
            jobs.c.queue,
            jobs.c.state,
            func.count(),
            func.min(jobs.c.created_at),
            func.min(jobs.c.run_at),
        ).group_by(jobs.c.queue, jobs.c.state)
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            QueueCount(row[0], JobState(row[1]), row[2], aware(row[3]), aware(row[4]))
            for row in sorted(rows, key=lambda r: (r[0], r[1]))
        ]


def scoped(guard: list[ColumnElement[bool]], owner_id: str | None) -> list[ColumnElement[bool]]:
    """`guard`, limited to one owner's jobs unless `owner_id` is None (admins, workers)."""
    return guard if owner_id is None else [*guard, jobs.c.owner_id == owner_id]


_LIKE_ESCAPE = "\\"


def _contains_text(text: str) -> ColumnElement[bool]:
    """The id or the payload's JSON text contains `text`, in any case; % and _ are literal.

    SQLite keeps JSON as written by `json.dumps`, non-ASCII characters as `\\uXXXX`: the
    search also looks for that spelling (PostgreSQL's jsonb text has the characters)."""
    payload = cast(jobs.c.payload, Text)
    clauses = [jobs.c.id.ilike(_like(text), escape=_LIKE_ESCAPE)]
    clauses.append(payload.ilike(_like(text), escape=_LIKE_ESCAPE))
    if not text.isascii():
        spelled = "".join(c if c.isascii() else json.dumps(c)[1:-1] for c in text)
        clauses.append(payload.ilike(_like(spelled), escape=_LIKE_ESCAPE))
    return or_(*clauses)


def _like(text: str) -> str:
    """A LIKE pattern that matches `text` anywhere, its %, _ and \\ taken literally."""
    escaped = text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
    escaped = escaped.replace("%", _LIKE_ESCAPE + "%").replace("_", _LIKE_ESCAPE + "_")
    return f"%{escaped}%"
