"""SQLite's statements: one writer per process under BEGIN IMMEDIATE, JSON-array batches.

SQLite has no data-modifying CTE, so a change's events are a second statement in its
transaction, built from the rows the change returned (store/events.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    ColumnElement,
    Table,
    and_,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob
from conveyor.store import admission
from conveyor.store import events as outbox
from conveyor.store.database import Database, after_commit
from conveyor.store.driver import (
    Callback,
    Claimed,
    Existing,
    Fence,
    FinishBatch,
    Inserted,
    Leadership,
    Listener,
    Said,
    StoredWorkflow,
    WorkflowInsert,
)
from conveyor.store.drivers.sqlite_dbapi import in_one_trip
from conveyor.store.drivers.sqlite_dbapi import rows as rows_of
from conveyor.store.drivers.sqlite_sessions import (
    LeaseLeadership,
    SqliteListener,
    WakeSockets,
    bus_of,
)
from conveyor.store.events import requeued_queues, rescued_events
from conveyor.store.records import aware, must
from conveyor.store.sql import load
from conveyor.store.tables import (
    jobs,
    workflows,
)
from conveyor.store.types import sqlite_time

_SQL = load(
    "sqlite",
    frozenset({"fair_heads", "claim_one", "claim_any", "complete", "retry", "fail", "rescue"})
    | frozenset({"claim_one_unprobed", "claim_any_unprobed"})
    | frozenset({"promote"})
    | frozenset({"claim_start", "limit_slots_hold", "record_events"})
    | frozenset({"enqueue", "job_callback", "job_limit", "keyed_jobs", "unique_jobs"})
    | frozenset({"rate_buckets_of", "rate_bucket_set", "heartbeat_worker", "heartbeat_leases"})
    | frozenset({"progress"})
    | frozenset({"try_lead", "unlead", "data_version"})
    | frozenset({"workflow_steps", "workflow_created", "workflow_edges"}),
)
_FINISH = {"completed": _SQL["complete"], "retry": _SQL["retry"], "failed": _SQL["fail"]}


# Every event's reading-order key: one writer, so commit order is id order.
ONE_WRITER_XID = literal(0)


class SqliteDriver:
    dialect = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._bus = bus_of(db.url)
        self.path = make_url(db.url).database or ":memory:"
        self._wake = WakeSockets(self.path)
        self._probing = 0  # claims left that probe their limited candidates' limits

    # ---- pieces of the shared Core statements -------------------------------------------
    def insert(self, table: Table) -> Any:
        return sqlite_insert(table)

    def xid(self) -> ColumnElement[Any]:
        return ONE_WRITER_XID

    async def lock_events(self, conn: AsyncConnection) -> None:
        return None  # one writer: nothing commits behind a reader

    async def horizon(self) -> int | None:
        return None

    def has_tag(self, tag: str) -> ColumnElement[bool]:
        each = func.json_each(jobs.c.tags).table_valued("value")
        return exists(select(1).select_from(each).where(each.c.value == tag))

    def minute(self, column: Any) -> ColumnElement[Any]:
        return func.substr(column, 1, 16) + literal(":00")

    def json_object_agg(self, key: Any, value: Any) -> ColumnElement[Any]:
        # json(): the value's stored text as JSON, not as a string
        return func.json_group_object(key, func.json(value), type_=JSON)

    def in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        """Just the rows of `pick`: writers take turns (BEGIN IMMEDIATE), so no two wait on
        each other's rows and no lock order is needed."""
        return and_(*pick)

    # ---- the hot path ---------------------------------------------------------------------
    async def insert_jobs(
        self,
        conn: AsyncConnection | None,
        rows: Sequence[dict[str, Any]],
        callbacks: Sequence[dict[str, Any]],
        created: str,
        synchronous: bool = True,
        limits: Sequence[dict[str, Any]] = (),
    ) -> Inserted:
        """`synchronous` is PostgreSQL's: the writer's `PRAGMA synchronous` holds for every
        write of the process, so a submit cannot relax it alone (docs/design.md)."""
        insert = Insert(rows, callbacks, created, limits)
        if conn is not None:  # a service's transaction: it goes on after the insert
            return await self._inserted(conn, insert, end=False)
        async with self.db.write() as own:
            return await self._inserted(own, insert, end=True)

    async def _inserted(self, conn: AsyncConnection, insert: Insert, end: bool) -> Inserted:
        done, runnable = await in_one_trip(conn, insert.run, end=end)
        if runnable:
            await self.notify_jobs(conn, runnable)
        return done

    async def insert_workflow(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> StoredWorkflow | None:
        found, runnable = await insert_workflow_with(conn, rows, created)
        if runnable:
            await self.notify_jobs(conn, runnable)
        return found

    async def insert_workflow_steps(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> None:
        runnable = await insert_steps_with(conn, rows, created)
        if runnable:
            await self.notify_jobs(conn, runnable)

    async def arm_claim(self) -> None:
        """Nothing to open ahead: `BEGIN IMMEDIATE` takes the write lock, which must not be
        held while idle, and costs no round trip."""

    async def disarm_claim(self) -> None:
        """Nothing armed."""

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        every_queue: bool,
        limit: int,
        lease: tuple[datetime, datetime],
        said: Said,
        early: Callable[[list[ClaimedJob]], None] | None = None,
    ) -> Claimed:
        probe = self._probing > 0
        ask = _Ask(worker_id, tuple(queues), every_queue, limit, lease, said, probe)
        async with self.db.write() as conn:
            claimed = await in_one_trip(conn, ask.trip, end=True)
        # Limited candidates picked without the probe while nothing is refused (sqlite.sql
        # `claim_one_unprobed`); after a refusal the next claims probe.
        refused = admission.PROBE_AFTER_REFUSAL if claimed.refused else 0
        self._probing = max(refused, self._probing - 1)
        # Told only once committed: the commit runs on aiosqlite's thread, so a handler that
        # started first and crashed the process could take the claim with it, and a job that
        # kills its worker would be claimed again for ever without spending an attempt.
        # (PostgreSQL's COMMIT is on the wire before any handler runs: drivers/postgres.py.)
        if early is not None and claimed:
            early(claimed)
        return claimed

    async def finish(
        self, worker_id: str, now: datetime, batches: Sequence[FinishBatch]
    ) -> set[str]:
        async with self.db.write() as conn:
            return await in_one_trip(conn, _Finish(worker_id, now, batches).run, end=True)

    async def heartbeat(self, worker_id: str, now: datetime, until: datetime) -> set[str]:
        """In one trip, BEGIN to COMMIT: a heartbeat a trip per statement held the write
        lock across event-loop turns, where a handler that blocks the loop could take it
        (docs/design.md "A blocked event loop")."""
        params = {"worker": worker_id, "now": sqlite_time(now), "until": sqlite_time(until)}

        def renew(raw: sqlite3.Connection) -> set[str]:
            raw.execute(_SQL["heartbeat_worker"], params)
            return {row[0] for row in raw.execute(_SQL["heartbeat_leases"], params)}

        async with self.db.write() as conn:
            return await in_one_trip(conn, renew, end=True)

    async def set_progress(
        self, fence: Fence, percent: int, message: str | None, said: Said, now: datetime
    ) -> bool:
        """In one trip, BEGIN to COMMIT, as the heartbeat: a handler reports progress while
        others run, and one of them that blocks the loop between two trips would hold the
        write lock (docs/design.md "A blocked event loop")."""
        worker_id, job_id, attempt = fence
        params = {
            "job": job_id, "worker": worker_id, "attempt": attempt, "percent": percent,
            "message": message,
        }  # fmt: skip

        def report(raw: sqlite3.Connection) -> bool:
            moved = rows_of(raw.execute(_SQL["progress"], params))
            record_events(raw, [outbox.said_row(said, row, now) for row in moved])
            return bool(moved)

        async with self.db.write() as conn:
            return await in_one_trip(conn, report, end=True)

    async def promote(self, now: datetime, limit: int) -> Sequence[Any]:
        """In one trip, BEGIN to COMMIT, as the rescue: every scheduler tick runs both, in
        the same process as handlers under `conveyor run` (docs/design.md "A blocked event
        loop")."""
        params = {"now": sqlite_time(now), "limit": limit}
        async with self.db.write() as conn:
            rows = await in_one_trip(
                conn, lambda raw: rows_of(raw.execute(_SQL["promote"], params)), end=True
            )
            if rows:
                await self.notify_jobs(conn, {row.queue for row in rows})
        return rows

    async def rescue(self, now: datetime, limit: int) -> Sequence[Any]:
        params = {"now": sqlite_time(now), "now_iso": now.isoformat(), "limit": limit}

        def take(raw: sqlite3.Connection) -> list[Any]:
            rows = rows_of(raw.execute(_SQL["rescue"], params))
            record_events(raw, rescued_events(rows, now))
            return rows

        async with self.db.write() as conn:
            rows = await in_one_trip(conn, take, end=True)
            if rows:
                await self.notify_jobs(conn, requeued_queues(rows))
        return rows

    # ---- wake-ups and leadership ------------------------------------------------------
    async def notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        """This process's workers at once (they claim once the write lock is free: after
        this commit); other processes' once it committed, by datagram (`WakeSockets`)."""
        for queue in queues:
            self._bus.emit(self._bus.jobs, queue)
        after_commit(conn, self._wake.ring)

    async def notify_cancel(self, conn: AsyncConnection, job_id: str) -> None:
        self._bus.emit(self._bus.cancels, job_id)

    def tell_other_processes(self) -> None:
        """Other processes' listeners rung (by datagram, once it committed: the caller's
        `after_commit`), as a commit that made jobs runnable rings them: a finish that
        released a workflow's steps or a limit's slot, an event a stream waits for."""
        self._wake.ring()

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener:
        listener = SqliteListener(self._bus, self.path, on_jobs, on_cancel, self._wake)
        await listener.start(_SQL["data_version"])
        return listener

    async def listen_events(self, on_events: Callable[[], None]) -> Listener:
        """Other processes' commits, seen by the data_version watch (this process's own
        commits ring the in-process bell)."""
        return await self.listen(lambda _queue: on_events(), lambda _job: None)

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        return LeaseLeadership(self.db, (_SQL["try_lead"], _SQL["unlead"]), name, holder, ttl)

    async def close(self) -> None:
        """Its wake-up sender (the engines are the Database's)."""
        self._wake.close()


def _from_now(lease: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """`lease` moved to start now if its start has passed, as long as it was."""
    start, end = lease
    now = utcnow()
    return (now, end + (now - start)) if now > start else lease


async def insert_with(
    conn: AsyncConnection,
    rows: Sequence[dict[str, Any]],
    callbacks: Sequence[dict[str, Any]],
    created: str,
    limits: Sequence[dict[str, Any]],
) -> tuple[Inserted, set[str]]:
    """`insert_jobs`'s statements in `conn`'s transaction (a service's, the writer's, or a
    library caller's own async connection to the file: store/foreign.py), in one trip to
    its thread; and the queues that got runnable jobs (their wake-up is the caller's:
    in-process, once it commits)."""
    return await in_one_trip(conn, Insert(rows, callbacks, created, limits).run)


class Insert(NamedTuple):
    """An enqueue's statements, run on a sqlite3 connection in its open transaction: the
    writer's thread (`in_one_trip`), or a library caller's sync connection (`run` itself)."""

    rows: Sequence[dict[str, Any]]
    callbacks: Sequence[dict[str, Any]]
    created: str
    limits: Sequence[dict[str, Any]]

    def run(self, conn: sqlite3.Connection) -> tuple[Inserted, set[str]]:
        """Insert the jobs (a taken idempotency key and a taken unique key, uq_jobs_unique,
        both skip the row: no conflict target, never an aborted statement), their events,
        callbacks and limits; the stored jobs the duplicates name."""
        tagged = _with_fair_tags(conn, self.rows)
        stamps: dict[datetime, str] = {}  # a batch's jobs share their times
        batch = json.dumps([_stored(row, stamps) for row in tagged])
        inserted = {row[0] for row in conn.execute(_SQL["enqueue"], {"jobs": batch})}
        new = [_NewJobView(r) for r in tagged if r["id"] in inserted]
        now = tagged[0]["created_at"]
        record_events(conn, [outbox.event_row(self.created, j, j.state, now) for j in new])
        if mine := [c for c in self.callbacks if c["job_id"] in inserted]:
            stored = [{**c, "created_at": sqlite_time(c["created_at"])} for c in mine]
            conn.executemany(_SQL["job_callback"], stored)
        if held := [x for x in self.limits if x["job_id"] in inserted]:
            conn.executemany(_SQL["job_limit"], held)
        dupes = [r for r in tagged if r["id"] not in inserted]
        existing = _existing(conn, [r for r in dupes if r["idempotency_key"] is not None])
        live = _live(conn, [r for r in dupes if r["unique_key"] is not None])
        runnable = {j.queue for j in new if j.state == "queued"}
        return Inserted(inserted, existing, live), runnable


# The columns of `enqueue`'s rows, in its order (sqlite.sql).
ENQUEUE_COLUMNS = (
    "id", "owner_id", "queue", "type", "payload", "priority", "state", "attempt",
    "max_attempts", "run_at", "lease_expires_at", "worker_id", "timeout_s", "idempotency_key",
    "progress", "progress_message", "result", "errors", "tags", "schedule_id", "created_at",
    "started_at", "finished_at", "unique_key", "unique_states", "fair_key", "fair_tag",
    "limited", "trace_context",
)  # fmt: skip
# Where in those the columns stored as their JSON text are, and the only times a new job has.
_AS_JSON = [ENQUEUE_COLUMNS.index(name) for name in ("payload", "result", "errors", "tags")]
_AS_TIME = [ENQUEUE_COLUMNS.index(name) for name in ("run_at", "created_at")]


def _stored(row: dict[str, Any], stamps: dict[datetime, str]) -> list[Any]:
    """A job row (`job_row`, with its fair tag) as `enqueue` reads it: times and JSON as the
    Core insert stored them (JSON null for no result). `stamps`: the times' text so far."""
    values = [row[name] for name in ENQUEUE_COLUMNS]
    for at in _AS_JSON:
        values[at] = _json_text(values[at])
    for at in _AS_TIME:
        values[at] = _stamp(values[at], stamps)
    return values


def _stamp(at: datetime, stamps: dict[datetime, str]) -> str:
    """`at` as stored, each time encoded once per batch (`stamps`: the text so far)."""
    if (stamp := stamps.get(at)) is None:
        stamp = stamps[at] = sqlite_time(at)
    return stamp


def _json_text(value: Any) -> str:
    """`json.dumps(value)`, the values most rows have (no result, no errors, no tags)
    without the call."""
    if value is None:
        return "null"
    if value == []:
        return "[]"
    return json.dumps(value)


async def insert_workflow_with(
    conn: AsyncConnection, rows: WorkflowInsert, created: str
) -> tuple[StoredWorkflow | None, set[str]]:
    """`insert_workflow`'s statements (Core: SQLite's executemany is fast) in `conn`'s
    transaction, a service's or a library caller's (store/foreign.py); and the queues that
    got runnable steps (their wake-up is the caller's). The stored workflow, nothing
    inserted, when the workflow's (owner, idempotency key) names one."""
    workflow = rows.workflow
    if workflow["idempotency_key"] is None:
        await conn.execute(workflows.insert(), [workflow])
    else:
        statement = sqlite_insert(workflows).values(workflow).on_conflict_do_nothing()
        if (await conn.execute(statement.returning(workflows.c.id))).first() is None:
            query = select(workflows.c.id, workflows.c.fingerprint).where(
                workflows.c.owner_id == workflow["owner_id"],
                workflows.c.idempotency_key == workflow["idempotency_key"],
            )
            found = (await conn.execute(query)).one()
            return StoredWorkflow(found.id, found.fingerprint), set()
    return None, await insert_steps_with(conn, rows, created)


async def insert_steps_with(conn: AsyncConnection, rows: WorkflowInsert, created: str) -> set[str]:
    """A workflow's steps (all, or a slice of them after `insert_workflow_with`, in its
    transaction) with their created events, edges and job_limits rows; the queues that got
    runnable steps. The rows are encoded here, on the caller's thread, and stored in one trip
    to the connection's, in SQL alone (`workflow_steps` computes the fair tags): a large
    submit builds its next slice meanwhile (services/workflows.py), which a trip per
    statement, or Python on the connection's thread holding the GIL, kept waiting."""
    workflow, steps = rows.workflow, rows.steps
    batch = json.dumps([_step_values(row) for row in steps])
    edges = json.dumps([[e["job_id"], e["depends_on"]] for e in rows.edges])
    args = {"workflow": workflow["id"], "owner": workflow["owner_id"], "steps": batch}
    now = sqlite_time(workflow["created_at"])
    await in_one_trip(conn, _Steps({**args, "now": now}, created, edges, rows.limits).run)
    return {row["queue"] for row in steps if row["state"] == "queued"}


class _Steps(NamedTuple):
    """A slice of a workflow's steps, encoded, as its trip to the writer's thread stores it."""

    args: dict[str, Any]  # workflow_steps' (workflow_created's with `type`)
    created: str  # the steps' event type
    edges: str  # [[job_id, depends_on], ...]
    limits: Sequence[dict[str, Any]]  # job_limits rows

    def run(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SQL["workflow_steps"], self.args)
        conn.execute(_SQL["workflow_created"], {**self.args, "type": self.created})
        if self.edges != "[]":
            edges = {"workflow": self.args["workflow"], "edges": self.edges}
            conn.execute(_SQL["workflow_edges"], edges)
        if self.limits:
            conn.executemany(_SQL["job_limit"], self.limits)


def _step_values(row: dict[str, Any]) -> list[Any]:
    """A step's row as `workflow_steps` reads it (its payload as the JSON text stored)."""
    return [
        row["id"], row["queue"], row["type"], json.dumps(row["payload"]), row["priority"],
        row["state"], row["max_attempts"], row["timeout_s"], row["idempotency_key"],
        row["step"], row["on_dependency_failure"], row["fair_key"], row["fair_tag"],
        row["limited"], row["trace_context"],
    ]  # fmt: skip


class _NewJobView:
    """A new job as `outbox.event_row` reads it, from an insert's parameters."""

    __slots__ = ("attempt", "id", "owner_id", "queue", "state", "type")

    def __init__(self, row: dict[str, Any]) -> None:
        self.id, self.owner_id, self.queue = row["id"], row["owner_id"], row["queue"]
        self.type, self.state, self.attempt = row["type"], row["state"], 0


def _with_fair_tags(
    conn: sqlite3.Connection, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows, each with its fair tag (docs/flow-control.md "Fair dispatch"): its run_at's
    epoch without a fair key; otherwise max(V, L [, its run_at]) + rank / weight, from one
    `fair_heads` read for the batch's (queue, priority, key) groups, as PostgreSQL's
    `enqueue` computes it in the statement."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    tagged: list[dict[str, Any]] = []
    for row in rows:
        row = {**row, "fair_tag": row["run_at"].timestamp()}
        tagged.append(row)
        if row["fair_key"] is not None:
            groups.setdefault((row["queue"], row["priority"], row["fair_key"]), []).append(row)
    if not groups:
        return tagged
    # The weight is the owner's when the group's first job is its key's owner's (a batch has
    # one owner), as in PostgreSQL's `enqueue`.
    asked = json.dumps([[*g, m[0]["owner_id"] == g[2]] for g, m in groups.items()])
    heads = {h.i: h for h in rows_of(conn.execute(_SQL["fair_heads"], {"groups": asked}))}
    for i, members in enumerate(groups.values()):
        head = heads[i]
        for rank, row in enumerate(members, start=1):
            due = row["fair_tag"] if head.v is None or row["state"] != "queued" else None
            start = max(t for t in (head.v, head.l, due) if t is not None)
            row["fair_tag"] = start + rank / head.w
    return tagged


def _existing(
    conn: sqlite3.Connection, dupes: Sequence[dict[str, Any]]
) -> dict[tuple[str, str | None], Existing]:
    """The stored jobs the duplicates' idempotency keys name, in one query."""
    if not dupes:
        return {}
    found = rows_of(conn.execute(_SQL["keyed_jobs"], {"keys": _keys(dupes, "idempotency_key")}))
    return {
        (r.owner_id, r.idempotency_key): Existing(
            r.id, r.state, r.type, r.queue, json.loads(r.payload)
        )
        for r in found
    }


def _live(conn: sqlite3.Connection, dupes: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """The live jobs (uq_jobs_unique's rows) the duplicates' unique keys name, in one query."""
    if not dupes:
        return {}
    found = rows_of(conn.execute(_SQL["unique_jobs"], {"keys": _keys(dupes, "unique_key")}))
    return {r.unique_key: (r.id, r.state) for r in found}


def _keys(dupes: Sequence[dict[str, Any]], column: str) -> str:
    """The duplicates' [owner, key] pairs (of `column`), as the JSON array the lookups read."""
    return json.dumps(sorted({(row["owner_id"], row[column]) for row in dupes}))


class _Finish(NamedTuple):
    """A worker's fenced finishes (each batch one statement, by kind) and their events, on
    the writer's thread in one trip; the ids accepted (the rest were fenced)."""

    worker: str
    now: datetime
    batches: Sequence[FinishBatch]

    def run(self, conn: sqlite3.Connection) -> set[str]:
        accepted: set[str] = set()
        now = sqlite_time(self.now)
        for batch in self.batches:
            params = {"batch": _batch_json(batch), "worker": self.worker, "now": now}
            done = rows_of(conn.execute(_FINISH[batch.kind], params))
            accepted.update(row.id for row in done)
            said = {o.job_id: s for o, s in zip(batch.outcomes, batch.events, strict=True)}
            record_events(conn, [outbox.said_row(said[r.id], r, self.now) for r in done])
        return accepted


def _batch_json(batch: FinishBatch) -> str:
    """The JSON array a finish statement reads with json_each."""
    items: list[list[Any]] = []
    for outcome, error in zip(batch.outcomes, batch.errors, strict=True):
        if batch.kind == "completed":
            items.append([outcome.job_id, outcome.attempt, outcome.result])
        elif batch.kind == "retry":
            assert outcome.retry_at is not None
            items.append([outcome.job_id, outcome.attempt, error, sqlite_time(outcome.retry_at)])
        else:
            items.append([outcome.job_id, outcome.attempt, error, outcome.result])
    return json.dumps(items)


def claim_statement(every_queue: bool, probe: bool = True) -> str:
    """The claim's candidates statement: `claim_any` for a worker of every queue, else
    `claim_one`, once per queue (sqlite.sql says why); without `probe`, its variant that
    picks limited candidates whether their keys have room or not."""
    name = "claim_any" if every_queue else "claim_one"
    return _SQL[name if probe else f"{name}_unprobed"]


class _Ask(NamedTuple):
    """A claim, as its one trip to the writer's thread runs it (`trip`)."""

    worker: str
    queues: tuple[str, ...]
    every_queue: bool
    limit: int
    lease: tuple[datetime, datetime]
    said: Said
    probe: bool = True  # leave out limited candidates whose keys have no room now

    def trip(self, conn: sqlite3.Connection) -> Claimed:
        """The claim on the writer's thread: the candidates, the unlimited ones started and
        the limited ones admitted (`admit`), with their events."""
        start, end = self.lease
        params = {
            "worker": self.worker,
            "now": sqlite_time(start),
            "lease": sqlite_time(end),
            "queues": json.dumps(list(self.queues)),
            "limit": self.limit,
        }
        # The start time is taken once the write lock is ours (this trip began with the
        # BEGIN IMMEDIATE that waited for it): the caller's was taken before it waited,
        # maybe for the very finish that made these jobs runnable (a step would start
        # before its dependency finished).
        lease = _from_now(self.lease)
        claimed = self.pick(conn, params, self.probe, lease)
        if not self.probe and claimed.refused and len(claimed) < self.limit:
            # Refused candidates took room in the LIMIT: the runnable jobs behind them,
            # picked with the probe in the same transaction (one writer: nothing changed).
            rest = self.pick(conn, {**params, "limit": self.limit - len(claimed)}, True, lease)
            claimed.extend(rest)
            claimed.refused = dict(Counter(claimed.refused) + Counter(rest.refused))
            times = [t for t in (claimed.retry_in, rest.retry_in) if t is not None]
            claimed.retry_in = min(times, default=None)
        return claimed

    def pick(
        self,
        conn: sqlite3.Connection,
        params: dict[str, Any],
        probe: bool,
        lease: tuple[datetime, datetime],
    ) -> Claimed:
        """Up to `params["limit"]` candidates: the unlimited ones started, the limited ones
        admitted (`admit`), with their events."""
        picked = self.candidates(conn, params, probe)
        free = [r.id for r in picked if not r.limited]
        claimed = Claimed(self.start(conn, free, lease) if free else [])
        if waiting := {r.id: r.demands for r in picked if r.limited}:
            self.admit(conn, waiting, lease, claimed)
        return claimed

    def admit(
        self,
        conn: sqlite3.Connection,
        waiting: dict[str, str],
        lease: tuple[datetime, datetime],
        claimed: Claimed,
    ) -> None:
        """Start those of the limited candidates `waiting` (claim order, each with the
        `demands` its claim read) that every limit they are under admits, adding them to
        `claimed`. One writer at a time (BEGIN IMMEDIATE): what this transaction reads no
        other changes before it commits."""
        now = lease[0]
        demands: list[admission.Demand] = []
        # Each concurrency key's free slots, then those it lacks up to its size (made held
        # by `limit_slots_hold` when the plan gives them).
        free: dict[tuple[str, str], list[int]] = {}
        for job_id, asked in waiting.items():
            for name, key, kind, size, rate, per_s, burst, top, slots in json.loads(asked):
                demands.append(admission.Demand(job_id, name, key, kind, size, rate, per_s, burst))
                if top is not None and (name, key) not in free:
                    mine = [int(n) for n in slots.split(",")] if slots else []
                    free[(name, key)] = mine + list(range(top + 1, size + 1))
        buckets: dict[tuple[str, str], admission.Bucket] = {}
        if rates := admission.rated(demands):
            pairs = {"pairs": json.dumps(list(rates))}
            for row in rows_of(conn.execute(_SQL["rate_buckets_of"], pairs)):
                buckets[(row.name, row.key)] = admission.Bucket(row.tokens, must(row.refreshed_at))
        plan = admission.plan(list(waiting), demands, free, buckets, now)
        claimed.refused, claimed.retry_in = plan.refused, plan.retry_in
        if not plan.admitted:
            return
        if plan.holds:
            conn.execute(_SQL["limit_slots_hold"], {"holds": json.dumps(plan.holds)})
        if plan.buckets:
            at = sqlite_time(now)
            refills = [
                {"name": name, "key": key, "tokens": tokens, "at": at}
                for (name, key), tokens in plan.buckets.items()
            ]
            conn.executemany(_SQL["rate_bucket_set"], refills)
        claimed.extend(self.start(conn, plan.admitted, lease))

    def candidates(
        self, conn: sqlite3.Connection, params: dict[str, Any], probe: bool = True
    ) -> list[Any]:
        """A claim's candidates in claim order: `claim_any` once for a worker of `*` (its
        `queues` are those it leaves out), else `claim_one` for each queue, its first
        `params["limit"]` (the claim's, or what the rest of it has room for) in the claim
        index's order whatever the statistics; of several queues' the best of them, which
        are the first of one ordered read of all of them."""
        if self.every_queue:
            return rows_of(conn.execute(claim_statement(True, probe), params))
        found: list[Any] = []
        for queue in dict.fromkeys(self.queues):
            statement = claim_statement(False, probe)
            found += rows_of(conn.execute(statement, {**params, "queue": queue}))
        if len(self.queues) > 1:
            found.sort(key=lambda r: (-r.priority, r.fair_tag, r.id))
        return found[: params["limit"]]

    def start(
        self, conn: sqlite3.Connection, ids: list[str], lease: tuple[datetime, datetime]
    ) -> list[ClaimedJob]:
        """Start the jobs `ids` for this worker, with their events."""
        now, until = lease
        params = {
            "ids": json.dumps(ids),
            "worker": self.worker,
            "now": sqlite_time(now),
            "lease": sqlite_time(until),
        }
        started = rows_of(conn.execute(_SQL["claim_start"], params))
        record_events(conn, [outbox.said_row(self.said, r, now) for r in started])
        return [_claimed(row) for row in started]


def record_events(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> None:
    """`outbox.record`'s insert, on the writer's thread (`in_one_trip`): data as JSON text
    ('null' for none, as the Core insert stores it), times as stored. A claim's or a
    finish's events share their time and mostly their data: each is encoded once per
    batch (the time's text per event was a tenth of a claim's time on the writer's
    thread)."""
    if not events:
        return
    texts: dict[int, str] = {}  # by the encoded object's id: alive for the whole call
    stamps: dict[datetime, str] = {}
    rows = []
    for e in events:
        data, at = e["data"], e["created_at"]
        if (text := texts.get(id(data))) is None:
            text = texts[id(data)] = json.dumps(data)
        rows.append({**e, "data": text, "created_at": _stamp(at, stamps)})
    conn.executemany(_SQL["record_events"], rows)


def _claimed(row: Any) -> ClaimedJob:
    """A started row (`claim_start`'s columns, as stored)."""
    return ClaimedJob(
        id=row.id,
        type=row.type,
        queue=row.queue,
        payload=json.loads(row.payload),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        timeout_s=row.timeout_s,
        priority=row.priority,
        owner_id=row.owner_id,
        idempotency_key=row.idempotency_key,
        run_at=aware(row.run_at),
        trace_context=row.trace_context,
        workflow_id=row.workflow_id,
        step=row.step,
        depends=bool(row.depends),
    )
