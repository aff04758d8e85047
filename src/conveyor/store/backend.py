"""The queue backend: every queue operation by name; SQL shared by both databases lives here.

Dialect-specific statements (claim, batched finishes, rescue, wake-ups, leadership) are the
abstract hooks that `sqlite.py` and `postgres.py` fill in. Every transition is one statement
guarded by the expected state (and, for a worker's own jobs, by worker id and attempt).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Text, cast, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import (
    BulkAction,
    BulkResult,
    ClaimedJob,
    Enqueued,
    JobFilter,
    JobListPage,
    JobRecord,
    JobSort,
    NewJob,
    Outcome,
    RescueReport,
    ThroughputPoint,
)
from conveyor.domain.queues import PausedQueue, QueueCount
from conveyor.domain.schedules import NewSchedule, ScheduleRecord
from conveyor.domain.states import CANCELLABLE, USER_RETRYABLE, JobState, check_transition
from conveyor.domain.workers import JobRef, WorkerInfo
from conveyor.errors import Conflict, IllegalTransition, NotFound
from conveyor.store import events as outbox
from conveyor.store.database import Database, after_commit
from conveyor.store.tables import (
    events,
    jobs,
    queue_pauses,
    schedule_fires,
    schedules,
    sink_cursors,
    workers,
)
from conveyor.store.wake import EventWatch, Pace, bells
from conveyor.store.webhooks import callback_rows, record_callbacks

Callback = Callable[[str], None]


class Listener(ABC):
    """A running subscription to wake-ups; `task_alive` lets the worker notice it died."""

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None: ...


class Leadership(ABC):
    """Who runs maintenance (promotion, cron, rescue, pruning) right now."""

    @abstractmethod
    async def acquire(self) -> bool:
        """Try to be (or stay) leader; True while we are."""

    @abstractmethod
    async def release(self) -> None: ...


class QueueBackend(ABC):
    """Every queue operation, by name. Instances are per process and safe to share."""

    dialect: str

    def __init__(self, db: Database) -> None:
        self.db = db
        self._bell = bells[db.url]
        self._watch: EventWatch | None = None

    # ---- dialect hooks -------------------------------------------------------------------
    @abstractmethod
    async def _rescue(
        self, conn: AsyncConnection, now: datetime, limit: int
    ) -> Sequence[Row[Any]]: ...

    @abstractmethod
    async def _notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        """Wake idle workers of these queues once this transaction commits."""

    @abstractmethod
    async def _notify_cancel(self, conn: AsyncConnection, job_id: str) -> None: ...

    @abstractmethod
    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener: ...

    @abstractmethod
    def leadership(self, name: str, holder: str, ttl: float) -> Leadership: ...

    @abstractmethod
    def _insert(self) -> Any:
        """The dialect's INSERT construct (it knows ON CONFLICT)."""

    @abstractmethod
    def _xid(self) -> ColumnElement[Any]:
        """The writing transaction's id, stored with each event (see store/events.py)."""

    @abstractmethod
    def _horizon(self) -> ColumnElement[Any] | None:
        """Events of transactions below this are all committed (None: no limit needed)."""

    @abstractmethod
    def _in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        """The rows of `pick`, for a write that changes several jobs rows: on PostgreSQL
        locked first in one global order (`locked_in_id_order`). The write keeps its own
        fence (state, worker, owner) as well."""

    def _update_locked(self, fence: Sequence[ColumnElement[bool]]) -> Update:
        """An UPDATE of the jobs `fence` picks, their rows locked in `_in_lock_order`."""
        return update(jobs).where(self._in_lock_order(fence), *fence)

    async def _log(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        await outbox.record(conn, self._xid(), rows)
        if rows:
            after_commit(conn, self._events_committed)

    # ---- event wake-ups (store/wake.py) --------------------------------------------------------
    @abstractmethod
    async def _listen_events(self, on_events: Callable[[], None]) -> Listener:
        """Call `on_events` when another process committed events (maybe a little early)."""

    @abstractmethod
    def _tell_other_processes(self) -> None:
        """After a commit that wrote events: wake other processes' readers (if they need it)."""

    def _events_committed(self, *, others: bool = True) -> None:
        self._bell.ring()
        if others:
            self._tell_other_processes()

    def event_wakeups(self, min_gap: float = 0.0) -> AbstractAsyncContextManager[Pace]:
        """`async with backend.event_wakeups() as pace:` then `await pace.wait(poll, found=...)`
        between reads of the outbox: returns soon after new events commit, anywhere, but
        not sooner than `min_gap` after the previous wait (many readers, busy outbox)."""
        if self._watch is None:
            self._watch = EventWatch(self._bell, self._listen_events)
        return self._watch.pace(min_gap)

    # ---- transactions ----------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction callers may enqueue into alongside their own statements."""
        async with self.db.write() as conn:
            yield conn

    def _use(self, conn: AsyncConnection | None) -> AbstractAsyncContextManager[AsyncConnection]:
        if conn is not None:
            return _borrowed(conn)
        return self.db.write()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
        await self.db.dispose()

    # ---- enqueue ---------------------------------------------------------------------------
    async def enqueue(
        self, new_jobs: Sequence[NewJob], conn: AsyncConnection | None = None
    ) -> list[Enqueued]:
        """Insert jobs in one transaction (the caller's, if given); idempotency keys dedupe."""
        if not new_jobs:
            return []
        now = utcnow()
        rows = [_job_row(job, now) for job in new_jobs]
        async with self._use(conn) as c:
            stmt = (
                self._insert()
                .on_conflict_do_nothing(
                    index_elements=[jobs.c.owner_id, jobs.c.idempotency_key],
                    index_where=jobs.c.idempotency_key.isnot(None),
                )
                .returning(jobs.c.id)
            )
            inserted = {r.id for r in (await c.execute(stmt, rows)).all()}
            created = [_JobView.of(r) for r in rows if r["id"] in inserted]
            await self._log(c, [outbox.event_row(ev.CREATED, j, j.state, now) for j in created])
            await record_callbacks(c, callback_rows(new_jobs, inserted, now))
            existing = await self._existing_for(c, [j for j in new_jobs if j.id not in inserted])
            runnable = {r["queue"] for r in rows if r["id"] in inserted and r["state"] == "queued"}
            if runnable:
                await self._notify_jobs(c, runnable)
        out: list[Enqueued] = []
        for job, row in zip(new_jobs, rows, strict=True):
            if job.id in inserted:
                out.append(Enqueued(job.id, True, JobState(row["state"])))
            else:
                out.append(existing[(job.owner_id, job.idempotency_key or "")])
        return out

    async def _existing_for(
        self, conn: AsyncConnection, dupes: Sequence[NewJob]
    ) -> dict[tuple[str, str], Enqueued]:
        """The stored jobs the duplicates' idempotency keys name, in one query."""
        if not dupes:
            return {}
        keys: dict[str, set[str]] = {}
        for job in dupes:
            keys.setdefault(job.owner_id, set()).add(job.idempotency_key or "")
        named = [
            (jobs.c.owner_id == owner) & jobs.c.idempotency_key.in_(sorted(wanted))
            for owner, wanted in keys.items()
        ]
        query = select(jobs.c.id, jobs.c.state, jobs.c.owner_id, jobs.c.idempotency_key)
        rows = (await conn.execute(query.where(or_(*named)))).all()
        return {
            (row.owner_id, row.idempotency_key): Enqueued(row.id, False, JobState(row.state))
            for row in rows
        }

    # ---- the worker's operations -------------------------------------------------------------
    @abstractmethod
    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_s: float,
        *,
        exclude: Sequence[str] = (),
    ) -> list[ClaimedJob]:
        """Take up to `limit` queued jobs of these queues, highest priority first.

        `queues == ["*"]` takes from every queue except those in `exclude`.
        """

    @abstractmethod
    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Persist outcomes in one transaction; returns the ids accepted (the rest were fenced)."""

    async def heartbeat(self, worker_id: str, lease_s: float) -> set[str]:
        """Extend the leases of all this worker's running jobs; returns the ids it still owns."""
        now = utcnow()
        async with self.db.write() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(last_heartbeat_at=now)
            )
            mine = [jobs.c.worker_id == worker_id, jobs.c.state == JobState.RUNNING.value]
            result = await conn.execute(
                self._update_locked(mine)
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(jobs.c.id)
            )
            return {row.id for row in result}

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> set[str]:
        """Give running jobs back to the queue without spending their attempt (shutdown)."""
        if not job_ids:
            return set()
        fence = [
            jobs.c.id.in_(list(job_ids)),
            jobs.c.worker_id == worker_id,
            jobs.c.state == JobState.RUNNING.value,
        ]
        async with self.db.write() as conn:
            result = await conn.execute(
                self._update_locked(fence)
                .values(
                    state=JobState.QUEUED.value,
                    attempt=jobs.c.attempt - 1,
                    worker_id=None,
                    lease_expires_at=None,
                    started_at=None,
                )
                .returning(*_EVENT_COLUMNS)
            )
            rows = result.all()
            if rows:
                now = utcnow()
                data = {"reason": "released"}
                await self._log(
                    conn, [outbox.event_row(ev.QUEUED, r, "queued", now, data) for r in rows]
                )
                await self._notify_jobs(conn, {row.queue for row in rows})
        return {row.id for row in rows}

    async def set_progress(
        self, worker_id: str, job_id: str, attempt: int, percent: int, message: str | None
    ) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.worker_id == worker_id,
                    jobs.c.attempt == attempt,
                    jobs.c.state == JobState.RUNNING.value,
                )
                .values(progress=percent, progress_message=message)
                .returning(*_EVENT_COLUMNS)
            )
            row = result.one_or_none()
            if row is not None:
                data = {"percent": percent, "message": message}
                await self._log(
                    conn, [outbox.event_row(ev.PROGRESS, row, "running", utcnow(), data)]
                )
            return row is not None

    # ---- user operations ---------------------------------------------------------------------
    async def get(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        """One job; `owner_id` scopes the lookup (None: any owner, for admins and workers)."""
        query = select(jobs).where(jobs.c.id == job_id)
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such job", job_id=job_id)
        return _job_record(row)

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
                query = select(jobs).where(*_scoped([jobs.c.id.in_(chunk)], owner_id))
                found.update((row.id, _job_record(row)) for row in await conn.execute(query))
        missing = [job_id for job_id in unique if job_id not in found]
        if missing:
            raise NotFound("no such job", job_id=missing[0], missing=len(missing))
        return [found[job_id] for job_id in job_ids]

    async def cancel(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        guard = _scoped([jobs.c.id == job_id], owner_id)
        async with self.db.write() as conn:
            rows = await self._cancel_where(conn, guard, utcnow(), jobs.c)
        if rows:
            return _job_record(rows[0])
        current = await self.get(job_id, owner_id)
        check_transition(current.state, JobState.CANCELLED)
        raise Conflict("the job changed state; try again")  # pragma: no cover - a race

    async def retry(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        """A user's retry of a failed or cancelled job: queued again with fresh attempts."""
        guard = _scoped([jobs.c.id == job_id], owner_id)
        async with self.db.write() as conn:
            rows = await self._retry_where(conn, guard, utcnow(), jobs.c)
        if rows:
            return _job_record(rows[0])
        current = await self.get(job_id, owner_id)
        if current.state not in USER_RETRYABLE:
            raise IllegalTransition(
                f"only failed or cancelled jobs can be retried; this one is {current.state.value}",
                current=current.state.value,
                target=JobState.QUEUED.value,
            )
        raise Conflict("the job changed state; try again")  # pragma: no cover - a race

    async def _cancel_where(
        self,
        conn: AsyncConnection,
        guard: Sequence[ColumnElement[bool]],
        now: datetime,
        columns: Iterable[Any],
    ) -> Sequence[Row[Any]]:
        """Cancel the cancellable jobs among `guard`, tell them, and interrupt running ones."""
        fence = [*guard, jobs.c.state.in_(_CANCELLABLE_VALUES)]
        rows = (
            await conn.execute(
                self._update_locked(fence)
                .values(state=JobState.CANCELLED.value, finished_at=now, lease_expires_at=None)
                .returning(*columns)
            )
        ).all()
        await self._log(
            conn, [outbox.event_row(ev.CANCELLED, row, "cancelled", now) for row in rows]
        )
        for row in rows:
            if row.worker_id:
                await self._notify_cancel(conn, row.id)
        return rows

    async def _retry_where(
        self,
        conn: AsyncConnection,
        guard: Sequence[ColumnElement[bool]],
        now: datetime,
        columns: Iterable[Any],
    ) -> Sequence[Row[Any]]:
        """Queue the failed or cancelled jobs among `guard` again, with fresh attempts."""
        fence = [*guard, jobs.c.state.in_(_RETRYABLE_VALUES)]
        rows = (
            await conn.execute(
                self._update_locked(fence)
                .values(
                    state=JobState.QUEUED.value,
                    attempt=0,
                    run_at=now,
                    worker_id=None,
                    finished_at=None,
                    started_at=None,
                    result=None,
                    progress=0,
                    progress_message=None,
                )
                .returning(*columns)
            )
        ).all()
        data = {"reason": "retried"}
        await self._log(conn, [outbox.event_row(ev.QUEUED, r, "queued", now, data) for r in rows])
        if rows:
            await self._notify_jobs(conn, {row.queue for row in rows})
        return rows

    # ---- bulk actions ------------------------------------------------------------------------
    async def bulk_ids(
        self, action: BulkAction, ids: Sequence[str], owner_id: str | None, batch: int
    ) -> BulkResult:
        """`action` on these jobs, `batch` per transaction; others' and ineligible ones skip."""
        unique = list(dict.fromkeys(ids))
        changed = 0
        for start in range(0, len(unique), batch):
            changed += await self._bulk_batch(action, unique[start : start + batch], owner_id)
        return BulkResult(matched=len(unique), changed=changed, skipped=len(unique) - changed)

    async def bulk_where(self, action: BulkAction, where: JobFilter, batch: int) -> BulkResult:
        """`action` on every job the filter matches, walking ids in bounded batches.

        Each batch is read (ids and states only), then changed in its own short transaction,
        guarded again by state: a job that moved meanwhile is skipped, never forced.
        """
        clauses, allowed = self.filter_clauses(where), _BULK_STATES[action]
        matched = changed = 0
        after: str | None = None
        while True:
            query = select(jobs.c.id, jobs.c.state).where(*clauses).order_by(jobs.c.id)
            if after is not None:
                query = query.where(jobs.c.id > after)
            async with self.db.read() as conn:
                rows = (await conn.execute(query.limit(batch))).all()
            if not rows:
                break
            matched += len(rows)
            after = rows[-1].id
            eligible = [row.id for row in rows if row.state in allowed]
            if eligible:
                changed += await self._bulk_batch(action, eligible, where.owner_id)
        return BulkResult(matched=matched, changed=changed, skipped=matched - changed)

    async def _bulk_batch(self, action: BulkAction, ids: list[str], owner_id: str | None) -> int:
        """One transaction: the state change (and its events) for the eligible jobs of `ids`."""
        guard = _scoped([jobs.c.id.in_(ids)], owner_id)
        now = utcnow()
        async with self.db.write() as conn:
            if action == "cancel":
                return len(await self._cancel_where(conn, guard, now, _BULK_COLUMNS))
            if action == "retry":
                return len(await self._retry_where(conn, guard, now, _BULK_COLUMNS))
            fence = [*guard, jobs.c.state.in_(_TERMINAL_VALUES)]
            result = await conn.execute(delete(jobs).where(self._in_lock_order(fence), *fence))
            return int(result.rowcount)

    async def set_state(self, job_id: str, target: JobState) -> JobRecord:
        """An administrator's explicit move, still only along the state machine's edges.

        `running` is a worker's to set: a running job without a worker and a lease would
        never be rescued.
        """
        if target is JobState.RUNNING:
            check_transition((await self.get(job_id)).state, target)
            raise IllegalTransition("only a worker can start a job", target=target.value)
        if target is JobState.CANCELLED:
            return await self.cancel(job_id)
        if target is JobState.QUEUED:
            current = await self.get(job_id)
            if current.state in USER_RETRYABLE:
                return await self.retry(job_id)
        current = await self.get(job_id)
        check_transition(current.state, target)
        now = utcnow()
        values: dict[str, Any] = {"state": target.value}
        if target in (JobState.COMPLETED, JobState.FAILED):
            values.update(finished_at=now, worker_id=None, lease_expires_at=None)
        if target is JobState.QUEUED:
            values.update(run_at=now, worker_id=None, lease_expires_at=None)
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.state == current.state.value)
                    .values(**values)
                    .returning(*jobs.c)
                )
            ).one_or_none()
            if row is None:
                raise Conflict("the job changed state; try again")
            data = {"reason": "set by an administrator"}
            await self._log(conn, [outbox.event_row(target.value, row, target.value, now, data)])
            if target is JobState.QUEUED:
                await self._notify_jobs(conn, {row.queue})
        return _job_record(row)

    async def delete_finished(self, job_id: str, owner_id: str | None = None) -> None:
        guard = [jobs.c.id == job_id, jobs.c.state.in_(_TERMINAL_VALUES)]
        if owner_id is not None:
            guard.append(jobs.c.owner_id == owner_id)
        async with self.db.write() as conn:
            result = await conn.execute(delete(jobs).where(*guard))
        if result.rowcount == 0:
            current = await self.get(job_id, owner_id)
            raise Conflict(f"a {current.state.value} job cannot be deleted; cancel it first")

    async def list_jobs(
        self, where: JobFilter | None = None, *, after_id: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Newest first, cursor-paginated by id (ids are time-ordered)."""
        query = select(jobs).where(*self.filter_clauses(where or JobFilter()))
        if after_id is not None:
            query = query.where(jobs.c.id < after_id)
        query = query.order_by(jobs.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_job_record(row) for row in await conn.execute(query)]

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
            clauses.append(self._has_tag(where.tag))
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
            items = [_job_record(row) for row in await conn.execute(query)]
        return JobListPage(items, int(total or 0))

    @abstractmethod
    def _has_tag(self, tag: str) -> ColumnElement[bool]: ...

    @abstractmethod
    def _minute(self, column: Any) -> ColumnElement[Any]:
        """The column truncated to its minute (a time, or its sortable text on SQLite)."""

    async def throughput(
        self, since: datetime, owner_id: str | None = None
    ) -> list[ThroughputPoint]:
        """Jobs finished per minute since `since`, completed and failed."""
        minute = self._minute(jobs.c.finished_at).label("minute")
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
            points.setdefault(_must(value), {})[state] = count
        return [
            ThroughputPoint(m, c.get("completed", 0), c.get("failed", 0))
            for m, c in sorted(points.items())
        ]

    async def enqueued_per_minute(
        self, since: datetime, owner_id: str | None = None
    ) -> dict[datetime, int]:
        """Jobs created per minute since `since` (those not pruned yet), by minute."""
        minute = self._minute(jobs.c.created_at).label("minute")
        query = select(minute, func.count()).where(jobs.c.created_at >= since).group_by(minute)
        if owner_id is not None:
            query = query.where(jobs.c.owner_id == owner_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {_must(value): count for value, count in rows}

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
            QueueCount(row[0], JobState(row[1]), row[2], _aware(row[3]), _aware(row[4]))
            for row in sorted(rows, key=lambda r: (r[0], r[1]))
        ]

    # ---- maintenance -------------------------------------------------------------------------
    async def promote_due(self, limit: int = 1000) -> int:
        """Scheduled and retrying jobs whose time has come become queued."""
        now = utcnow()
        due = (
            select(jobs.c.id)
            .where(
                jobs.c.state.in_([JobState.SCHEDULED.value, JobState.RETRYING.value]),
                jobs.c.run_at <= now,
            )
            .order_by(jobs.c.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id.in_(due.scalar_subquery()),
                        jobs.c.state.in_([JobState.SCHEDULED.value, JobState.RETRYING.value]),
                    )
                    .values(state=JobState.QUEUED.value)
                    .returning(jobs.c.queue)
                )
            ).all()
            if rows:
                await self._notify_jobs(conn, {row.queue for row in rows})
        return len(rows)

    async def rescue_expired(self, limit: int = 1000) -> RescueReport:
        """Running jobs whose lease expired: back to queued, or failed when attempts are spent."""
        now = utcnow()
        async with self.db.write() as conn:
            rows = await self._rescue(conn, now, limit)
            data = {"reason": "lease expired"}
            await self._log(
                conn,
                [
                    outbox.event_row(
                        ev.FAILED if r.state == "failed" else ev.RETRYING, r, r.state, now, data
                    )
                    for r in rows
                ],
            )
            requeued = [r for r in rows if r.state == JobState.QUEUED.value]
            if requeued:
                await self._notify_jobs(conn, {r.queue for r in requeued})
        return RescueReport(
            requeued=[r.id for r in requeued],
            failed=[r.id for r in rows if r.state == JobState.FAILED.value],
            labels={r.id: (r.queue, r.type) for r in rows},
            attempts={r.id: r.attempt for r in rows},
        )

    async def prune(
        self, completed_before: datetime, failed_before: datetime, batch: int = 10_000
    ) -> int:
        """Delete finished jobs past retention, one bounded batch per statement."""
        total = 0
        finished = (
            (jobs.c.state == JobState.COMPLETED.value) & (jobs.c.finished_at < completed_before)
        ) | (
            jobs.c.state.in_([JobState.FAILED.value, JobState.CANCELLED.value])
            & (jobs.c.finished_at < failed_before)
        )
        while True:
            victims = jobs.c.id.in_(
                select(jobs.c.id).where(finished).limit(batch).scalar_subquery()
            )
            async with self.db.write() as conn:
                result = await conn.execute(
                    delete(jobs).where(self._in_lock_order([victims, finished]), finished)
                )
                if total == 0:
                    await conn.execute(
                        delete(schedule_fires).where(schedule_fires.c.fire_at < failed_before)
                    )
            total += result.rowcount
            if result.rowcount < batch:
                return total

    # ---- events ------------------------------------------------------------------------------
    async def read_events(
        self,
        after: ev.Position,
        limit: int = 500,
        *,
        owner_id: str | None = None,
        job_id: str | None = None,
    ) -> list[ev.Event]:
        """Committed events after `after`, in an order no later commit can precede."""
        query = outbox.page_query(after, self._horizon(), limit, owner_id=owner_id, job_id=job_id)
        async with self.db.read() as conn:
            return [outbox.to_event(row) for row in await conn.execute(query)]

    async def cursor(self, sink: str) -> ev.Position:
        query = select(sink_cursors).where(sink_cursors.c.sink == sink)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return ev.Position() if row is None else ev.Position(row.xid, row.event_id)

    async def save_cursor(self, sink: str, position: ev.Position) -> None:
        values = {"xid": position.xid, "event_id": position.id, "updated_at": utcnow()}
        async with self.db.write() as conn:
            done = await conn.execute(
                update(sink_cursors).where(sink_cursors.c.sink == sink).values(**values)
            )
            if done.rowcount == 0:
                await conn.execute(insert(sink_cursors).values(sink=sink, **values))

    async def prune_events(
        self, before: datetime, sinks: Sequence[str] = (), batch: int = 10_000
    ) -> int:
        """Delete events older than `before` that every sink still in use has delivered, one
        bounded batch per statement (and transaction).

        In use: the named sinks (configured in the caller's process), whatever their cursor
        says, and every other sink whose cursor moved since `before`. A cursor left alone
        for longer than the retention belongs to a sink that was removed (or has failed for
        that long): it no longer holds events back, or they would be kept forever.
        """
        floor = await self._prune_floor(before, sinks)
        clauses = [events.c.created_at < before]
        if floor is not None:
            clauses.append(~outbox.after(floor))
        total = 0
        while True:
            victims = select(events.c.id).where(*clauses).limit(batch)
            async with self.db.write() as conn:
                result = await conn.execute(
                    delete(events).where(events.c.id.in_(victims.scalar_subquery()))
                )
            total += result.rowcount
            if result.rowcount < batch:
                return total

    async def _prune_floor(self, before: datetime, sinks: Sequence[str]) -> ev.Position | None:
        """The lowest cursor of the sinks in use (None: no sink holds anything back)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(sink_cursors))).all()
        known = {row.sink: row for row in rows}
        held = [ev.Position() for sink in sinks if sink not in known]  # nothing delivered yet
        for row in rows:
            if row.sink in sinks or _must(row.updated_at) >= before:
                held.append(ev.Position(row.xid, row.event_id))
        return min(held, key=lambda p: (p.xid, p.id), default=None)

    # ---- workers -----------------------------------------------------------------------------
    async def register_worker(
        self, worker_id: str, hostname: str, pid: int, queues: Sequence[str], concurrency: int
    ) -> None:
        now = utcnow()
        async with self.db.write() as conn:
            await conn.execute(
                insert(workers).values(
                    id=worker_id,
                    hostname=hostname,
                    pid=pid,
                    queues=list(queues),
                    concurrency=concurrency,
                    started_at=now,
                    last_heartbeat_at=now,
                    stopped_at=None,
                )
            )

    async def unregister_worker(self, worker_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(stopped_at=utcnow())
            )

    async def list_workers(self, alive_within: float | None = None) -> list[WorkerInfo]:
        query = select(workers).order_by(workers.c.started_at)
        if alive_within is not None:
            since = utcnow() - timedelta(seconds=alive_within)
            query = query.where(
                workers.c.stopped_at.is_(None), workers.c.last_heartbeat_at >= since
            )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_worker_info(r) for r in rows]

    async def workers_with_jobs(self, alive_within: float) -> list[tuple[WorkerInfo, list[JobRef]]]:
        """Live workers, each with the jobs it is running: one query, not one per worker."""
        since = utcnow() - timedelta(seconds=alive_within)
        running = (jobs.c.worker_id == workers.c.id) & (jobs.c.state == JobState.RUNNING.value)
        query = (
            select(
                workers,
                jobs.c.id.label("job_id"),
                jobs.c.type.label("job_type"),
                jobs.c.queue.label("job_queue"),
                jobs.c.started_at.label("job_started_at"),
            )
            .select_from(workers.outerjoin(jobs, running))
            .where(workers.c.stopped_at.is_(None), workers.c.last_heartbeat_at >= since)
            .order_by(workers.c.started_at, workers.c.id, jobs.c.started_at, jobs.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, tuple[WorkerInfo, list[JobRef]]] = {}
        for r in rows:
            _, refs = found.setdefault(r.id, (_worker_info(r), []))
            if r.job_id is not None:
                refs.append(JobRef(r.job_id, r.job_type, r.job_queue, _aware(r.job_started_at)))
        return list(found.values())

    async def prune_workers(self, older_than: datetime) -> int:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(workers).where(workers.c.last_heartbeat_at < older_than)
            )
        return result.rowcount

    # ---- queue pauses --------------------------------------------------------------------------
    async def pause_queue(self, queue: str, by: str | None = None) -> None:
        """No worker claims from `queue` once this commits; it still accepts jobs."""
        values = {"queue": queue, "paused_at": utcnow(), "paused_by": by}
        statement = self._insert_pause().values(**values)
        async with self.db.write() as conn:
            await conn.execute(statement.on_conflict_do_nothing(index_elements=["queue"]))

    async def resume_queue(self, queue: str) -> bool:
        """Let workers claim from `queue` again (woken at once); False if it was not paused."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(queue_pauses).where(queue_pauses.c.queue == queue))
            if result.rowcount:
                await self._notify_jobs(conn, {queue})
        return bool(result.rowcount)

    async def paused_queues(self) -> list[PausedQueue]:
        query = select(queue_pauses).order_by(queue_pauses.c.queue)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [PausedQueue(r.queue, _must(r.paused_at), r.paused_by) for r in rows]

    @abstractmethod
    def _insert_pause(self) -> Any: ...

    # ---- schedules ---------------------------------------------------------------------------
    async def create_schedule(
        self, new: NewSchedule, next_fire_at: datetime | None
    ) -> ScheduleRecord:
        now = utcnow()
        values = {
            "id": new.id,
            "owner_id": new.owner_id,
            "name": new.name,
            "cron": new.cron,
            "timezone": new.timezone,
            "job_type": new.job_type,
            "queue": new.queue,
            "payload": new.payload,
            "priority": new.priority,
            "max_attempts": new.max_attempts,
            "timeout_s": new.timeout_s,
            "tags": list(new.tags),
            "paused": new.paused,
            "next_fire_at": next_fire_at,
            "last_fire_at": None,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            taken = await conn.scalar(
                select(func.count()).where(
                    schedules.c.owner_id == new.owner_id, schedules.c.name == new.name
                )
            )
            if taken:
                raise Conflict(f"a schedule named {new.name!r} already exists", name=new.name)
            row = (
                await conn.execute(insert(schedules).values(**values).returning(*schedules.c))
            ).one()
        return _schedule_record(row)

    async def get_schedule(self, schedule_id: str, owner_id: str | None = None) -> ScheduleRecord:
        query = select(schedules).where(schedules.c.id == schedule_id)
        if owner_id is not None:
            query = query.where(schedules.c.owner_id == owner_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such schedule", schedule_id=schedule_id)
        return _schedule_record(row)

    async def list_schedules(self, owner_id: str | None = None) -> list[ScheduleRecord]:
        query = select(schedules).order_by(schedules.c.name)
        if owner_id is not None:
            query = query.where(schedules.c.owner_id == owner_id)
        async with self.db.read() as conn:
            return [_schedule_record(row) for row in await conn.execute(query)]

    async def update_schedule(
        self, schedule_id: str, owner_id: str | None, **values: Any
    ) -> ScheduleRecord:
        guard = [schedules.c.id == schedule_id]
        if owner_id is not None:
            guard.append(schedules.c.owner_id == owner_id)
        values["updated_at"] = utcnow()
        if "tags" in values:
            values["tags"] = list(values["tags"])
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(schedules).where(*guard).values(**values).returning(*schedules.c)
                )
            ).one_or_none()
        if row is None:
            raise NotFound("no such schedule", schedule_id=schedule_id)
        return _schedule_record(row)

    async def delete_schedule(self, schedule_id: str, owner_id: str | None = None) -> None:
        guard = [schedules.c.id == schedule_id]
        if owner_id is not None:
            guard.append(schedules.c.owner_id == owner_id)
        async with self.db.write() as conn:
            result = await conn.execute(delete(schedules).where(*guard))
        if result.rowcount == 0:
            raise NotFound("no such schedule", schedule_id=schedule_id)

    async def due_schedules(self, now: datetime, limit: int = 100) -> list[ScheduleRecord]:
        query = (
            select(schedules)
            .where(schedules.c.paused.is_(False), schedules.c.next_fire_at <= now)
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [_schedule_record(row) for row in await conn.execute(query)]

    async def fire_schedule(
        self, schedule: ScheduleRecord, fire_at: datetime, job: NewJob, next_fire_at: datetime
    ) -> bool:
        """Record the fire and enqueue its job atomically; False if this fire time already ran."""
        async with self.db.write() as conn:
            claimed = (
                await conn.execute(
                    self._insert_fire()
                    .values(
                        schedule_id=schedule.id,
                        fire_at=fire_at,
                        job_id=job.id,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(
                        index_elements=[schedule_fires.c.schedule_id, schedule_fires.c.fire_at]
                    )
                    .returning(schedule_fires.c.job_id)
                )
            ).one_or_none()
            if claimed is not None:
                await self.enqueue([job], conn=conn)
            await conn.execute(
                update(schedules)
                .where(
                    schedules.c.id == schedule.id, schedules.c.next_fire_at == schedule.next_fire_at
                )
                .values(last_fire_at=fire_at, next_fire_at=next_fire_at)
            )
        return claimed is not None

    @abstractmethod
    def _insert_fire(self) -> Any: ...

    async def fires_of(self, schedule_id: str) -> list[tuple[datetime, str]]:
        query = (
            select(schedule_fires.c.fire_at, schedule_fires.c.job_id)
            .where(schedule_fires.c.schedule_id == schedule_id)
            .order_by(schedule_fires.c.fire_at)
        )
        async with self.db.read() as conn:
            return [(_must(row.fire_at), row.job_id) for row in await conn.execute(query)]


# Ids per query of `get_many`: a whole batch (at most 1,000 jobs) is one query, well under
# SQLite's and PostgreSQL's limits on bound parameters (32,766 and 32,767).
_MANY = 1000
_TERMINAL_VALUES = [JobState.COMPLETED.value, JobState.FAILED.value, JobState.CANCELLED.value]
_CANCELLABLE_VALUES = sorted(s.value for s in CANCELLABLE)
_RETRYABLE_VALUES = sorted(s.value for s in USER_RETRYABLE)
# Which states each bulk action may change (the state machine's edges; delete: finished only).
_BULK_STATES: dict[str, frozenset[str]] = {
    "cancel": frozenset(_CANCELLABLE_VALUES),
    "retry": frozenset(_RETRYABLE_VALUES),
    "delete": frozenset(_TERMINAL_VALUES),
}
# What an event needs to know of its job, returned by the statements that change it.
_EVENT_COLUMNS = (jobs.c.id, jobs.c.owner_id, jobs.c.queue, jobs.c.type, jobs.c.attempt)
# ... and what a bulk change needs besides: whose worker to interrupt.
_BULK_COLUMNS = (*_EVENT_COLUMNS, jobs.c.worker_id)


@dataclass(frozen=True, slots=True)
class _JobView:
    """A job row as `outbox.event_row` reads it, from an insert's parameters."""

    id: str
    owner_id: str
    queue: str
    type: str
    attempt: int
    state: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> _JobView:
        return cls(row["id"], row["owner_id"], row["queue"], row["type"], 0, row["state"])


