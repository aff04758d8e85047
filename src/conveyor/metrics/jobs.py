"""Job counters and timings: enqueued by the services, the rest by the worker loop.

This module sits in the base layer, so it reads jobs and outcomes through the small
protocols below instead of importing the store's records.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter, Histogram

from conveyor.metrics.families import (
    JOB_QUEUE_WAIT_SECONDS,
    JOB_RUN_SECONDS,
    JOBS_COMPLETED,
    JOBS_ENQUEUED,
    JOBS_FAILED,
    JOBS_RESCUED,
    JOBS_RETRIED,
    JOBS_STARTED,
    SCHEDULE_FIRES,
    SCHEDULE_FIRES_FAILED,
    SCHEDULE_FIRES_SKIPPED,
)


class LabelledJob(Protocol):
    """What labels a job: a NewJob or a ClaimedJob."""

    @property
    def queue(self) -> str: ...

    @property
    def type(self) -> str: ...


class ClaimedLike(LabelledJob, Protocol):
    @property
    def id(self) -> str: ...

    @property
    def attempt(self) -> int: ...


class OutcomeLike(Protocol):
    @property
    def job_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def kind(self) -> str: ...


class EnqueuedLike(Protocol):
    @property
    def created(self) -> bool: ...


class RescueLike(Protocol):
    """A RescueReport: the ids requeued and failed, and each one's (queue, type)."""

    @property
    def requeued(self) -> Sequence[str]: ...

    @property
    def failed(self) -> Sequence[str]: ...

    @property
    def labels(self) -> Mapping[str, tuple[str, str]]: ...


class _Series:
    """One (queue, type)'s children of every job metric.

    `.labels()` takes a lock and builds a key on each call; a worker looks them up once per
    (queue, type) instead of several times per job.
    """

    __slots__ = ("completed", "enqueued", "failed", "retried", "run", "started", "wait")

    def __init__(self, queue: str, type_: str) -> None:
        self.enqueued = JOBS_ENQUEUED.labels(queue, type_)
        self.started = JOBS_STARTED.labels(queue, type_)
        self.completed = JOBS_COMPLETED.labels(queue, type_)
        self.failed = JOBS_FAILED.labels(queue, type_)
        self.retried = JOBS_RETRIED.labels(queue, type_)
        self.run: Histogram = JOB_RUN_SECONDS.labels(queue, type_)
        self.wait: Histogram = JOB_QUEUE_WAIT_SECONDS.labels(queue, type_)

    def outcome(self, kind: str) -> Counter | None:
        if kind == "completed":
            return self.completed
        if kind == "retry":
            return self.retried
        return self.failed if kind == "failed" else None


@functools.cache
def _series(queue: str, type_: str) -> _Series:
    return _Series(queue, type_)


def count_enqueued(jobs: Sequence[LabelledJob], results: Sequence[EnqueuedLike]) -> None:
    """Count the jobs a submission stored; an existing job returned for a repeated
    idempotency key was counted when it was first stored."""
    if len(jobs) == 1:  # a single submit: no Counter
        if results[0].created:
            _series(jobs[0].queue, jobs[0].type).enqueued.inc()
        return
    stored = collections.Counter(
        (job.queue, job.type) for job, result in zip(jobs, results, strict=True) if result.created
    )
    for (queue, type_), count in stored.items():  # one increment per series, not per job
        _series(queue, type_).enqueued.inc(count)


def count_fired(job: LabelledJob) -> None:
    """A cron fire enqueued `job` (the scheduler's enqueue bypasses `count_enqueued`)."""
    _series(job.queue, job.type).enqueued.inc()
    SCHEDULE_FIRES.labels(job.queue, job.type).inc()


def count_fire_failed(kind: str) -> None:
    """A cron fire whose template no longer validates (`kind`: job or workflow)."""
    SCHEDULE_FIRES_FAILED.labels(kind).inc()


def count_fire_skipped(kind: str, reason: str) -> None:
    """A cron fire skipped (`reason`: quota, the owner's queued quota was full)."""
    SCHEDULE_FIRES_SKIPPED.labels(kind, reason).inc()


def count_rescued(report: RescueLike) -> None:
    """Jobs taken back from workers that stopped heartbeating, by outcome."""
    for outcome, ids in (("requeued", report.requeued), ("failed", report.failed)):
        for job_id in ids:
            queue, type_ = report.labels.get(job_id, ("", ""))
            JOBS_RESCUED.labels(queue, type_, outcome).inc()


class JobMetrics:
    """One worker's instrumentation.

    Outcomes count when the database accepted them (Finisher's `on_persisted`), not when a
    handler returned: a late result fenced off after a lost lease changed nothing, and the
    attempt that did count is reported by whoever ran it. Until then each outcome's labels
    wait here, keyed by (job id, attempt), because an Outcome does not carry them.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], _Series] = {}

    def started(self, job: ClaimedLike) -> None:
        """A claim: count it, and observe how long the job waited since it could run."""
        series = _series(job.queue, job.type)
        series.started.inc()
        run_at = getattr(job, "run_at", None)
        if isinstance(run_at, datetime):
            waited = (datetime.now(UTC) - run_at).total_seconds()
            series.wait.observe(max(0.0, waited))  # clocks of two hosts may disagree

    def ran(self, job: ClaimedLike, seconds: float) -> None:
        """An attempt produced an outcome that goes to the database."""
        series = _series(job.queue, job.type)
        series.run.observe(seconds)
        self._pending[(job.id, job.attempt)] = series

    def persisted(self, batch: Iterable[OutcomeLike], accepted: Container[str]) -> None:
        """A batch of outcomes was written; count those the database accepted, one `inc` per
        counter and batch (an `inc` takes a lock; a batch holds up to hundreds of jobs)."""
        tally: dict[Counter, int] = {}
        for outcome in batch:
            series = self._pending.pop((outcome.job_id, outcome.attempt), None)
            if series is None or outcome.job_id not in accepted:
                continue
            counter = series.outcome(outcome.kind)
            if counter is not None:
                tally[counter] = tally.get(counter, 0) + 1
        for counter, count in tally.items():
            counter.inc(count)
