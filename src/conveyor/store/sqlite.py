"""The SQLite queue backend: one writer per process under BEGIN IMMEDIATE, JSON-array batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiosqlite
from sqlalchemy import ColumnElement, Row, and_, exists, func, literal, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, Outcome
from conveyor.store import events as outbox
from conveyor.store.backend import (
    Callback,
    Leadership,
    Listener,
    QueueBackend,
    claimed_job,
    event_data,
)
from conveyor.store.database import Database
from conveyor.store.sql import CLAIM_COLUMNS, RETURNING_CLAIM, typed
from conveyor.store.tables import jobs, queue_pauses, schedule_fires
from conveyor.store.types import sqlite_time

log = logging.getLogger("conveyor.store.sqlite")

# How often an idle process looks for commits made by other processes.
CROSS_PROCESS_POLL = 0.02

_CLAIM_TEMPLATE = """
    UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = :worker,
        started_at = :now, lease_expires_at = :lease
    WHERE id IN (
        SELECT id FROM jobs
        WHERE state = 'queued' AND queue {test} (SELECT value FROM json_each(:queues))
            AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = jobs.queue)
        ORDER BY priority DESC, run_at, id
        LIMIT :limit
    )
    RETURNING {returning}
"""
_CLAIM = typed(
    _CLAIM_TEMPLATE.format(test="IN", returning=RETURNING_CLAIM),
    times=("now", "lease"),
    columns=CLAIM_COLUMNS,
)
_CLAIM_ANY = typed(
    _CLAIM_TEMPLATE.format(test="NOT IN", returning=RETURNING_CLAIM),
    times=("now", "lease"),
    columns=CLAIM_COLUMNS,
)

_RETURNING_EVENT = "jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt"
_FENCE = (
    "jobs.id = v.id AND jobs.state = 'running' AND jobs.worker_id = :worker "
    "AND jobs.attempt = v.attempt"
)

_COMPLETE = typed(
    f"""
    WITH v AS (
        SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS result
        FROM json_each(:batch)
    )
    UPDATE jobs SET state = 'completed', result = v.result, progress = 100,
        finished_at = :now, lease_expires_at = NULL
    FROM v WHERE {_FENCE}
    RETURNING {_RETURNING_EVENT}
    """,
    times=("now",),
)

_RETRY = typed(
    f"""
    WITH v AS (
        SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS error,
            value ->> 3 AS run_at
        FROM json_each(:batch)
    )
    UPDATE jobs SET state = 'retrying', run_at = v.run_at,
        errors = json_insert(jobs.errors, '$[#]', json(v.error)),
        worker_id = NULL, lease_expires_at = NULL
    FROM v WHERE {_FENCE}
    RETURNING {_RETURNING_EVENT}
    """
)

_FAIL = typed(
    f"""
    WITH v AS (
        SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS error,
            value -> 3 AS result
        FROM json_each(:batch)
    )
    UPDATE jobs SET state = 'failed', finished_at = :now, lease_expires_at = NULL,
        errors = json_insert(jobs.errors, '$[#]', json(v.error)), result = v.result
    FROM v WHERE {_FENCE}
    RETURNING {_RETURNING_EVENT}
    """,
    times=("now",),
)

_RESCUE = typed(
    """
    UPDATE jobs SET
        state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
        finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE :now END,
        errors = json_insert(errors, '$[#]', json_object(
            'attempt', attempt, 'at', :now_iso, 'type', 'LeaseExpired',
            'message', 'the worker running this job stopped heartbeating',
            'worker_id', worker_id)),
        worker_id = NULL, lease_expires_at = NULL
    WHERE id IN (
        SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < :now
        ORDER BY lease_expires_at LIMIT :limit
    )
    RETURNING id, state, queue, owner_id, type, attempt
    """,
    times=("now",),
)

_LEAD = typed(
    """
    INSERT INTO leader_leases (name, holder, expires_at) VALUES (:name, :holder, :expires)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < :now
    RETURNING holder
    """,
    times=("now", "expires"),
)
_UNLEAD = typed("DELETE FROM leader_leases WHERE name = :name AND holder = :holder")


_STATE = {ev.COMPLETED: "completed", ev.RETRYING: "retrying", ev.FAILED: "failed"}


class _LocalBus:
    """In-process wake-ups, per database file: enqueue and cancel reach this process at once."""

    def __init__(self) -> None:
        self.jobs: set[Callback] = set()
        self.cancels: set[Callback] = set()

    def emit(self, targets: set[Callback], value: str) -> None:
        for callback in list(targets):
            callback(value)


_buses: dict[str, _LocalBus] = defaultdict(_LocalBus)


class SqliteBackend(QueueBackend):
    dialect = "sqlite"

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._bus = _buses[db.url]
        self.path = make_url(db.url).database or ":memory:"

    def _insert(self) -> Any:
        return sqlite_insert(jobs)

    def _xid(self) -> ColumnElement[Any]:
        return literal(0)  # one writer: commit order is id order

    def _horizon(self) -> ColumnElement[Any] | None:
        return None

    def _has_tag(self, tag: str) -> ColumnElement[bool]:
        each = func.json_each(jobs.c.tags).table_valued("value")
        return exists(select(1).select_from(each).where(each.c.value == tag))

    def _minute(self, column: Any) -> ColumnElement[Any]:
        return func.substr(column, 1, 16) + literal(":00")

    def _insert_fire(self) -> Any:
        return sqlite_insert(schedule_fires)

    def _insert_pause(self) -> Any:
        return sqlite_insert(queue_pauses)

    def _in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        """Just the rows of `pick`: writers take turns (BEGIN IMMEDIATE), so no two wait on
        each other's rows and no lock order is needed."""
        return and_(*pick)

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_s: float,
        *,
        exclude: Sequence[str] = (),
    ) -> list[ClaimedJob]:
        if limit <= 0 or not queues:
            return []
        now = utcnow()
        statement, names = (_CLAIM_ANY, list(exclude)) if "*" in queues else (_CLAIM, list(queues))
        params = {
            "worker": worker_id,
            "now": now,
            "lease": now + timedelta(seconds=lease_s),
            "queues": json.dumps(names),
            "limit": limit,
        }
        async with self.db.write() as conn:
            rows = (await conn.execute(statement, params)).all()
            data = {"worker_id": worker_id}
            await self._log(
                conn, [outbox.event_row(ev.STARTED, r, "running", now, data) for r in rows]
            )
        return [claimed_job(row) for row in rows]

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        if not outcomes:
            return set()
        async with self.db.write() as conn:
            return await self._finish(conn, worker_id, outcomes, utcnow())

    async def _finish(
        self, conn: AsyncConnection, worker_id: str, outcomes: Sequence[Outcome], now: datetime
    ) -> set[str]:
        done, retry, failed = [], [], []
        for o in outcomes:
            error = o.error.as_entry(o.attempt, now, worker_id) if o.error else None
            if o.kind == "completed":
                done.append([o.job_id, o.attempt, o.result])
            elif o.kind == "retry":
                assert o.retry_at is not None
                retry.append([o.job_id, o.attempt, error, sqlite_time(o.retry_at)])
            else:
                failed.append([o.job_id, o.attempt, error, o.result])
        accepted: set[str] = set()
        by_id = {o.job_id: o for o in outcomes}
        kinds = (
            (_COMPLETE, done, ev.COMPLETED),
            (_RETRY, retry, ev.RETRYING),
            (_FAIL, failed, ev.FAILED),
        )
        for statement, batch, kind in kinds:
            if not batch:
                continue
            params = {"batch": json.dumps(batch), "worker": worker_id, "now": now}
            rows = (await conn.execute(statement, params)).all()
            accepted.update(row.id for row in rows)
            await self._log(
                conn,
                [
                    outbox.event_row(kind, r, _STATE[kind], now, event_data(by_id[r.id]))
                    for r in rows
                ],
            )
        return accepted

    async def _rescue(self, conn: AsyncConnection, now: datetime, limit: int) -> Sequence[Row[Any]]:
        params = {"now": now, "now_iso": now.isoformat(), "limit": limit}
        return (await conn.execute(_RESCUE, params)).all()

    async def _notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        for queue in queues:
            self._bus.emit(self._bus.jobs, queue)

    async def _notify_cancel(self, conn: AsyncConnection, job_id: str) -> None:
        self._bus.emit(self._bus.cancels, job_id)

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener:
        listener = _SqliteListener(self, on_jobs, on_cancel)
        await listener.start()
        return listener

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        return _LeaseLeadership(self.db, name, holder, ttl)

    def _tell_other_processes(self) -> None:
        """Nothing to send: other processes watch `PRAGMA data_version`."""

    async def _listen_events(self, on_events: Callable[[], None]) -> Listener:
        """Other processes' commits, seen by the data_version watch (this process's own
        commits ring the in-process bell)."""
        listener = _SqliteListener(self, lambda _queue: on_events(), lambda _job: None)
        await listener.start()
        return listener


