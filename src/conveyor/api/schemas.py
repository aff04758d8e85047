"""Request and response bodies of the primary API. Requests refuse unknown fields."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
)
from typing_extensions import TypedDict

from conveyor.auth.passwords import MAX_LENGTH, MIN_LENGTH
from conveyor.domain.cron import TIME_ZONES
from conveyor.domain.flow import Unique
from conveyor.domain.jobs import BulkAction, JobFilter, JobRecord
from conveyor.domain.queues import QUEUE_NAME_MAX, QUEUE_NAME_PATTERN
from conveyor.domain.states import JobState


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A tagged union's tag (pydantic puts it in an error's `loc`): marked so, the edge
# (api/errors.py) leaves it out, and `loc` stays a path into the body.
UNION_TAG = "<{}>"


def body_path(loc: Sequence[int | str]) -> list[int | str]:
    """An error's `loc` without the union tags of `UNION_TAG`."""
    return [p for p in loc if not (isinstance(p, str) and p.startswith("<") and p.endswith(">"))]


def _to_utc(value: datetime) -> datetime:
    """Aware times are stored in UTC; one that has no UTC equivalent is invalid input."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


def _iso_text(value: Any) -> Any:
    """A time is ISO 8601 text, as the schema's `date-time` says: pydantic would also read a
    number (`0.5`, in a query too) as seconds since 1970."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        raise ValueError("a date and time in ISO 8601 is expected, e.g. 2026-01-31T12:00:00Z")
    return value


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
UtcDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_to_utc)]
AnyUtcDateTime = Annotated[  # naive means UTC
    datetime, BeforeValidator(_iso_text), AfterValidator(_to_utc)
]

# What the account services check (services/accounts/rules.py), stated in the schema for
# clients and generators. An address is trimmed and lower-cased before it is checked; the
# negative lookahead bounds the local part (before the @) to 64 characters. pydantic's regex
# engine has no lookaround, so the pattern is given to the schema as is and checked here by
# Python's `re` (ECMA-262, which JSON Schema patterns follow, reads it the same way).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^\s*(?![^@]{{65}}){_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+\s*$"
_EMAIL = re.compile(EMAIL_PATTERN)


