"""The PostgreSQL queue backend: SKIP LOCKED claims, array batches, LISTEN/NOTIFY, locks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import Boolean, ColumnElement, Row, cast, func, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, Enqueued, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import Unavailable
from conveyor.store.backend import Callback, Leadership, Listener, QueueBackend, locked_in_id_order
from conveyor.store.database import (
    POSTGRES_SESSION,
    Database,
    after_commit,
    is_outage,
    plain_postgres_dsn,
)
from conveyor.store.sql import RETURNING_CLAIM, typed
from conveyor.store.tables import jobs, queue_pauses, schedule_fires
from conveyor.store.webhooks import (
    PG_RECORD_CALLBACKS,
    callback_rows,
    pg_callback_args,
    record_callbacks,
)

log = logging.getLogger("conveyor.store.postgres")

JOBS_CHANNEL = "conveyor_jobs"
CANCEL_CHANNEL = "conveyor_cancel"
EVENTS_CHANNEL = "conveyor_events"
KEEPALIVE_SECONDS = 5.0
# Cross-process event wake-ups: at most one NOTIFY in flight per process, and at most one per
# this many seconds. Each NOTIFY is a statement and a commit that takes PostgreSQL's notify
# queue lock: one per claim or finish would double the hot path's statements and serialise
# its commits. At most 20 a second is lost in the noise (bench/notify_cost.py). The first
# change after a quiet spell is told at once; while busy, readers elsewhere wait at most this
# much longer.
EVENTS_NOTIFY_GAP = 0.05

# The hot path runs on a raw asyncpg pool: one prepared statement per operation whatever the
# batch size (arrays in, rows out), without SQLAlchemy's per-statement overhead.
# Every hot-path statement also writes its events: a data-modifying CTE runs in the same
# statement, so the change and its event commit together in one round trip.
_LOG_EVENTS = """
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), {type}, c.id, c.owner_id, c.queue, c.type, {state}, c.attempt,
        {data}, {at}
    FROM {source} AS c
"""

# Paused queues are skipped by a per-row probe of the tiny queue_pauses table. OFFSET 0 keeps
# it a filter on the claim index's ordered scan: as an anti-join the planner estimates one
# matching row and sorts every queued job instead (measured: 120 ms vs 2 ms at 20,000 queued).
_CLAIM_TEMPLATE = """
    WITH picked AS (
        SELECT id FROM jobs
        WHERE state = 'queued' AND {queue_test}
            AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = jobs.queue OFFSET 0)
        ORDER BY priority DESC, run_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = $3,
            started_at = $4, lease_expires_at = $5
        FROM picked WHERE jobs.id = picked.id
        RETURNING {returning}
    ),
    logged AS ({log})
    SELECT * FROM claimed
"""
_CLAIM_LOG = _LOG_EVENTS.format(
    type="'started'",
    state="'running'",
    data="jsonb_build_object('worker_id', $3::text)",
    at="$4",
    source="claimed",
)
_CLAIM = _CLAIM_TEMPLATE.format(
    queue_test="queue = ANY($1::text[])", returning=RETURNING_CLAIM, log=_CLAIM_LOG
)
_CLAIM_ANY = _CLAIM_TEMPLATE.format(
    queue_test="queue <> ALL($1::text[])", returning=RETURNING_CLAIM, log=_CLAIM_LOG
)

_FENCE = (
    "jobs.id = v.id AND jobs.state = 'running' AND jobs.worker_id = $1 AND jobs.attempt = v.attempt"
)

# A worker's rows, locked in id order before the batch changes them: every multi-row
# write on jobs locks in this one order (see `locked_in_id_order` in backend.py), so a
# finish and the same worker's heartbeat on another connection wait for each other
# instead of deadlocking.
_LOCK_MINE = """
    SELECT id FROM jobs
    WHERE id = ANY({ids}::text[]) AND state = 'running' AND worker_id = $1
    ORDER BY id
    FOR UPDATE
"""

_FINISH_TEMPLATE = """
    WITH locked AS ({lock}),
    changed AS (
        UPDATE jobs SET {set}
        FROM locked, unnest({arrays}) AS v({columns})
        WHERE jobs.id = locked.id AND {fence}
        RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt, {data} AS data
    ),
    logged AS ({log})
    SELECT id FROM changed
