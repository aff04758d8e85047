"""What each database implements: statements only, no policy (river's driver executor).

The shared store modules (jobs, claims, maintenance, outbox, ...) decide which statements
run, in which transaction, what events they write and when processes are woken; a driver
knows how to say it in its database's SQL (store/sql/<dialect>.sql) and its wake-up and
leadership machinery. One implementation per database: store/drivers/postgres.py and
store/drivers/sqlite.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import ColumnElement, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.jobs import ClaimedJob, Outcome

Callback = Callable[[str], None]


class Listener(Protocol):
    """A running subscription to wake-ups; `alive` lets its owner notice it died."""

    def alive(self) -> bool: ...

    async def close(self) -> None: ...


class Leadership(Protocol):
    """Who runs maintenance (promotion, cron, rescue, pruning) or a relay lane right now."""

    async def acquire(self) -> bool:
        """Try to be (or stay) leader; True while we are."""
        ...

    async def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Said:
    """What an event says beside its job's columns (store/events.py decides it)."""

    type: str
    state: str
    data: dict[str, Any] | None = None


class Fence(NamedTuple):
    """Whose running attempt a worker's write is about: it applies only while it holds."""

    worker_id: str
    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class FinishBatch:
    """The outcomes of one kind in a finish, with the error entry and event of each."""

    kind: str  # "completed", "retry" or "failed": the statement
    outcomes: Sequence[Outcome]
    errors: Sequence[dict[str, Any] | None]
    events: Sequence[Said]


class Claimed(list[ClaimedJob]):
    """A claim's jobs; and of the limited candidates it could not admit, how many each
    limit refused, and when the first refused by a rate has its next token (seconds)."""

    refused: dict[str, int]
    retry_in: float | None

    def __init__(self, jobs: Any = ()) -> None:
        super().__init__(jobs)
        self.refused = {}
        self.retry_in = None


@dataclass(frozen=True, slots=True)
class Existing:
    """A stored job an idempotency key names, with what its request asked (to tell the same
    request again from another one reusing the key)."""

    id: str
    state: str
    type: str
    queue: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Inserted:
    """What an insert of new jobs did: the ids it inserted; for the duplicates, the stored
    jobs their idempotency keys name by (owner, key), and the live jobs their unique keys
    name, (id, state) by unique key."""

    ids: set[str]
    existing: dict[tuple[str, str | None], Existing]
    unique: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredWorkflow:
    """The stored workflow a new one's (owner, idempotency key) named: its id, and its
    declaration's fingerprint (the same declaration, or another reusing the key?)."""

    id: str
    fingerprint: str | None


class WorkflowInsert(Protocol):
    """What a workflow's insert writes (store/workflows.py `WorkflowRows` is one): its row,
    its steps (jobs rows), its edges (job_dependencies rows) and job_limits rows."""

    @property
    def workflow(self) -> dict[str, Any]: ...
    @property
    def steps(self) -> Sequence[dict[str, Any]]: ...
    @property
    def edges(self) -> Sequence[dict[str, Any]]: ...
    @property
    def limits(self) -> Sequence[dict[str, Any]]: ...