def _email_syntax(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise ValueError("an e-mail address, at most 64 characters before the @")
    return value


Email = Annotated[
    str,
    Field(min_length=3, max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN}),
    AfterValidator(_email_syntax),
]
NewPassword = Annotated[
    str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, description="8 to 1024 characters.")
]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error: `{"error": {"code", "message", "details"?}}`."""

    error: ErrorDetail


# ---- jobs ------------------------------------------------------------------------------------
class JobCreate(Strict):
    # run_at or delay, not both (null is as good as absent), in the schema for clients too.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["run_at", "delay"],
                "properties": {"run_at": {"type": "string"}, "delay": {"type": "number"}},
            }
        }
    )

    type: str = Field(min_length=1, max_length=100, examples=["sleep"])
    payload: dict[str, Any] = Field(default_factory=dict, examples=[{"seconds": 2}])
    queue: str | None = Field(
        None, min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_NAME_PATTERN
    )
    priority: int | None = Field(None, ge=-1000, le=1000, description="Higher runs first.")
    run_at: UtcDateTime | None = Field(None, description="Not before this time.")
    delay: float | None = Field(None, ge=0, le=366 * 86400, description="Seconds from now.")
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description="Seconds per attempt.")
    tags: list[str] = Field(default_factory=list, max_length=20)
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    callback_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
        description="POSTed the job's completed, failed and cancelled events, signed with "
        "your callback secret (POST /api/v1/webhooks/callback-secret).",
    )
    limits: dict[str, str] | None = Field(
        None,
        max_length=20,
        examples=[{"per_customer": "cust-42", "partner_api": ""}],
        description="Limits of the job type's `submit_limits` (GET /api/v1/job-types) this "
        'job is under: limit name -> key (a string of at most 200 characters; "" is one '
        "key for all). The limit's value (max running, rate) is the type's. A name the type "
        "does not allow is 422 and nothing is stored.",
    )


class JobBatchCreate(Strict):
    jobs: list[JobCreate] = Field(min_length=1)


class Progress(BaseModel):
    percent: int
    message: str | None


class JobError(BaseModel):
    attempt: int | None = None
    at: str | None = None
    type: str
    message: str
    traceback: str | None = None


class JobOut(BaseModel):
    id: str
    type: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    result: Any = None
    errors: list[JobError]
    progress: Progress
    tags: list[str]
    owner_id: str
    idempotency_key: str | None
    schedule_id: str | None
    timeout: float | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    callback_url: str | None = Field(
        None, description="Where the job's end is POSTed (docs/events.md), if it was given."
    )
    workflow_id: str | None = Field(
        None, description="The workflow this job is a step of (docs/workflows.md), if any."
    )
    step: str | None = Field(None, description="Its step's name in that workflow.")

    @classmethod
    def of(
        cls, job: JobRecord, *, tracebacks: bool = False, callback_url: str | None = None
    ) -> Self:
        return cls(
            id=job.id, type=job.type, queue=job.queue, state=job.state, priority=job.priority,
            attempt=job.attempt, max_attempts=job.max_attempts, payload=job.payload,
            result=job.result, errors=job_errors(job, tracebacks),
            progress=Progress(percent=job.progress, message=job.progress_message),
            tags=job.tags, owner_id=job.owner_id, idempotency_key=job.idempotency_key,
            schedule_id=job.schedule_id, timeout=job.timeout_s, run_at=job.run_at,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            callback_url=callback_url, workflow_id=job.workflow_id, step=job.step,
        )  # fmt: skip


class JobSubmitted(JobOut):
    """A submit's answer: the job, and whether it is an earlier one a unique job type's rule
    returned instead of storing this submission."""

    duplicate: bool = Field(
        False,
        description="True: this job type is unique (docs/flow-control.md) and a live job with "
        "the same unique key already existed; it is that job, and nothing was stored (200).",
    )


def job_errors(job: JobRecord, tracebacks: bool) -> list[JobError]:
    """A job's errors as shown: tracebacks are for administrators; owners see the error
    type and message."""
    errors = [
        JobError(**{k: v for k, v in e.items() if k in JobError.model_fields}) for e in job.errors
    ]
    if not tracebacks:
        errors = [e.model_copy(update={"traceback": None}) for e in errors]
    return errors


class _ProgressFields(TypedDict):
    percent: int
    message: str | None


class _JobOutFields(TypedDict):
    """`JobOut`'s fields, as a dict: what a submit answers is serialised from these without
    building a model per job (validating 500 `JobOut`s cost a batch more than its insert).
    tests/api/test_answers.py checks both give the same bytes and the same field names."""

    id: str
    type: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    result: Any
    errors: list[JobError]
    progress: _ProgressFields
    tags: list[str]
    owner_id: str
    idempotency_key: str | None
    schedule_id: str | None
    timeout: float | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    callback_url: str | None
    workflow_id: str | None
    step: str | None
    duplicate: bool


_JOB_JSON = TypeAdapter(_JobOutFields)
_JOBS_JSON = TypeAdapter(list[_JobOutFields])
Answer = tuple[JobRecord, str | None, bool]  # a job, its callback_url, and `duplicate`


def jobs_json(jobs: Sequence[Answer], *, tracebacks: bool) -> bytes:
    """`[JobSubmitted.of(job, ...), ...]` as JSON, built from the records directly: the same
    bytes at a fraction of the CPU."""
    return _JOBS_JSON.dump_json([_fields(*answer, tracebacks) for answer in jobs])


def job_json(
    job: JobRecord, callback_url: str | None, *, tracebacks: bool, duplicate: bool = False
) -> bytes:
    """`JobSubmitted.of(job, ...)` as JSON, the same way."""
    return _JOB_JSON.dump_json(_fields(job, callback_url, duplicate, tracebacks))


def _fields(
    job: JobRecord, callback_url: str | None, duplicate: bool, tracebacks: bool
) -> _JobOutFields:
    return {
        "id": job.id, "type": job.type, "queue": job.queue, "state": job.state,
        "priority": job.priority, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "payload": job.payload, "result": job.result,
        "errors": job_errors(job, tracebacks) if job.errors else [],
        "progress": {"percent": job.progress, "message": job.progress_message},
        "tags": list(job.tags), "owner_id": job.owner_id,
        "idempotency_key": job.idempotency_key, "schedule_id": job.schedule_id,
        "timeout": None if job.timeout_s is None else float(job.timeout_s),
        "run_at": job.run_at, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "callback_url": callback_url,
        "workflow_id": job.workflow_id, "step": job.step, "duplicate": duplicate,
    }  # fmt: skip


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
    total: int | None = Field(None, description="With `sort`/`offset`: every matching job.")
    next_offset: int | None = Field(None, description="With `sort`/`offset`: the next page.")


class JobFilterIn(Strict):
    """Which jobs a bulk action covers; every field narrows it (none: all your jobs)."""

    states: list[JobState] = Field(default_factory=list, max_length=len(JobState))
    type: str | None = Field(None, max_length=100)
    queue: str | None = Field(None, max_length=100)
    tag: str | None = Field(None, max_length=100)
    created_after: AnyUtcDateTime | None = None
    created_before: AnyUtcDateTime | None = None
    text: str | None = Field(None, max_length=200, description="In the id or the payload.")
    owner_id: str | None = Field(None, max_length=64, description="Admins only: one owner.")

    def to_filter(self, scope: str | None) -> JobFilter:
        """The store's filter; `scope` (a non-admin's own id) overrides any owner asked for."""
        return JobFilter(
            owner_id=scope if scope is not None else self.owner_id,
            states=tuple(self.states),
            queue=self.queue,
            type=self.type,
            tag=self.tag,
            created_after=self.created_after,
            created_before=self.created_before,
            text=self.text,
        )


class BulkRequest(Strict):
    # Exactly one of filter and ids (null is as good as absent), in the schema for clients too.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["filter"], "properties": {"filter": {"type": "object"}}},
                {"required": ["ids"], "properties": {"ids": {"type": "array"}}},
            ]
        }
    )

    action: BulkAction
    filter: JobFilterIn | None = Field(None, description="All jobs matching this ...")
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=10_000, description="... or these jobs (give one of the two)."
    )


class BulkOut(BaseModel):
    matched: int = Field(description="Jobs selected (distinct ids, or matches of the filter).")
    changed: int
    skipped: int = Field(description="Not in a state the action changes, or not yours.")


class JobResult(BaseModel):
    id: str
    state: JobState
    result: Any = None


class QueueStats(BaseModel):
    queue: str
    counts: dict[str, int]
    oldest_queued_at: datetime | None = None


class ThroughputOut(BaseModel):
    minute: datetime
    completed: int
    failed: int


class ThroughputMinuteOut(BaseModel):
    minute: datetime
    enqueued: int
    completed: int
    failed: int
    failure_rate: float | None = Field(description="failed / (completed + failed); null: none.")


class Stats(BaseModel):
    totals: dict[str, int]
    queues: list[QueueStats]
    throughput: list[ThroughputOut]
    workers_alive: int


class UniqueOut(BaseModel):
    """A unique job type's rule (docs/flow-control.md, "Unique jobs")."""

    fields: list[str] | None = Field(description="The payload fields compared; null: all.")
    period_s: float | None = Field(description="Jobs are unique within periods this long.")
    states: list[JobState] = Field(description="While in these states a job holds its key.")

    @classmethod
    def of(cls, unique: Unique | None) -> UniqueOut | None:
        if unique is None:
            return None
        fields = None if unique.fields is None else list(unique.fields)
        states = [state for state in JobState if state in unique.states]
        return cls(fields=fields, period_s=unique.period_s, states=states)