"""


def _finish_statement(kind: str, set_clause: str, arrays: str, columns: str, data: str) -> str:
    log = _LOG_EVENTS.format(
        type=f"'{kind}'", state=f"'{_STATE_OF[kind]}'", data="c.data", at="$2", source="changed"
    )
    return _FINISH_TEMPLATE.format(
        lock=_LOCK_MINE.format(ids="$3"),
        set=set_clause,
        arrays=arrays,
        columns=columns,
        fence=_FENCE,
        data=data,
        log=log,
    )


_STATE_OF = {"completed": "completed", "retrying": "retrying", "failed": "failed"}
_ERROR_DATA = (
    "jsonb_build_object('type', v.error::jsonb -> 'type', 'message', v.error::jsonb -> 'message')"
)

_COMPLETE = _finish_statement(
    "completed",
    "state = 'completed', result = v.result::jsonb, progress = 100, finished_at = $2, "
    "lease_expires_at = NULL",
    "$3::text[], $4::int[], $5::text[]",
    "id, attempt, result",
    "jsonb_build_object('result', v.result::jsonb)",
)
_RETRY = _finish_statement(
    "retrying",
    "state = 'retrying', run_at = v.run_at, "
    "errors = jobs.errors || jsonb_build_array(v.error::jsonb), "
    "worker_id = NULL, lease_expires_at = NULL",
    "$3::text[], $4::int[], $5::text[], $6::timestamptz[]",
    "id, attempt, error, run_at",
    f"jsonb_build_object('error', {_ERROR_DATA}, 'retry_at', v.run_at)",
)
_FAIL = _finish_statement(
    "failed",
    "state = 'failed', finished_at = $2, lease_expires_at = NULL, "
    "errors = jobs.errors || jsonb_build_array(v.error::jsonb), result = v.result::jsonb",
    "$3::text[], $4::int[], $5::text[], $6::text[]",
    "id, attempt, error, result",
    f"jsonb_strip_nulls(jsonb_build_object('error', {_ERROR_DATA}, 'result', v.result::jsonb))",
)

# A batch of several kinds is several statements in one transaction: it locks all its rows
# first, or each statement's locks would be in order only among themselves.
_LOCK_ALL = _LOCK_MINE.format(ids="$2")

_ENQUEUE = """
    WITH inserted AS (
        INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
            max_attempts, run_at, timeout_s, idempotency_key, progress, errors, tags,
            schedule_id, created_at)
        SELECT t.id, t.owner_id, t.queue, t.type, t.payload::jsonb, t.priority, t.state, 0,
            t.max_attempts, t.run_at, t.timeout_s, t.idempotency_key, 0, '[]'::jsonb,
            t.tags::jsonb, t.schedule_id, $13
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::int[], $9::timestamptz[], $10::float8[], $11::text[], $12::text[],
            $14::text[])
            AS t(id, owner_id, queue, type, payload, priority, state, max_attempts, run_at,
                timeout_s, idempotency_key, tags, schedule_id)
        ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id, queue, state, owner_id, type, 0 AS attempt
    ),
    logged AS (
        INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
            data, created_at)
        SELECT txid_current(), 'created', id, owner_id, queue, type, state, 0, NULL, $13
        FROM inserted
    ),
    -- One NOTIFY per queue that got runnable jobs, delivered when the statement commits.
    woken AS (
        SELECT pg_notify('conveyor_jobs', queue)
        FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued') AS q
    )
    SELECT id, (SELECT count(*) FROM woken) AS woken FROM inserted
"""

_EXISTING = """
    SELECT jobs.id, jobs.state, jobs.owner_id, jobs.idempotency_key FROM jobs
    JOIN unnest($1::text[], $2::text[]) AS k(owner_id, idempotency_key)
        ON jobs.owner_id = k.owner_id AND jobs.idempotency_key = k.idempotency_key
"""

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
    RETURNING jobs.id, jobs.state, jobs.queue, jobs.owner_id, jobs.type, jobs.attempt
    """,
    times=("now",),
)

_NOTIFY = typed("SELECT pg_notify(:channel, :payload)")