class _SqliteListener(Listener):
    """In-process callbacks, plus a watch on PRAGMA data_version for other processes' commits."""

    def __init__(self, backend: SqliteBackend, on_jobs: Callback, on_cancel: Callback) -> None:
        self._backend = backend
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        bus = self._backend._bus
        bus.jobs.add(self._on_jobs)
        bus.cancels.add(self._on_cancel)
        self._task = asyncio.create_task(self._watch(), name="sqlite-data-version")

    async def _watch(self) -> None:
        # Its own autocommit connection: inside a transaction data_version would be frozen.
        async with aiosqlite.connect(self._backend.path, isolation_level=None) as conn:
            last = None
            while True:
                async with conn.execute("PRAGMA data_version") as cursor:
                    row = await cursor.fetchone()
                version = row[0] if row else None
                if last is not None and version != last:
                    self._on_jobs("*")
                last = version
                await asyncio.sleep(CROSS_PROCESS_POLL)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        bus = self._backend._bus
        bus.jobs.discard(self._on_jobs)
        bus.cancels.discard(self._on_cancel)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _LeaseLeadership(Leadership):
    """Leadership as a row with an expiry, renewed by its holder: SQLite has no advisory locks."""

    def __init__(self, db: Database, name: str, holder: str, ttl: float) -> None:
        self._db, self._name, self._holder, self._ttl = db, name, holder, ttl

    async def acquire(self) -> bool:
        now = utcnow()
        params = {
            "name": self._name,
            "holder": self._holder,
            "now": now,
            "expires": now + timedelta(seconds=self._ttl),
        }
        async with self._db.write() as conn:
            return (await conn.execute(_LEAD, params)).one_or_none() is not None

    async def release(self) -> None:
        async with self._db.write() as conn:
            await conn.execute(_UNLEAD, {"name": self._name, "holder": self._holder})
