"""What the server answers, as typed objects.

These mirror the API's response bodies (conveyor.api.schemas) instead of importing them, so
that the client needs httpx and pydantic only, never FastAPI or the server's store. Unknown
fields are ignored: a newer server adds fields without breaking an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.states import TERMINAL, JobState


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Progress(Model):
    percent: int
    message: str | None = None


class JobError(Model):
    attempt: int | None = None
    at: str | None = None
    type: str
    message: str
    traceback: str | None = None


class Job(Model):
    id: str
    type: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    result: Any = None
    errors: list[JobError] = []
    progress: Progress
    tags: list[str] = []
    owner_id: str
    idempotency_key: str | None = None
    schedule_id: str | None = None
    timeout: float | None = None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # A submit's answer only: True when the job type is unique and this is the live job that
    # already had the same unique key (nothing was stored); False everywhere else.
    duplicate: bool = False
    workflow_id: str | None = None  # a workflow's step: its workflow and step name
    step: str | None = None
    # Only on a single job's answer (`get`): why a queued job waits (None otherwise).
    waiting_reason: WaitingReason | None = None
    # Only on a single job's answer (`get`): every limit it is under, name -> its key.
    limits: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: the job changes no more unless retried."""
        return self.state in TERMINAL


class WaitingReason(Model):
    """Why a queued job is not running yet: `kind` is limit, rate, quota or turn."""

    kind: str
    message: str
    limit: str | None = None
    key: str | None = None


class Limit(Model):
    """A flow-control limit as the job types declare it."""

    name: str
    kind: str
    max_running: int | None = None
    rate_limit: int | None = None
    per_s: float | None = None
    burst: int | None = None


class LimitKey(Model):
    """One limit's key now: jobs running and ready, and a rate limit's tokens."""

    name: str
    kind: str | None = None
    key: str
    running: int
    ready: int
    max_running: int | None = None
    tokens: float | None = None
    capacity: int | None = None


class Limits(Model):
    limits: list[Limit]
    keys: list[LimitKey]
    next_cursor: str | None = None


class User(Model):
    """An account as an administrator sees it, flow settings included."""

    id: str
    email: str
    role: str
    verified: bool
    disabled: bool
    created_at: datetime
    fair_weight: float = 1.0
    max_queued: int | None = None
    max_running: int | None = None


class JobPage(Model):
    items: list[Job]
    next_cursor: str | None = None


class JobResult(Model):
    id: str
    state: JobState
    result: Any = None


class Schedule(Model):
    id: str
    name: str
    cron: str
    timezone: str
    type: str | None = None  # None: it fires `workflow`
    payload: dict[str, Any]
    workflow: dict[str, Any] | None = None  # a workflow template (the submit's body)
    limits: dict[str, str] = {}  # a job schedule's submit limits, name -> key
    queue: str | None = None
    priority: int
    max_attempts: int | None = None
    timeout: float | None = None
    tags: list[str] = []
    paused: bool
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class JobType(Model):
    name: str
    queue: str
    max_attempts: int
    timeout: float | None = None
    description: str = ""
    payload_schema: dict[str, Any] = {}
    result_schema: dict[str, Any] = {}
    # A unique job type's rule: {"fields", "period_s", "states"} (docs/flow-control.md)
    unique: dict[str, Any] | None = None


class Tokens(Model):
    """A login: a short access token and the rotating refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class EventJob(Model):
    id: str
    type: str
    queue: str
    state: JobState
    attempt: int


class JobEvent(Model):
    """One message of an event stream: `type` is created, started, progress, retrying,
    queued, completed, failed or cancelled; `event_id` is where to resume after it."""

    event_id: str
    type: str
    job: EventJob
    data: dict[str, Any] | None = None
    at: datetime

    @property
    def progress(self) -> Progress | None:
        """The progress a `progress` event reports (None for other events)."""
        if self.type != "progress" or not self.data:
            return None
        return Progress(percent=int(self.data.get("percent", 0)), message=self.data.get("message"))


TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "skipped"})


# ---- workflows (conveyor.api.workflow_schemas) ------------------------------------------------
WORKFLOW_SETTLED = frozenset({"completed", "failed", "cancelled"})


class StepError(Model):
    type: str | None = None
    message: str | None = None
    traceback: str | None = None


class WorkflowStep(Model):
    """One stored step: its job (`job_id`), where it stands, what it produced."""

    name: str
    job_id: str
    type: str
    queue: str
    state: JobState
    depends_on: list[str] = []
    on_dependency_failure: str
    attempt: int
    result: Any = None
    error: StepError | None = None
    ready_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Edge(Model):
    """`to` waits for `from_` (`from` on the wire)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from")
    to: str


class Workflow(Model):
    """A workflow: `state` is running, completed, failed or cancelled; `counts` its steps
    per state. `steps` and `edges` come with a single workflow's answer, not in listings."""

    id: str
    owner_id: str
    name: str
    state: str
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None = None
    step_count: int
    counts: dict[str, int] = {}
    steps: list[WorkflowStep] = []
    edges: list[Edge] = []

    @property
    def finished(self) -> bool:
        """Every step settled: the workflow changes no more unless retried."""
        return self.state in WORKFLOW_SETTLED

    def step(self, name: str) -> WorkflowStep:
        """The step called `name` (KeyError if there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def results(self) -> dict[str, Any]:
        """Each completed step's result by step name."""
        return {s.name: s.result for s in self.steps if s.state is JobState.COMPLETED}


class WorkflowPage(Model):
    items: list[Workflow]
    next_cursor: str | None = None
