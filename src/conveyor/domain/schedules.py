"""Cron schedules: what a user creates, and what is stored. A schedule fires either a job
(job_type, payload and options) or a workflow template (a WorkflowSpec), never both."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import SYSTEM_OWNER
from conveyor.domain.workflows import WorkflowSpec

# What a schedule does with fire times missed by more than the scheduler's misfire grace
# (an outage): fire none of them, one (the latest), or each (the latest `catchup_max`).
MisfirePolicy = Literal["skip", "once", "all"]
MISFIRE_POLICIES: tuple[str, ...] = get_args(MisfirePolicy)


@dataclass(frozen=True, slots=True)
class NewSchedule:
    name: str
    cron: str
    job_type: str | None = None  # a job template (type, payload, options) or ...
    payload: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    queue: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    timeout_s: float | None = None
    tags: tuple[str, ...] = ()
    paused: bool = False
    misfire_policy: MisfirePolicy = "once"
    owner_id: str = SYSTEM_OWNER
    id: str = field(default_factory=uuid7)
    workflow: WorkflowSpec | None = None  # ... a workflow template: each fire submits it
    # A job template's limits among its type's `submit_limits` (name -> key), as a submit's.
    limits: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    id: str
    owner_id: str
    name: str
    cron: str
    timezone: str
    job_type: str | None  # None: the schedule fires `workflow`
    queue: str | None
    payload: dict[str, Any]
    priority: int
    max_attempts: int | None
    timeout_s: float | None
    tags: list[str]
    paused: bool
    misfire_policy: MisfirePolicy
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    workflow: WorkflowSpec | None = None
    limits: dict[str, str] = field(default_factory=dict)  # a job schedule's submit limits