class JobTypeOut(BaseModel):
    name: str
    queue: str
    max_attempts: int
    timeout: float | None
    description: str
    payload_schema: dict[str, Any]
    result_schema: dict[str, Any]
    unique: UniqueOut | None = Field(None, description="Set: a duplicate submit answers 200.")
    submit_limits: list[str] = Field(
        default_factory=list, description="Limits a submit may apply (`limits`), by name."
    )


# ---- queues and workers ----------------------------------------------------------------------
class QueueOut(BaseModel):
    name: str
    paused: bool = Field(description="Paused: accepts jobs, but no worker claims them.")
    counts: dict[JobState, int] = Field(description="Jobs per state, every state listed.")
    oldest_queued_age_s: float | None = Field(
        None, description="Seconds the longest-waiting queued job has been due."
    )


class RunningJobOut(BaseModel):
    id: str
    type: str
    queue: str
    started_at: datetime | None


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    current_jobs: list[RunningJobOut]


# ---- schedules -------------------------------------------------------------------------------
def _known_zone(name: str) -> str:
    """The schema's enum is the list (domain/cron.py TIME_ZONES): refused as the enum says."""
    if name not in TIME_ZONES:
        raise ValueError(f"unknown time zone: {name!r}")
    return name


# An IANA name this server's tz database has (zoneinfo.available_timezones()).
TimeZone = Annotated[
    str, AfterValidator(_known_zone), Field(json_schema_extra={"enum": sorted(TIME_ZONES)})
]


