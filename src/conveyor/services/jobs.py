"""Submitting and managing jobs: validation against the handler's model happens here."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, LimitKey, Unique, submit_limit_keys
from conveyor.domain.ids import uuid7_many
from conveyor.domain.jobs import (
    BULK_ACTIONS,
    SYSTEM_OWNER,
    BulkAction,
    BulkResult,
    Enqueued,
    JobFilter,
    JobListPage,
    JobRecord,
    JobSort,
    NewJob,
    ThroughputPoint,
)
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.logs import job_fields
from conveyor.metrics import count_enqueued
from conveyor.scheduler.checks import checked_job, checked_payloads
from conveyor.services.flow import FlowService, QuotaAsk
from conveyor.store.backend import QueueBackend
from conveyor.store.transaction import Transaction
from conveyor.worker.registry import Registry

log = logging.getLogger("conveyor.jobs")

MAX_BATCH = 1000
MAX_PAGE = 1000
CAPS_TTL_S = 5.0  # how stale a process's copy of the users' running caps may be
BULK_BATCH = 500  # jobs per statement and transaction: short locks, bounded memory
BATCH_CHECK_MIN = 8  # a batch of one type this long has its payloads validated in one call


@dataclass(frozen=True, slots=True)
class ThroughputMinute:
    """One minute of a chart: jobs submitted, and jobs that finished completed or failed."""

    minute: datetime  # its start, UTC
    enqueued: int
    completed: int
    failed: int

    @property
    def failure_rate(self) -> float | None:
        """Failed among the jobs that finished this minute; None when none finished."""
        finished = self.completed + self.failed
        return self.failed / finished if finished else None


@dataclass(frozen=True)
class Submission:
    """What a caller asks for; unset options take the job type's defaults."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    callback_url: str | None = None  # its terminal events are POSTed there (docs/events.md)
    # Limits of the type's `submit_limits` this job is under, by name, with its key for each
    # (docs/flow-control.md, "Limits chosen at submit"); None or empty: none.
    limits: dict[str, str] | None = None


# (owner, callback URLs) -> None, or InvalidInput: services.webhooks.check_callbacks
CallbackCheck = Callable[[str, Sequence[str]], Awaitable[None]]