class Driver(Protocol):
    """One database's statements. `conn`, where taken, is the caller's open transaction."""

    dialect: str

    # ---- pieces of the shared SQLAlchemy Core statements -------------------------------
    def insert(self, table: Table) -> Any:
        """The database's INSERT construct (it knows ON CONFLICT)."""
        ...

    def xid(self) -> ColumnElement[Any]:
        """The reading-order key stored with each event a Core statement inserts, after
        `lock_events` (store/events.py; PostgreSQL's hot-path statements store their
        transaction id)."""
        ...

    async def lock_events(self, conn: AsyncConnection) -> None:
        """Mark `conn`'s transaction as one that writes events, until it ends: what holds
        the readers' horizon back (store/outbox.py)."""
        ...

    async def horizon(self) -> int | None:
        """Every event with a smaller key has committed, and none can still commit with
        one (None: no such limit, one writer)."""
        ...

    def has_tag(self, tag: str) -> ColumnElement[bool]: ...

    def minute(self, column: Any) -> ColumnElement[Any]:
        """The column truncated to its minute (a time, or its sortable text on SQLite)."""
        ...

    def json_object_agg(self, key: Any, value: Any) -> ColumnElement[Any]:
        """The aggregate of the rows' `key: value` (a JSON column) as one JSON object,
        decoded when read (NULL for no rows): one value to decode instead of a row each."""
        ...

    def in_lock_order(self, pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
        """The rows of `pick`, locked first in the one global order where rows have locks
        (store/locking.py)."""
        ...

    # ---- the hot path -------------------------------------------------------------------
    async def insert_jobs(
        self,
        conn: AsyncConnection | None,
        rows: Sequence[dict[str, Any]],
        callbacks: Sequence[dict[str, Any]],
        created: str,
        synchronous: bool = True,
        limits: Sequence[dict[str, Any]] = (),
    ) -> Inserted:
        """Insert `rows` (a duplicate idempotency key inserts nothing) with a `created`
        event each, the `callbacks` and `limits` (job_limits rows) of those inserted, and
        wake their runnable queues.
        Not `synchronous`: the transaction's commit may return before its WAL is flushed
        (PostgreSQL's `synchronous_commit = off` for this transaction; docs/design.md)."""
        ...

    async def insert_workflow(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> StoredWorkflow | None:
        """Insert a workflow's row, its steps with a `created` event each, its edges and
        job_limits rows, in `conn`'s transaction, and wake the queues of its runnable steps.
        Inserts nothing when the workflow's (owner, idempotency key) names a stored one:
        that one, to compare (store/workflows.py)."""
        ...

    async def insert_workflow_steps(
        self, conn: AsyncConnection, rows: WorkflowInsert, created: str
    ) -> None:
        """More steps of the workflow `insert_workflow` inserted in `conn`'s transaction (a
        large submit's next slice: services/workflows.py), as it inserts its steps: each
        with its `created` event, their edges (to these or earlier steps) and job_limits
        rows, and the runnable ones' queues woken."""
        ...

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
        """Claim and log in one transaction; `every_queue`: all but `queues`; `lease` is
        (now, its end). `early`, if given, is told the claimed jobs before the commit (in
        an explicit transaction), so that an idle worker starts them while it commits."""
        ...

    async def arm_claim(self) -> None:
        """Get the next `claim`'s transaction ready now (PostgreSQL: its BEGIN, on a held
        connection) so that a wake-up's claim is one round trip; a no-op where it buys
        nothing (SQLite). Kept until that claim, or `disarm_claim`."""
        ...

    async def disarm_claim(self) -> None:
        """Give back what `arm_claim` holds, unused."""
        ...

    async def finish(
        self, worker_id: str, now: datetime, batches: Sequence[FinishBatch]
    ) -> set[str]:
        """Fenced finishes and their events in one transaction; the ids accepted."""
        ...

    async def heartbeat(self, worker_id: str, now: datetime, until: datetime) -> set[str]:
        """Mark the worker alive at `now` and extend its running jobs' leases to `until`,
        in one transaction; the ids of the jobs it still holds."""
        ...

    async def set_progress(
        self, fence: Fence, percent: int, message: str | None, said: Said, now: datetime
    ) -> bool:
        """A running job's progress and its event, in one transaction, while `fence` (worker,
        job, attempt) still holds it; whether it did."""
        ...

    async def promote(self, now: datetime, limit: int) -> Sequence[Any]:
        """Up to `limit` scheduled and retrying jobs due by `now` queued, in run_at order, and
        their queues woken, in a transaction of its own; a row (its queue) for each."""
        ...

    async def rescue(self, now: datetime, limit: int) -> Sequence[Any]:
        """Expired leases back to queued (or failed), each with its event (`rescued`), and
        the requeued jobs' queues woken, in a transaction of its own; rows of id, state,
        queue, owner_id, type, attempt."""
        ...

    # ---- wake-ups and leadership -------------------------------------------------------
    async def notify_jobs(self, conn: AsyncConnection, queues: set[str]) -> None:
        """Wake idle workers of these queues (once `conn` commits, where it can wait)."""
        ...

    async def notify_cancel(self, conn: AsyncConnection, job_id: str) -> None: ...

    def tell_other_processes(self) -> None:
        """After a commit that wrote events: wake other processes' readers, if they need it."""
        ...

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener: ...

    async def listen_events(self, on_events: Callable[[], None]) -> Listener:
        """Call `on_events` when another process committed events (maybe a little early)."""
        ...

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership: ...

    async def close(self) -> None: ...