class PostgresBackend(QueueBackend):
    dialect = "postgresql"

    def __init__(self, db: Database, pool_size: int = 10) -> None:
        super().__init__(db)
        self.dsn = plain_postgres_dsn(db.url)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._pool_size = pool_size
        self._notifier = _Notifier(self)

    def _insert(self) -> Any:
        return pg_insert(jobs)

    def _xid(self) -> ColumnElement[Any]:
        return func.txid_current()

    def _horizon(self) -> ColumnElement[Any] | None:
        # Every transaction below the oldest running one has committed or aborted.
        return func.txid_snapshot_xmin(func.txid_current_snapshot())

    def _has_tag(self, tag: str) -> ColumnElement[bool]:
        wanted = cast(literal(json.dumps([tag])), JSONB)
        return jobs.c.tags.op("@>", return_type=Boolean)(wanted)

    def _minute(self, column: Any) -> ColumnElement[Any]:
        return func.date_trunc("minute", column)

    def _insert_fire(self) -> Any:
        return pg_insert(schedule_fires)

    def _insert_pause(self) -> Any:
        return pg_insert(queue_pauses)

    def _in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        return locked_in_id_order(pick)

    # ---- the hot path, on raw asyncpg ------------------------------------------------------
    async def _raw_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    command_timeout=60,
                    server_settings=POSTGRES_SESSION,
                )
        return self._pool

    @asynccontextmanager
    async def _raw(self, *, transaction: bool = False) -> AsyncIterator[Any]:
        """A pooled connection; a lost server surfaces as `Unavailable`.

        One statement runs in its own implicit transaction: one round trip and one commit.
        Only several statements that must commit together ask for `transaction`.
        """
        try:
            pool = await self._raw_pool()
            async with pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn
        except Exception as exc:
            if not is_outage(exc):
                raise
            raise Unavailable("the database is not reachable; nothing was changed") from exc

    async def enqueue(
        self, new_jobs: Sequence[NewJob], conn: AsyncConnection | None = None
    ) -> list[Enqueued]:
        if not new_jobs:
            return []
        now = utcnow()
        args = _enqueue_args(new_jobs, now)
        found: Sequence[Any]
        # Jobs with a callback_url add one side-table insert, in the same transaction; the
        # others stay one statement in its own implicit transaction.
        with_callbacks = any(job.callback_url for job in new_jobs)
        if conn is not None:  # inside the caller's SQLAlchemy transaction
            inserted = {r[0] for r in await conn.exec_driver_sql(_ENQUEUE, tuple(args))}
            await record_callbacks(conn, callback_rows(new_jobs, inserted, now))
            dupes = [j for j in new_jobs if j.id not in inserted]
            found = (await conn.exec_driver_sql(_EXISTING, _key_args(dupes))).all() if dupes else []
        else:
            async with self._raw(transaction=with_callbacks) as raw:
                inserted = {r[0] for r in await raw.fetch(_ENQUEUE, *args)}
                if with_callbacks:
                    rows = callback_rows(new_jobs, inserted, now)
                    await raw.execute(PG_RECORD_CALLBACKS, *pg_callback_args(rows, now))
                dupes = [j for j in new_jobs if j.id not in inserted]
                # The duplicates' rows are committed: ON CONFLICT waited for them.
                found = await raw.fetch(_EXISTING, *_key_args(dupes)) if dupes else []
        # A queued job's NOTIFY on the jobs channel (in the statement) wakes event readers
        # elsewhere too; only jobs scheduled for later need the events channel.
        others = any(state != "queued" for state in args[6])
        if conn is not None:
            after_commit(conn, functools.partial(self._events_committed, others=others))
        elif inserted:
            self._events_committed(others=others)
        existing = _existing(found)
        states = args[6]
        return [
            Enqueued(job.id, True, JobState(state))
            if job.id in inserted
            else existing[(job.owner_id, job.idempotency_key)]
            for job, state in zip(new_jobs, states, strict=True)
        ]

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
        lease = now + timedelta(seconds=lease_s)
        statement, names = (_CLAIM_ANY, list(exclude)) if "*" in queues else (_CLAIM, list(queues))
        async with self._raw() as raw:
            rows = await raw.fetch(statement, names, limit, worker_id, now, lease)
        if rows:
            self._events_committed()
        return [_claimed(row) for row in rows]

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        if not outcomes:
            return set()
        now = utcnow()
        accepted: set[str] = set()
        several = len({o.kind for o in outcomes}) > 1
        async with self._raw(transaction=several) as raw:
            if several:  # several statements: all their rows locked first, in id order
                await raw.execute(_LOCK_ALL, worker_id, [o.job_id for o in outcomes])
            for kind, statement in (("completed", _COMPLETE), ("retry", _RETRY), ("failed", _FAIL)):
                chosen = [o for o in outcomes if o.kind == kind]
                if not chosen:
                    continue
                args: list[Any] = [
                    worker_id,
                    now,
                    [o.job_id for o in chosen],
                    [o.attempt for o in chosen],
                    [_payload_text(o, now, worker_id) for o in chosen],
                ]
                if kind == "retry":
                    args.append([o.retry_at for o in chosen])
                elif kind == "failed":  # what a failed job did finish, if it says so
                    args.append([_json_or_none(o.result) for o in chosen])
                accepted.update(row[0] for row in await raw.fetch(statement, *args))
        if accepted:
            self._events_committed()
        return accepted

    async def close(self) -> None:
        await self._notifier.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().close()

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
        listener = _PgListener(self.dsn, {JOBS_CHANNEL: on_jobs, CANCEL_CHANNEL: on_cancel})
        await listener.start()
        return listener

    async def _listen_events(self, on_events: Callable[[], None]) -> Listener:
        def wake(_payload: str) -> None:
            on_events()

        listener = _PgListener(self.dsn, {EVENTS_CHANNEL: wake, JOBS_CHANNEL: wake})
        await listener.start()
        return listener

    def _tell_other_processes(self) -> None:
        self._notifier.poke()

    async def _notify_events(self) -> None:
        async with self._raw() as raw:
            await raw.execute(f"SELECT pg_notify('{EVENTS_CHANNEL}', '')")

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        return _AdvisoryLeadership(self.dsn, name)