def locked_in_id_order(pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    """`jobs.id IN` the rows matching `pick`, locked first in id order by a CTE.

    Every write that changes several jobs rows in one statement takes its row locks in this
    one global order, so two such writes (a worker's heartbeat and its batched finish, a
    bulk cancel, a release) wait for each other instead of deadlocking: without it each
    locks rows in its own plan's order. FOR UPDATE under ORDER BY locks in the sorted
    order. The caller keeps its fence on the outer statement as well: a row that changed
    while we waited for its lock is re-checked there. (PostgreSQL's; SQLite has one writer
    at a time and no row locks, so it needs no order.)
    """
    locked = select(jobs.c.id).where(*pick).order_by(jobs.c.id).with_for_update().cte("locked")
    return jobs.c.id.in_(select(locked.c.id))


@asynccontextmanager
async def _borrowed(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    yield conn


def _scoped(guard: list[ColumnElement[bool]], owner_id: str | None) -> list[ColumnElement[bool]]:
    """`guard`, limited to one owner's jobs unless `owner_id` is None (admins, workers)."""
    return guard if owner_id is None else [*guard, jobs.c.owner_id == owner_id]


def _job_row(job: NewJob, now: datetime) -> dict[str, Any]:
    run_at = job.run_at or now
    state = JobState.SCHEDULED if run_at > now else JobState.QUEUED
    return {
        "id": job.id,
        "owner_id": job.owner_id,
        "queue": job.queue,
        "type": job.type,
        "payload": job.payload,
        "priority": job.priority,
        "state": state.value,
        "attempt": 0,
        "max_attempts": job.max_attempts,
        "run_at": run_at,
        "lease_expires_at": None,
        "worker_id": None,
        "timeout_s": job.timeout_s,
        "idempotency_key": job.idempotency_key,
        "progress": 0,
        "progress_message": None,
        "result": None,
        "errors": [],
        "tags": list(job.tags),
        "schedule_id": job.schedule_id,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
    }


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


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _must(value: Any) -> datetime:
    aware = _aware(value)
    assert aware is not None
    return aware


def event_data(outcome: Outcome) -> dict[str, Any]:
    """What an outcome's event tells subscribers: the result, or the error and next try."""
    if outcome.kind == "completed":
        return {"result": outcome.result}
    data: dict[str, Any] = {}
    if outcome.error is not None:
        data["error"] = {"type": outcome.error.type, "message": outcome.error.message}
    if outcome.retry_at is not None:
        data["retry_at"] = outcome.retry_at.isoformat()
    if outcome.result is not None:
        data["result"] = outcome.result
    return data


def claimed_job(row: Any) -> ClaimedJob:
    return ClaimedJob(
        id=row.id,
        type=row.type,
        queue=row.queue,
        payload=row.payload,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        timeout_s=row.timeout_s,
        priority=row.priority,
        owner_id=row.owner_id,
        idempotency_key=row.idempotency_key,
        run_at=_aware(row.run_at),
    )


def _job_record(row: Row[Any]) -> JobRecord:
    return JobRecord(
        id=row.id,
        owner_id=row.owner_id,
        queue=row.queue,
        type=row.type,
        payload=row.payload,
        priority=row.priority,
        state=JobState(row.state),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        run_at=_must(row.run_at),
        lease_expires_at=_aware(row.lease_expires_at),
        worker_id=row.worker_id,
        timeout_s=row.timeout_s,
        idempotency_key=row.idempotency_key,
        progress=row.progress,
        progress_message=row.progress_message,
        result=row.result,
        errors=list(row.errors or []),
        tags=list(row.tags or []),
        schedule_id=row.schedule_id,
        created_at=_must(row.created_at),
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
    )


def _worker_info(r: Row[Any]) -> WorkerInfo:
    return WorkerInfo(
        r.id,
        r.hostname,
        r.pid,
        list(r.queues),
        r.concurrency,
        _must(r.started_at),
        _must(r.last_heartbeat_at),
        _aware(r.stopped_at),
    )


def _schedule_record(row: Row[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        job_type=row.job_type,
        queue=row.queue,
        payload=row.payload,
        priority=row.priority,
        max_attempts=row.max_attempts,
        timeout_s=row.timeout_s,
        tags=list(row.tags or []),
        paused=bool(row.paused),
        next_fire_at=_aware(row.next_fire_at),
        last_fire_at=_aware(row.last_fire_at),
        created_at=_must(row.created_at),
        updated_at=_must(row.updated_at),
    )
