"""Request and response bodies of the schedule routes (docs/schedules.md): a schedule fires
a job template (`type`, `payload` and options) or a workflow template (`workflow`, the body
of a workflow submit; docs/workflows.md, "Cron")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictBool

from conveyor.api.schemas import Strict, TimeZone
from conveyor.api.workflow_schemas import WorkflowCreate
from conveyor.domain.schedules import MisfirePolicy, ScheduleRecord
from conveyor.domain.workflows import DependencyPolicy, WorkflowSpec, spec_json

_LIMITS = (
    "Limits of the job type's `submit_limits` (GET /api/v1/job-types) each fire's job is "
    'under, as a submit\'s `limits`: limit name -> key (at most 200 characters; "" is one key '
    "for all). Checked as a submit checks them: a name the type does not allow is 422."
)
_LIMITS_EXAMPLE = [{"per_customer": "cust-42"}]

_MISFIRE = (
    "Fire times missed by more than the scheduler's misfire grace (an outage): skip (fire "
    "none), once (fire the latest), all (fire each, up to a bound). Fires less late than the "
    "grace always fire."
)


class ScheduleCreate(Strict):
    """A schedule of a job: each fire enqueues one job of `type`."""

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, examples=["*/5 * * * *"])
    timezone: TimeZone = Field("UTC", examples=["Europe/Paris"])
    type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, min_length=1, max_length=100)
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description="Seconds per attempt.")
    tags: list[str] = Field(default_factory=list, max_length=20)
    paused: StrictBool = False
    misfire_policy: MisfirePolicy = Field("once", description=_MISFIRE)
    limits: dict[str, str] | None = Field(
        None, max_length=20, examples=_LIMITS_EXAMPLE, description=_LIMITS
    )


class WorkflowScheduleCreate(Strict):
    """A schedule of a workflow template: each fire submits one workflow of `workflow`. Its
    options are its steps' (no `type`, `payload`, `queue`, ... beside it)."""

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, examples=["0 3 * * *"])
    timezone: TimeZone = Field("UTC", examples=["Europe/Paris"])
    workflow: WorkflowCreate = Field(description="The body of POST /api/v1/workflows.")
    tags: list[str] = Field(default_factory=list, max_length=20)
    paused: StrictBool = False
    misfire_policy: MisfirePolicy = Field("once", description=_MISFIRE)


class ScheduleUpdate(Strict):
    """The fields to change (a field left out, or null, is unchanged; for `queue`,
    `max_attempts`, `timeout` and `limits` null means the default: none for `limits`). A
    workflow schedule takes a new template as `workflow`, checked as at create."""

    cron: str | None = Field(None, min_length=1, max_length=200)
    timezone: TimeZone | None = None
    type: str | None = Field(None, min_length=1, max_length=100)
    payload: dict[str, Any] | None = None
    queue: str | None = Field(None, min_length=1, max_length=100)
    priority: int | None = Field(None, ge=-1000, le=1000)
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description="Seconds per attempt.")
    tags: list[str] | None = Field(None, max_length=20)
    paused: StrictBool | None = None
    misfire_policy: MisfirePolicy | None = None
    limits: dict[str, str] | None = Field(
        None, max_length=20, examples=_LIMITS_EXAMPLE, description=_LIMITS
    )
    workflow: WorkflowCreate | None = Field(
        None, description="A workflow schedule's new template: the body of POST /api/v1/workflows."
    )


class TemplateStepOut(BaseModel):
    """A step of a stored template: nested workflows were flattened when it was saved."""

    name: str
    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    on_dependency_failure: DependencyPolicy | None = None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None


class WorkflowTemplateOut(BaseModel):
    """What a workflow schedule fires: a body of POST /api/v1/workflows, flattened."""

    name: str
    on_dependency_failure: DependencyPolicy
    steps: list[TemplateStepOut]


class ScheduleOut(BaseModel):
    id: str
    name: str
    cron: str
    timezone: str
    type: str | None = Field(description="null: the schedule fires `workflow`.")
    payload: dict[str, Any]
    workflow: WorkflowTemplateOut | None = None
    limits: dict[str, str] = Field(
        default_factory=dict, description="A job schedule's submit limits (name -> key)."
    )
    queue: str | None
    priority: int
    max_attempts: int | None
    timeout: float | None
    tags: list[str]
    paused: bool
    misfire_policy: MisfirePolicy
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: ScheduleRecord) -> ScheduleOut:
        return cls(
            id=s.id, name=s.name, cron=s.cron, timezone=s.timezone, type=s.job_type,
            payload=s.payload, queue=s.queue, priority=s.priority, max_attempts=s.max_attempts,
            timeout=s.timeout_s, tags=s.tags, paused=s.paused, misfire_policy=s.misfire_policy,
            next_fire_at=s.next_fire_at, workflow=_template(s.workflow), limits=s.limits,
            last_fire_at=s.last_fire_at, created_at=s.created_at, updated_at=s.updated_at,
        )  # fmt: skip


def _template(spec: WorkflowSpec | None) -> WorkflowTemplateOut | None:
    if spec is None:
        return None
    data = spec_json(spec)
    steps = [TemplateStepOut.model_validate({k: v for k, v in st.items() if v is not None})
             for st in data["steps"]]  # fmt: skip
    return WorkflowTemplateOut(
        name=spec.name, on_dependency_failure=spec.on_dependency_failure, steps=steps
    )
