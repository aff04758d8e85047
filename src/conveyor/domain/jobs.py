"""Jobs as every layer sees them: what is submitted, stored, claimed, reported and listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from conveyor.domain.flow import LimitKey
from conveyor.domain.ids import uuid7
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.tracing import current_context

SYSTEM_OWNER = "system"
# The owner of the jobs the account service submits for itself (its mail): kept apart so that
# nothing public counts them (a resend to a registered address would otherwise show).
ACCOUNTS_OWNER = "accounts"


@dataclass(frozen=True, slots=True)
class NewJob:
    type: str
    payload: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    run_at: datetime | None = None
    timeout_s: float | None = None
    idempotency_key: str | None = None
    owner_id: str = SYSTEM_OWNER
    tags: tuple[str, ...] = ()
    schedule_id: str | None = None
    id: str = field(default_factory=uuid7)
    callback_url: str | None = None  # kept in job_callbacks, only for jobs that have one
    # Flow control, evaluated once at submit from the job type's declarations (domain/flow.py).
    fair_key: str | None = None  # None: fair dispatch off (claim order is run_at's)
    limit_keys: tuple[LimitKey, ...] = ()
    unique_key: str | None = None
    unique_states: frozenset[JobState] = frozenset()
    # The W3C trace context it is submitted under (conveyor/tracing.py; None when not
    # tracing): taken where the job is made, so every door (the REST submit, the library,
    # a workflow's steps, steps a run appends) stores its caller's span with it.
    trace_context: str | None = field(default_factory=current_context)


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: str
    created: bool  # False: an existing job was returned (its idempotency key, or `duplicate`)
    state: JobState
    # The stored job, as inserted (created ones only): the API answers a submit with it
    # rather than reading the row back.
    record: JobRecord | None = None
    # True: a unique job type's live job with the same unique key was returned, nothing stored
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    owner_id: str
    queue: str
    type: str
    payload: dict[str, Any]
    priority: int
    state: JobState
    attempt: int
    max_attempts: int
    run_at: datetime
    lease_expires_at: datetime | None
    worker_id: str | None
    timeout_s: float | None
    idempotency_key: str | None
    progress: int
    progress_message: str | None
    result: Any
    errors: list[dict[str, Any]]
    tags: list[str]
    schedule_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    workflow_id: str | None = None  # a workflow's step: its workflow (docs/workflows.md)
    step: str | None = None  # ... and its step name


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: str
    type: str
    queue: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_s: float | None
    priority: int
    owner_id: str
    idempotency_key: str | None
    run_at: datetime | None = None  # when it became due: claim time minus this is queue wait
    trace_context: str | None = None  # its submitter's, continued by the run's span
    # A workflow's step: its workflow, its name, and whether it has dependencies (whose
    # results the worker reads before it runs it).
    workflow_id: str | None = None
    step: str | None = None
    depends: bool = False


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str | None = None

    def as_entry(self, attempt: int, at: datetime, worker_id: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "attempt": attempt,
            "at": at.isoformat(),
            "type": self.type,
            "message": self.message,
        }
        if self.traceback:
            entry["traceback"] = self.traceback
        if worker_id:
            entry["worker_id"] = worker_id
        return entry


OutcomeKind = Literal["completed", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports for one attempt; persisted in batches."""

    job_id: str
    attempt: int
    kind: OutcomeKind
    result: Any = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RescueReport:
    requeued: list[str]
    failed: list[str]
    # (queue, type) and attempt of each rescued job, for metrics and logs
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing (or a bulk action) covers; `owner_id=None` means every owner."""

    owner_id: str | None = None
    states: tuple[JobState, ...] = ()
    queue: str | None = None
    type: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    text: str | None = None  # in the id or the payload's JSON text, any case; no wildcards


# The columns a job listing may be sorted by: a whitelist, since the key comes from a URL.
SORT_KEYS = ("created_at", "run_at", "finished_at", "priority", "state", "type", "queue", "attempt")


@dataclass(frozen=True, slots=True)
class JobSort:
    """A listing's order: one of SORT_KEYS, then the id in the same direction as a tiebreak."""

    key: str = "created_at"
    descending: bool = True

    @classmethod
    def parse(cls, text: str) -> JobSort:
        """`"-created_at"` is newest first; anything not in SORT_KEYS is refused."""
        key = text.removeprefix("-")
        if key not in SORT_KEYS:
            raise InvalidInput(
                f"cannot sort by {text!r}; use one of {', '.join(SORT_KEYS)} (prefix - to reverse)",
                field="sort",
            )
        return cls(key, text.startswith("-"))


@dataclass(frozen=True, slots=True)
class JobListPage:
    items: list[JobRecord]
    total: int  # every job the filter matches, not just this page


BulkAction = Literal["retry", "cancel", "delete"]


BULK_ACTIONS: tuple[BulkAction, ...] = ("retry", "cancel", "delete")


@dataclass(frozen=True, slots=True)
class BulkResult:
    """matched = changed + skipped; skipped: in the wrong state, another owner's, or gone."""

    matched: int
    changed: int
    skipped: int


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    minute: datetime
    completed: int
    failed: int
