"""The PostgreSQL queue backend: SKIP LOCKED claims, array batches, LISTEN/NOTIFY, locks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Row
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.store.backend import Callback, Leadership, Listener, QueueBackend
from conveyor.store.database import Database, plain_postgres_dsn
from conveyor.store.records import Outcome
from conveyor.store.sql import CLAIM_COLUMNS, RETURNING_CLAIM, typed
from conveyor.store.tables import jobs, schedule_fires

log = logging.getLogger("conveyor.store.postgres")

JOBS_CHANNEL = "conveyor_jobs"
CANCEL_CHANNEL = "conveyor_cancel"
KEEPALIVE_SECONDS = 5.0

_CLAIM = typed(
    f"""
    WITH picked AS (
        SELECT id FROM jobs
        WHERE state = 'queued' AND queue = ANY(CAST(:queues AS text[]))
        ORDER BY priority DESC, run_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = :worker,
        started_at = :now, lease_expires_at = :lease
    FROM picked WHERE jobs.id = picked.id
    RETURNING {RETURNING_CLAIM}
    """,
    times=("now", "lease"),
    columns=CLAIM_COLUMNS,
)

_FENCE = (
    "jobs.id = v.id AND jobs.state = 'running' AND jobs.worker_id = :worker "
    "AND jobs.attempt = v.attempt"
)

_COMPLETE = typed(
    f"""
    UPDATE jobs SET state = 'completed', result = CAST(v.result AS jsonb), progress = 100,
        finished_at = :now, lease_expires_at = NULL
    FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:payloads AS text[]))
        AS v(id, attempt, result)
    WHERE {_FENCE}
    RETURNING jobs.id
    """,
    times=("now",),
)

_RETRY = typed(
    f"""
    UPDATE jobs SET state = 'retrying', run_at = v.run_at,
        errors = jobs.errors || jsonb_build_array(CAST(v.error AS jsonb)),
        worker_id = NULL, lease_expires_at = NULL
    FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:payloads AS text[]),
        CAST(:run_ats AS timestamptz[])) AS v(id, attempt, error, run_at)
    WHERE {_FENCE}
    RETURNING jobs.id
    """
)

_FAIL = typed(
    f"""
    UPDATE jobs SET state = 'failed', finished_at = :now, lease_expires_at = NULL,
        errors = jobs.errors || jsonb_build_array(CAST(v.error AS jsonb))
    FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:payloads AS text[]))
        AS v(id, attempt, error)
    WHERE {_FENCE}
    RETURNING jobs.id
    """,
    times=("now",),
)

_RESCUE = typed(
    """
    WITH expired AS (
        SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < :now
        ORDER BY lease_expires_at LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET
        state = CASE WHEN jobs.attempt < jobs.max_attempts THEN 'queued' ELSE 'failed' END,
        finished_at = CASE WHEN jobs.attempt < jobs.max_attempts THEN NULL ELSE :now END,
        errors = jobs.errors || jsonb_build_array(jsonb_build_object(
            'attempt', jobs.attempt, 'at', CAST(:now_iso AS text), 'type', 'LeaseExpired',
            'message', 'the worker running this job stopped heartbeating',
            'worker_id', jobs.worker_id)),
        worker_id = NULL, lease_expires_at = NULL
    FROM expired WHERE jobs.id = expired.id
    RETURNING jobs.id, jobs.state, jobs.queue
    """,
    times=("now",),
)

_NOTIFY = typed("SELECT pg_notify(:channel, :payload)")


class PostgresBackend(QueueBackend):
    dialect = "postgresql"

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.dsn = plain_postgres_dsn(db.url)

    def _insert(self) -> Any:
        return pg_insert(jobs)

    def _insert_fire(self) -> Any:
        return pg_insert(schedule_fires)

    async def _claim(
        self,
        conn: AsyncConnection,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        now: datetime,
        lease: datetime,
    ) -> Sequence[Row[Any]]:
        params = {
            "worker": worker_id,
            "now": now,
            "lease": lease,
            "queues": list(queues),
            "limit": limit,
        }
        return (await conn.execute(_CLAIM, params)).all()

    async def _finish(
        self, conn: AsyncConnection, worker_id: str, outcomes: Sequence[Outcome], now: datetime
    ) -> set[str]:
        accepted: set[str] = set()
        for kind, statement in (("completed", _COMPLETE), ("retry", _RETRY), ("failed", _FAIL)):
            chosen = [o for o in outcomes if o.kind == kind]
            if not chosen:
                continue
            params: dict[str, Any] = {
                "ids": [o.job_id for o in chosen],
                "attempts": [o.attempt for o in chosen],
                "payloads": [_payload_text(o, now, worker_id) for o in chosen],
                "worker": worker_id,
                "now": now,
            }
            if kind == "retry":
                params["run_ats"] = [o.retry_at for o in chosen]
            accepted.update(row.id for row in await conn.execute(statement, params))
        return accepted

    async def _rescue(self, conn: AsyncConnection, now: datetime, limit: int) -> Sequence[Row[Any]]:
        params = {"now": now, "now_iso": now.isoformat(), "limit": limit}
        return (await conn.execute(_RESCUE, params)).all()

    async def _notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        # Delivered at commit, once per queue per transaction: batching is the debounce.
        for queue in sorted(queues):
            await conn.execute(_NOTIFY, {"channel": JOBS_CHANNEL, "payload": queue})

    async def _notify_cancel(self, conn: AsyncConnection, job_id: str) -> None:
        await conn.execute(_NOTIFY, {"channel": CANCEL_CHANNEL, "payload": job_id})

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener:
        listener = _PgListener(self.dsn, on_jobs, on_cancel)
        await listener.start()
        return listener

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        return _AdvisoryLeadership(self.dsn, name)


def _payload_text(outcome: Outcome, now: datetime, worker_id: str) -> str | None:
    if outcome.kind == "completed":
        return None if outcome.result is None else json.dumps(outcome.result)
    assert outcome.error is not None
    return json.dumps(outcome.error.as_entry(outcome.attempt, now, worker_id))


class _PgListener(Listener):
    """LISTEN on a dedicated connection; a keepalive query notices when it drops."""

    def __init__(self, dsn: str, on_jobs: Callback, on_cancel: Callback) -> None:
        self._dsn = dsn
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(JOBS_CHANNEL, self._jobs)
        await self._conn.add_listener(CANCEL_CHANNEL, self._cancel)
        self._task = asyncio.create_task(self._keepalive(), name="pg-listener")

    def _jobs(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_jobs(payload)

    def _cancel(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_cancel(payload)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), KEEPALIVE_SECONDS)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"conveyor:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _AdvisoryLeadership(Leadership):
    """A session-level advisory lock on a dedicated connection: held until that session ends."""

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn = dsn
        self._key = _lock_key(name)
        self._conn: Any = None
        self._held = False

    async def acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._held = False
                self._conn = await asyncpg.connect(self._dsn)
            if self._held:
                await self._conn.fetchval("SELECT 1")  # still connected means still held
            else:
                self._held = bool(
                    await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("leadership check failed: %s", exc)
            await self._drop()
        return self._held

    async def release(self) -> None:
        if self._conn is not None and self._held:
            with contextlib.suppress(Exception):
                await self._conn.execute("SELECT pg_advisory_unlock($1)", self._key)
        await self._drop()

    async def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
        self._conn = None
