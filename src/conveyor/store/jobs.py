"""Changing jobs: enqueue, a user's cancel and retry, an administrator's moves, bulk actions.

Every change is one statement guarded by the expected state (and owner), and writes its
events in the same transaction; multi-row changes lock their rows in the one order
(store/locking.py).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, exists, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import BulkAction, BulkResult, Enqueued, JobFilter, JobRecord, NewJob
from conveyor.domain.states import (
    CANCELLABLE,
    TERMINAL,
    USER_RETRYABLE,
    JobState,
    check_transition,
)
from conveyor.errors import Conflict, IdempotencyKeyReused, IllegalTransition, UniqueKeyTaken
from conveyor.store import events as outbox
from conveyor.store.database import after_commit
from conveyor.store.driver import Inserted
from conveyor.store.reads import JobReads, scoped
from conveyor.store.records import job_record
from conveyor.store.tables import jobs
from conveyor.store.transaction import Transaction

_TERMINAL_VALUES = [s.value for s in TERMINAL]  # skipped (a workflow's step) included
_CANCELLABLE_VALUES = sorted(s.value for s in CANCELLABLE)
_RETRYABLE_VALUES = sorted(s.value for s in USER_RETRYABLE)
# Which states each bulk action may change (the state machine's edges; delete: finished only).
_BULK_STATES: dict[str, frozenset[str]] = {
    "cancel": frozenset(_CANCELLABLE_VALUES),
    "retry": frozenset(_RETRYABLE_VALUES),
    "delete": frozenset(_TERMINAL_VALUES),
}
# What an event needs to know of its job, returned by the statements that change it.
EVENT_COLUMNS = (jobs.c.id, jobs.c.owner_id, jobs.c.queue, jobs.c.type, jobs.c.attempt)
# ... and what a bulk change needs besides: whose worker to interrupt.
_BULK_COLUMNS = (*EVENT_COLUMNS, jobs.c.worker_id)


class Jobs(JobReads):
    async def enqueue(
        self, new_jobs: Sequence[NewJob], tx: Transaction | None = None, *, synchronous: bool = True
    ) -> list[Enqueued]:
        """Insert jobs in one transaction (the caller's, if given); idempotency keys dedupe,
        and so do unique keys (docs/flow-control.md): a duplicate never aborts the
        transaction, its existing job is returned instead.

        Not `synchronous` (CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT=off): that transaction commits
        without waiting for its WAL flush on PostgreSQL (docs/design.md says what it risks)."""
        if not new_jobs:
            return []
        if tx is None and len(new_jobs) > 1 and any(j.idempotency_key for j in new_jobs):
            # A key reused for another request refuses the batch after its insert: in a
            # transaction, so that nothing of it is stored.
            async with self.transaction() as own:
                return await self.enqueue(new_jobs, own, synchronous=synchronous)
        rows = InsertRows.of(new_jobs)
        conn = tx.connection if tx is not None else None
        done = await self.driver.insert_jobs(
            conn, rows.rows, rows.callbacks, ev.CREATED, synchronous, limits=rows.limits
        )
        # A queued job's wake-up on the jobs channel wakes event readers elsewhere too; only
        # jobs scheduled for later need the events channel.
        others = any(row["state"] != JobState.QUEUED.value for row in rows.rows)
        ring = functools.partial(self._events_committed, others=others)
        if conn is not None:
            after_commit(conn, ring)
        elif done.ids:
            ring()
        return rows.answers(new_jobs, done)

    async def cancel(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        guard = scoped([jobs.c.id == job_id], owner_id)
        async with self.db.write() as conn:
            rows = await self._cancel_where(conn, guard, utcnow(), jobs.c)
        if rows:
            return job_record(rows[0])
        current = await self.get(job_id, owner_id)
        check_transition(current.state, JobState.CANCELLED)
        raise Conflict("the job changed state; try again")  # pragma: no cover - a race

    async def retry(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        """A user's retry of a failed or cancelled job: queued again with fresh attempts.

        UniqueKeyTaken (409) if it is a unique job whose key a live job holds meanwhile."""
        guard = scoped([jobs.c.id == job_id], owner_id)
        with _unique_key_taken():
            async with self.db.write() as conn:
                rows = await self._retry_where(conn, guard, utcnow(), jobs.c)
        if rows:
            return job_record(rows[0])
        current = await self.get(job_id, owner_id)
        if current.workflow_id is not None and current.state in USER_RETRYABLE:
            raise IllegalTransition(
                "a workflow's step is retried with its workflow (its dependents wait for it)",
                current=current.state.value,
                target=JobState.QUEUED.value,
            )
        if current.state not in USER_RETRYABLE:
            raise IllegalTransition(
                f"only failed or cancelled jobs can be retried; this one is {current.state.value}",
                current=current.state.value,
                target=JobState.QUEUED.value,
            )
        async with self.db.read() as conn:
            if (
                await conn.execute(
                    select(jobs.c.id).where(jobs.c.id == job_id, ~_key_free(self.driver.dialect))
                )
            ).first():
                raise UniqueKeyTaken(_KEY_TAKEN)
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
        await self._log(conn, [outbox.said_row(outbox.CANCELLED, row, now) for row in rows])
        for row in rows:
            if row.worker_id:
                await self.driver.notify_cancel(conn, row.id)
        return rows

    async def _retry_where(
        self,
        conn: AsyncConnection,
        guard: Sequence[ColumnElement[bool]],
        now: datetime,
        columns: Iterable[Any],
    ) -> Sequence[Row[Any]]:
        """Queue the failed or cancelled jobs among `guard` again, with fresh attempts; a
        unique job whose key a live job holds stays (a bulk retry skips it)."""
        fence = [*guard, jobs.c.state.in_(_RETRYABLE_VALUES), _key_free(self.driver.dialect)]
        fence.append(jobs.c.workflow_id.is_(None))  # a step: its workflow's retry
        rows = (
            await conn.execute(
                self._update_locked(fence)
                .values(
                    state=JobState.QUEUED.value,
                    attempt=0,
                    run_at=now,
                    fair_tag=now.timestamp(),  # due-time order, as a retry's
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
        said = outbox.requeued("retried")
        await self._log(conn, [outbox.said_row(said, r, now) for r in rows])
        if rows:
            await self.driver.notify_jobs(conn, {row.queue for row in rows})
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
        guard = scoped([jobs.c.id.in_(ids)], owner_id)
        now = utcnow()
        async with self.db.write() as conn:
            if action == "cancel":
                return len(await self._cancel_where(conn, guard, now, _BULK_COLUMNS))
            if action == "retry":
                with _unique_key_taken():
                    return len(await self._retry_where(conn, guard, now, _BULK_COLUMNS))
            # a workflow's step goes with its workflow (store/workflows.py), never alone
            fence = [*guard, jobs.c.state.in_(_TERMINAL_VALUES), jobs.c.workflow_id.is_(None)]
            result = await conn.execute(
                delete(jobs).where(self.driver.in_lock_order(fence), *fence)
            )
            return int(result.rowcount)

    # ---- an administrator's moves --------------------------------------------------------
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
            values.update(
                run_at=now, fair_tag=now.timestamp(), worker_id=None, lease_expires_at=None
            )
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
            said = outbox.set_by_admin(target.value)
            await self._log(conn, [outbox.said_row(said, row, now)])
            if target is JobState.QUEUED:
                await self.driver.notify_jobs(conn, {row.queue})
        return job_record(row)

    async def delete_finished(self, job_id: str, owner_id: str | None = None) -> None:
        guard = [jobs.c.id == job_id, jobs.c.state.in_(_TERMINAL_VALUES)]
        guard.append(jobs.c.workflow_id.is_(None))  # a step goes with its workflow
        if owner_id is not None:
            guard.append(jobs.c.owner_id == owner_id)
        async with self.db.write() as conn:
            result = await conn.execute(delete(jobs).where(*guard))
        if result.rowcount == 0:
            current = await self.get(job_id, owner_id)
            if current.state in TERMINAL:
                raise Conflict("a workflow's step is deleted with its workflow, not alone")
            raise Conflict(f"a {current.state.value} job cannot be deleted; cancel it first")


@dataclass(frozen=True, slots=True)
class InsertRows:
    """What an enqueue of `new_jobs` writes, built once for every way in (a service's
    transaction, the pool, a library caller's own connection: store/foreign.py)."""

    rows: list[dict[str, Any]]  # in the jobs' order (their fair ranks, the answers)
    callbacks: list[dict[str, Any]]
    limits: list[dict[str, Any]]

    @classmethod
    def of(cls, new_jobs: Sequence[NewJob]) -> InsertRows:
        now = utcnow()
        rows = [job_row(job, now) for job in new_jobs]
        return cls(rows, callback_rows(new_jobs, now), limit_rows(new_jobs))

    def answers(self, new_jobs: Sequence[NewJob], done: Inserted) -> list[Enqueued]:
        """Each job's answer: inserted, or the stored job it duplicates."""
        return [
            _created(row) if job.id in done.ids else _already_there(job, done)
            for job, row in zip(new_jobs, self.rows, strict=True)
        ]


def _created(row: dict[str, Any]) -> Enqueued:
    record = inserted_record(row)
    return Enqueued(record.id, True, record.state, record)


def _already_there(job: NewJob, done: Inserted) -> Enqueued:
    """The answer to a submit that inserted nothing: the job its idempotency key names (the
    same request again; another request with the key is refused), else the live job its
    unique key names."""
    if job.idempotency_key is not None:
        found = done.existing.get((job.owner_id, job.idempotency_key))
        if found is not None:
            if (found.type, found.queue, found.payload) != (job.type, job.queue, job.payload):
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for another request (another type, queue "
                    f"or payload: job {found.id}); nothing was stored",
                    job_id=found.id,
                )
            return Enqueued(found.id, False, JobState(found.state))
    if job.unique_key is not None and job.unique_key in done.unique:
        found_id, state = done.unique[job.unique_key]
        return Enqueued(found_id, False, JobState(state), duplicate=True)
    # The job it collided with left the states that made it one (it finished) meanwhile.
    raise Conflict("the job this submit duplicated changed meanwhile; try again")


_KEY_TAKEN = (
    "another live job of this unique job type holds the same unique key; "
    "wait for it to finish (or cancel it) before retrying this one"
)


def _key_free(dialect: str) -> ColumnElement[bool]:
    """The job has no unique key, or no other job holds it live: uq_jobs_unique's rows, by
    the index's own predicate, constants included (so that the planner can use the index)."""
    other = jobs.alias("holder")
    find = "strpos" if dialect == "postgresql" else "instr"
    live = text(f"{find}(holder.unique_states, ',' || holder.state || ',') > 0")
    held = (
        exists()
        .where(other.c.unique_key == jobs.c.unique_key, other.c.id != jobs.c.id, live)
        .correlate(jobs)
    )
    return or_(jobs.c.unique_key.is_(None), ~held)


@contextmanager
def _unique_key_taken() -> Iterator[None]:
    """A job queued again whose unique key a live job took meanwhile (after the guard of
    `_key_free` looked) meets the unique index."""
    try:
        yield
    except IntegrityError as exc:
        if "uq_jobs_unique" not in str(exc) and "unique_key" not in str(exc):
            raise
        raise UniqueKeyTaken(_KEY_TAKEN) from exc


def job_row(job: NewJob, now: datetime) -> dict[str, Any]:
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
        "unique_key": job.unique_key,
        "unique_states": _stored_states(job.unique_states) if job.unique_key else None,
        # its fair tag is the driver's to compute, in the insert (docs/flow-control.md)
        "fair_key": job.fair_key,
        # its job_limits rows are written beside it (`limit_rows`), in the same transaction
        "limited": bool(job.limit_keys),
        "trace_context": job.trace_context,
    }


def _stored_states(states: frozenset[JobState]) -> str:
    """ ",queued,running," (in the state machine's order): the index searches ",<state>,"."""
    return "," + ",".join(s.value for s in JobState if s in states) + ","


# JobRecord's fields that `job_row` has, in their order (a job inserted by a submit is
# not a workflow's step: workflow_id and step keep their defaults), read in one C call: a
# dict filtered and unpacked per job was a tenth of a 500-job HTTP submit's answer.
_RECORD_VALUES = operator.itemgetter(
    *(name for name in JobRecord.__dataclass_fields__ if name not in ("workflow_id", "step"))
)
_STATE_AT = list(JobRecord.__dataclass_fields__).index("state")
_STATES = {state.value: state for state in JobState}  # a dict read: JobState(v) costs 10x


def inserted_record(row: dict[str, Any]) -> JobRecord:
    """The record of a job just inserted from `row` (`job_row`): what a read would return."""
    values = list(_RECORD_VALUES(row))
    values[_STATE_AT] = _STATES[values[_STATE_AT]]
    return JobRecord(*values)


def limit_rows(new_jobs: Iterable[NewJob]) -> list[dict[str, Any]]:
    """The job_limits rows of the jobs under limits (their keys evaluated at submit); the
    driver writes those of the jobs it inserted, in the enqueue's transaction. Jobs without
    limits cost nothing here."""
    return [
        {"job_id": j.id, "name": lk.name, "key": lk.key} for j in new_jobs for lk in j.limit_keys
    ]


def callback_rows(new_jobs: Iterable[NewJob], now: datetime) -> list[dict[str, Any]]:
    """The job_callbacks rows of the jobs that carry a callback_url (the driver writes those
    of the jobs it inserted, in the enqueue's transaction)."""
    return [
        {"job_id": j.id, "owner_id": j.owner_id, "url": j.callback_url, "created_at": now}
        for j in new_jobs
        if j.callback_url
    ]