class Health(BaseModel):
    status: str
    version: str


# ---- accounts --------------------------------------------------------------------------------
class Register(Strict):
    email: Email = Field(examples=["ada@example.com"])
    password: NewPassword
    role: str | None = Field(None, pattern="^(user|admin)$", description="admin: admins only")


class SignUp(Strict):
    """An address and a new password: the reference adapters' sign-ups (001, 003), whose
    sign-ins take any text (`Credentials` there), as a wrong password answers alike."""

    email: Email = Field(examples=["ada@example.com"])
    password: NewPassword


class Login(Strict):
    email: str = Field(min_length=1, max_length=320, description="E-mail (or username).")
    password: str = Field(min_length=1, max_length=1024)


class VerifyOtp(Strict):
    # Not `Email`: any address, well-formed or not, answers like a wrong code (no hint).
    email: str = Field(min_length=3, max_length=320)
    code: str = Field(min_length=1, max_length=16, examples=["123456"])


class EmailOnly(Strict):
    email: Email


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class Accepted(BaseModel):
    message: str


class PasswordChange(Strict):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: NewPassword


class UserOut(BaseModel):
    id: str
    email: str
    role: str
    verified: bool
    disabled: bool
    created_at: datetime
    # flow control (docs/flow-control.md): the share under fair dispatch, and the user's own
    # quotas (null: the server's default, CONVEYOR_QUOTA_MAX_QUEUED/RUNNING; 0: no cap)
    fair_weight: float = 1.0
    max_queued: int | None = None
    max_running: int | None = None


class UserCreate(Strict):
    email: Email
    password: NewPassword
    role: str = Field("user", pattern="^(user|admin)$")
    verified: StrictBool = True


class UserUpdate(Strict):
    role: str | None = Field(None, pattern="^(user|admin)$")
    disabled: StrictBool | None = None  # strict: `0` or `"yes"` is not a boolean
    verified: StrictBool | None = None
    # Flow settings: a field left out is kept; null puts back the default (fair_weight 1,
    # the quotas the server's CONVEYOR_QUOTA_MAX_QUEUED / _RUNNING); a quota of 0 is no cap.
    fair_weight: float | None = Field(
        None, gt=0, le=1000, description="share under fair dispatch (default 1)"
    )
    max_queued: int | None = Field(
        None, ge=0, le=1_000_000_000, description="jobs waiting at once (0: no cap)"
    )
    max_running: int | None = Field(
        None, ge=0, le=1_000_000_000, description="jobs running at once (0: no cap)"
    )


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once: store it now.")


class WaitingReasonOut(BaseModel):
    """Why a queued job is not running yet (docs/flow-control.md, "Seeing limits")."""

    kind: str = Field(
        description="limit (a concurrency limit at its cap), rate (a rate limit out of "
        "tokens), quota (the owner's running quota), turn (nothing holds it: its turn)"
    )
    message: str
    limit: str | None = None
    key: str | None = None


class JobDetailOut(JobOut):
    waiting_reason: WaitingReasonOut | None = Field(
        None, description="Why a queued job waits; null unless the job is queued."
    )
    limits: dict[str, str] = Field(
        default_factory=dict,
        description="Every limit the job is under (declared by its type, chosen at its "
        "submit, its owner's running quota): limit name -> the key stored at submit.",
    )


class LimitOut(BaseModel):
    """A limit as the job types declare it (flow_limits)."""

    name: str
    kind: str = Field(description="concurrency or rate")
    max_running: int | None = None
    rate_limit: int | None = None
    per_s: float | None = None
    burst: int | None = None


class LimitKeyOut(BaseModel):
    """One limit's key now: jobs running and ready (queued) under it, and for a rate limit
    the tokens in its bucket at this moment (null before its first use)."""

    name: str
    kind: str | None
    key: str
    running: int
    ready: int
    max_running: int | None = None
    tokens: float | None = None
    capacity: int | None = None


class LimitsOut(BaseModel):
    limits: list[LimitOut]
    keys: list[LimitKeyOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