def _enqueue_args(new_jobs: Sequence[NewJob], now: datetime) -> list[Any]:
    """Column arrays for _ENQUEUE ($13 is the shared created_at)."""
    columns: list[list[Any]] = [[] for _ in range(13)]
    for job in new_jobs:
        run_at = job.run_at or now
        state = JobState.SCHEDULED if run_at > now else JobState.QUEUED
        values = (
            job.id, job.owner_id, job.queue, job.type, json.dumps(job.payload), job.priority,
            state.value, job.max_attempts, run_at, job.timeout_s, job.idempotency_key,
            json.dumps(list(job.tags)), job.schedule_id,
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return [*columns[:12], now, columns[12]]


def _existing(rows: Sequence[Any]) -> dict[tuple[str, str | None], Enqueued]:
    return {(r[2], r[3]): Enqueued(r[0], False, JobState(r[1])) for r in rows}


def _key_args(jobs: Sequence[NewJob]) -> tuple[list[str], list[str | None]]:
    return [j.owner_id for j in jobs], [j.idempotency_key for j in jobs]


def _claimed(row: Any) -> ClaimedJob:
    return ClaimedJob(
        id=row[0],
        type=row[1],
        queue=row[2],
        payload=json.loads(row[3]),
        attempt=row[4],
        max_attempts=row[5],
        timeout_s=row[6],
        priority=row[7],
        owner_id=row[8],
        idempotency_key=row[9],
        run_at=row[10],
    )


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _payload_text(outcome: Outcome, now: datetime, worker_id: str) -> str | None:
    if outcome.kind == "completed":
        return _json_or_none(outcome.result)
    assert outcome.error is not None
    return json.dumps(outcome.error.as_entry(outcome.attempt, now, worker_id))


class _Notifier:
    """The debounced NOTIFY of `EVENTS_CHANNEL`, sent after commits from a task of its own."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        self._due = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send(), name="pg-notify")

    async def _send(self) -> None:
        while self._due:
            self._due = False
            try:
                await self._backend._notify_events()
            except Exception as exc:  # readers still have their poll
                log.debug("event NOTIFY failed: %s", exc)
                return
            await asyncio.sleep(EVENTS_NOTIFY_GAP)

    async def close(self) -> None:
        """Send what is due first: a short-lived process (`conveyor enqueue`) must not take
        its wake-up with it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _PgListener(Listener):
    """LISTEN on a dedicated connection; a keepalive query notices when it drops."""

    def __init__(self, dsn: str, channels: Mapping[str, Callback]) -> None:
        self._dsn = dsn
        self._channels = dict(channels)
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        for channel in self._channels:
            await self._conn.add_listener(channel, self._heard)
        self._task = asyncio.create_task(self._keepalive(), name="pg-listener")

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._channels[channel](payload)

    async def _keepalive(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # lands as the query completes, and this loop would then never end.
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                await self._conn.fetchval("SELECT 1")

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