class JobService:
    check_callbacks: CallbackCheck | None = None  # set by the engine; None: no callbacks
    # CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT (set by the engine): off, a submission's commit does
    # not wait for its WAL flush on PostgreSQL (docs/design.md: what a crash can lose)
    synchronous_commit: bool = True
    # CONVEYOR_RUN_AT_PAST_TOLERANCE (set by the engine): a submitted run_at earlier than
    # now minus this many seconds is refused (clock skew between client and server)
    run_at_past_tolerance: float = 60.0
    # CONVEYOR_FAIR_DISPATCH (set by the engine): off, no job gets a fair key and claims go
    # by priority, then due time, as before fair dispatch (docs/flow-control.md)
    fair_dispatch: bool = True
    # The queued quota's check (set by the engine), for the doors that store a job outside
    # the intake's group commit (compat, tasks): `submit_within_quota`. None: not checked.
    quotas: FlowService | None = None

    def __init__(
        self, backend: QueueBackend, registry: Registry, bulk_batch: int = BULK_BATCH
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.quota_max_running = 0  # settings.quota_max_running: the default running cap
        self._caps: tuple[float, dict[str, int]] | None = None  # (read at, users' own caps)
        self.bulk_batch = bulk_batch

    async def define_limits(self) -> None:
        """Store the values of the limits the job types declare, and the running quota's
        default (docs/flow-control.md: the last process started with a changed value sets
        it for all)."""
        await self.backend.define_limits([lim for spec in self.registry for lim in spec.all_limits])
        await self.backend.define_running_quota(self.quota_max_running)

    async def running_cap(self, owner_id: str) -> int | None:
        """The owner's running quota (its own cap, else the default; None: no cap). The
        users' caps are read at most every CAPS_TTL_S per process, not once per submit."""
        if owner_id == SYSTEM_OWNER:
            return None
        now = time.monotonic()
        if self._caps is None or now - self._caps[0] > CAPS_TTL_S:
            self._caps = (now, await self.backend.running_caps())
        return self._caps[1].get(owner_id) or self.quota_max_running or None

    def prepare(self, submission: Submission, owner_id: str = SYSTEM_OWNER) -> NewJob:
        """Validate against the type's payload model; bad input changes nothing (`prepare_job`,
        with this service's settings)."""
        return prepare_job(
            self.registry,
            submission,
            owner_id,
            fair=self.fair_dispatch,
            past_tolerance=self.run_at_past_tolerance,
        )

    async def submit(
        self,
        submission: Submission,
        owner_id: str = SYSTEM_OWNER,
        tx: Transaction | None = None,
    ) -> Enqueued:
        (enqueued,) = await self.submit_many([submission], owner_id, tx)
        return enqueued

    async def submit_many(
        self,
        submissions: Sequence[Submission],
        owner_id: str = SYSTEM_OWNER,
        tx: Transaction | None = None,
    ) -> list[Enqueued]:
        """All or nothing: one bad submission rejects the batch before anything is stored."""
        prepared = await self.prepare_many(submissions, owner_id)
        enqueued = await self.store(prepared, tx)
        self.submitted(prepared, enqueued)  # in the caller's transaction: counted at insert
        return enqueued

    async def submit_within_quota(
        self,
        submission: Submission,
        owner_id: str,
        max_queued: int | None,
        tx: Transaction | None = None,
    ) -> Enqueued:
        """A caller's submit with the owner's queued quota checked in the transaction that
        inserts it (`tx`, else one of its own), as the intake checks the REST doors':
        QuotaExceeded (429) and nothing stored when it would take the owner beyond their
        cap. `max_queued` is the user's own cap (None: the setting's)."""
        prepared = await self.prepare_many([submission], owner_id)
        if tx is None:
            async with self.backend.transaction() as own:
                enqueued = await self._store_within_quota(prepared, owner_id, max_queued, own)
        else:
            enqueued = await self._store_within_quota(prepared, owner_id, max_queued, tx)
        self.submitted(prepared, enqueued)
        return enqueued[0]

    async def _store_within_quota(
        self, prepared: Sequence[NewJob], owner_id: str, max_queued: int | None, tx: Transaction
    ) -> list[Enqueued]:
        if self.quotas is not None:
            ask = QuotaAsk(owner_id, max_queued, len(prepared))
            (refused,) = await self.quotas.check_quotas(tx, [ask])
            if refused is not None:
                raise refused
        return await self.store(prepared, tx)

    async def store(self, prepared: Sequence[NewJob], tx: Transaction | None) -> list[Enqueued]:
        """Insert prepared jobs (in `tx` when given), committed as the settings say."""
        return await self.backend.enqueue(prepared, tx=tx, synchronous=self.synchronous_commit)

    async def prepare_many(
        self, submissions: Sequence[Submission], owner_id: str = SYSTEM_OWNER
    ) -> list[NewJob]:
        """Every submission checked (its payload, its callback URL) and made a new job;
        InvalidInput for the first bad one."""
        if len(submissions) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} jobs per batch", limit=MAX_BATCH)
        checked = self._checked_payloads(submissions)
        # One clock reading and one read of the random source for the whole batch
        now, ids = utcnow(), uuid7_many(len(submissions))
        prepared = [
            prepare_job(
                self.registry,
                s,
                owner_id,
                fair=self.fair_dispatch,
                past_tolerance=self.run_at_past_tolerance,
                checked_payload=checked[i] if checked else None,
                now=now,
                job_id=ids[i],
            )
            for i, s in enumerate(submissions)
        ]
        await self._check_callbacks(owner_id, prepared)
        return under_running_quota(prepared, owner_id, await self.running_cap(owner_id))

    def _checked_payloads(self, submissions: Sequence[Submission]) -> list[dict[str, Any]] | None:
        """A batch of one job type (a few jobs or more): its payloads validated in one call
        (`checked_payloads`); None otherwise, or when one is bad (each is then checked
        alone, and the first bad one named as before)."""
        if len(submissions) < BATCH_CHECK_MIN:
            return None
        kind = submissions[0].type
        if any(s.type != kind for s in submissions):
            return None
        return checked_payloads(self.registry, kind, [s.payload for s in submissions])

    def submitted(self, prepared: Sequence[NewJob], enqueued: Sequence[Enqueued]) -> None:
        """Count and log jobs the store has taken."""
        submitted(prepared, enqueued)

    async def _check_callbacks(self, owner_id: str, prepared: Sequence[NewJob]) -> None:
        urls = [job.callback_url for job in prepared if job.callback_url]
        if not urls:
            return
        if self.check_callbacks is None:
            raise InvalidInput("callbacks are not available here", field="callback_url")
        await self.check_callbacks(owner_id, urls)

    async def get(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        return await self.backend.get(job_id, owner_id)

    async def get_many(
        self, job_ids: Sequence[str], owner_id: str | None = None
    ) -> list[JobRecord]:
        """Many jobs in the order asked, in one query (not one per job: a batch of 500)."""
        return await self.backend.get_many(job_ids, owner_id)

    async def cancel(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        job = await self.backend.cancel(job_id, owner_id)
        log.info("cancelled", extra=job_fields(job.id, job.type, job.attempt))
        return job

    async def retry(self, job_id: str, owner_id: str | None = None) -> JobRecord:
        return await self.backend.retry(job_id, owner_id)

    async def set_state(self, job_id: str, target: JobState) -> JobRecord:
        return await self.backend.set_state(job_id, target)

    async def delete(self, job_id: str, owner_id: str | None = None) -> None:
        """Delete a finished job; one still in motion is a Conflict (cancel it first)."""
        await self.backend.delete_finished(job_id, owner_id)

    async def newest_first(
        self, where: JobFilter, *, after_id: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Up to `limit` jobs, newest first, older than the job `after_id` (a cursor: ids are
        time-ordered) when given."""
        return await self.backend.list_jobs(where, after_id=after_id, limit=limit)

    async def finished_per_minute(
        self, since: datetime, owner_id: str | None = None
    ) -> list[ThroughputPoint]:
        """Jobs completed and failed per minute since `since`, minutes without any left out
        (`throughput` fills them in for a chart)."""
        return await self.backend.throughput(since, owner_id)

    async def page(
        self, where: JobFilter, sort: str = "-created_at", offset: int = 0, limit: int = 50
    ) -> JobListPage:
        """An offset page sorted by a whitelisted column (the dashboard's table), with the total."""
        order = JobSort.parse(sort)
        if offset < 0:
            raise InvalidInput("offset cannot be negative", field="offset")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        return await self.backend.page_jobs(where, order, offset=offset, limit=limit)

    async def bulk(
        self,
        action: BulkAction,
        where: JobFilter | None = None,
        ids: Sequence[str] | None = None,
        owner_id: str | None = None,
    ) -> BulkResult:
        """Retry, cancel or delete these jobs, or all the filter matches, along the state machine.

        `owner_id` (or `where.owner_id`) limits it to one owner's jobs: a non-admin's ids of
        other people's jobs count as skipped and are never touched.
        """
        if action not in BULK_ACTIONS:
            raise InvalidInput(f"unknown bulk action {action!r}", field="action")
        if (where is None) == (ids is None):
            raise InvalidInput("give either a filter or ids, not both or neither")
        if ids is not None:
            return await self.backend.bulk_ids(action, ids, owner_id, self.bulk_batch)
        assert where is not None
        if owner_id is not None:
            where = replace(where, owner_id=owner_id)
        return await self.backend.bulk_where(action, where, self.bulk_batch)

    async def throughput(
        self, minutes: int = 60, owner_id: str | None = None, *, now: datetime | None = None
    ) -> list[ThroughputMinute]:
        """The last `minutes` minutes, oldest first, the current one included, zeros filled in,
        so a chart has one point per minute whether or not anything happened."""
        if not 1 <= minutes <= 24 * 60:
            raise InvalidInput("minutes must be between 1 and 1440", field="minutes")
        current = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
        since = current - timedelta(minutes=minutes - 1)
        finished = {p.minute: p for p in await self.backend.throughput(since, owner_id)}
        enqueued = await self.backend.enqueued_per_minute(since, owner_id)
        chart = []
        for step in range(minutes):
            minute = since + timedelta(minutes=step)
            point = finished.get(minute)
            chart.append(
                ThroughputMinute(
                    minute,
                    enqueued.get(minute, 0),
                    point.completed if point else 0,
                    point.failed if point else 0,
                )
            )
        return chart


def under_running_quota(
    prepared: list[NewJob], owner_id: str, running_cap: int | None
) -> list[NewJob]:
    """The jobs, each under its owner's running quota (its built-in limit) when the owner
    has a cap (None or 0: none)."""
    if not running_cap:
        return prepared
    quota = LimitKey(RUNNING_QUOTA, owner_id)
    return [replace(j, limit_keys=(*j.limit_keys, quota)) for j in prepared]


def prepare_job(
    registry: Registry,
    submission: Submission,
    owner_id: str = SYSTEM_OWNER,
    *,
    fair: bool = True,
    past_tolerance: float = 60.0,
    checked_payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    job_id: str | None = None,
) -> NewJob:
    """Validate against the type's payload model; bad input changes nothing. The rule is
    the scheduler's too (`checked_job`): a cron fire is checked as a submission is.

    Every door's submit comes here (the library's too: services/library.py), so the rules a
    caller's submit obeys and the scheduler's own inserts (retries, cron fires, misfire
    catch-up) do not are here: a run_at in the past beyond `past_tolerance` seconds is
    refused, and a unique job type's key is computed (docs/flow-control.md). `fair`: the
    setting fair_dispatch. `checked_payload`: its payload checked already (`checked_job`).
    `now` and `job_id`: the batch's clock reading and this job's id, made for all at once
    (`prepare_many`); None: read and made here."""
    now = now or utcnow()
    _check_run_at(submission.run_at, now, past_tolerance)
    job = checked_job(
        registry,
        submission.type,
        submission.payload,
        owner_id,
        queue=submission.queue,
        priority=submission.priority,
        max_attempts=submission.max_attempts,
        timeout_s=submission.timeout_s,
        run_at=submission.run_at,
        idempotency_key=submission.idempotency_key,
        tags=submission.tags,
        callback_url=submission.callback_url,
        fair=fair,
        checked_payload=checked_payload,
        job_id=job_id,
    )
    spec = registry.get(job.type)
    chosen = submit_limit_keys(spec.submit_limits, submission.limits, spec.name)
    if chosen:
        job = replace(job, limit_keys=(*job.limit_keys, *chosen))
    return unique_job(job, spec.unique, now)


def _check_run_at(run_at: datetime | None, now: datetime, tolerance: float) -> None:
    if run_at is None or run_at.tzinfo is None:  # no time zone: checked_job refuses it
        return
    if run_at < now - timedelta(seconds=tolerance):
        raise InvalidInput(
            f"run_at is in the past (more than {tolerance:g} s before "
            "the server's clock); leave it out to run the job now",
            field="run_at",
        )


def unique_job(job: NewJob, unique: Unique | None, now: datetime) -> NewJob:
    """`job` with the unique key and states its type's declaration gives (none: as is)."""
    if unique is None:
        return job
    key = unique.key(owner_id=job.owner_id, type_name=job.type, payload=job.payload, now=now)
    return replace(job, unique_key=key, unique_states=unique.states)


def submitted(prepared: Sequence[NewJob], enqueued: Sequence[Enqueued]) -> None:
    """Count and log jobs the store has taken (whichever door submitted them)."""
    count_enqueued(prepared, enqueued)
    _log_submitted(prepared, enqueued)


def _log_submitted(jobs: Sequence[NewJob], results: Sequence[Enqueued]) -> None:
    """DEBUG, one line per job (as many as jobs); in the API it carries the request id, which
    links a request to the job ids it made (nothing else stores the request id)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for job, result in zip(jobs, results, strict=True):
        said = "submitted" if result.created else "already submitted (idempotency key)"
        if result.duplicate:
            said = "a duplicate of a unique job"
        log.debug("%s to queue %s", said, job.queue, extra=job_fields(result.id, job.type, 0))
