"""Reference 000 (JobScope): /login, /jobs, /jobs/{id}, /jobs/{id}/status, /jobs/stats.

CloudTask (001) documents the same `POST /jobs {"type","payload"}` and `GET /jobs[/{id}]`
calls, so these routes serve both. Secure defaults: reading jobs needs a token and shows
only the caller's jobs; `/jobs/stats` stays public with aggregate counts only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.api.deps import (
    NO_STORE,
    Context,
    SubmittingUser,
    Throttle,
    VerifiedUser,
    limited,
    owner_scope,
)
from conveyor.compat.shapes import CompatJob
from conveyor.domain.jobs import JobFilter
from conveyor.domain.states import JobState
from conveyor.errors import Forbidden
from conveyor.services.jobs import Submission

router = APIRouter(tags=["compat: JobScope (000), CloudTask (001)"])


class LoginBody(BaseModel):
    """`{"username", "password"}` (JobScope) or `{"email", "password"}` (task manager, 004)."""

    # The schema says what `_one_login` checks: a non-empty username or e-mail.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
                for name in ("username", "email")
            ]
        },
    )

    username: str | None = Field(None, max_length=320)
    email: str | None = Field(None, max_length=320)
    password: str = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_login(self) -> LoginBody:
        if not (self.username or self.email):
            raise ValueError("give a username or an email")
        return self


class TokenOut(BaseModel):
    token: str


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field("generic", min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, max_length=100)
    priority: int | None = Field(None, ge=-1000, le=1000)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: JobState


class JobStats(BaseModel):
    total: int
    by_status: dict[str, int]


@router.post("/login", dependencies=[limited("login"), NO_STORE])
async def login(body: LoginBody, ctx: Context, throttle: Throttle) -> TokenOut:
    """The username may be a username (the first admin is `admin`) or an e-mail."""
    login = body.username or body.email or ""
    pair = await ctx.accounts.login(login, body.password, throttle=throttle)
    return TokenOut(token=pair.access)


@router.get("/jobs/stats")
async def job_stats(ctx: Context) -> JobStats:
    """Public: aggregate counts only, never a job."""
    counts = await ctx.engine.queues.public_counts()
    by_status = dict.fromkeys((s.value for s in JobState), 0)
    for count in counts:
        by_status[count.state.value] += count.count
    return JobStats(total=sum(by_status.values()), by_status=by_status)


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
async def create_job(body: CreateJob, user: SubmittingUser, ctx: Context) -> CompatJob:
    submission = Submission(
        type=body.type, payload=body.payload, queue=body.queue, priority=body.priority
    )
    enqueued = await ctx.engine.jobs.submit_within_quota(submission, user.id, user.max_queued)
    return CompatJob.of(await ctx.engine.jobs.get(enqueued.id, user.id))


@router.get("/jobs")
async def list_jobs(user: VerifiedUser, ctx: Context) -> list[CompatJob]:
    where = JobFilter(owner_id=owner_scope(user))
    jobs = await ctx.engine.jobs.newest_first(where, limit=ctx.settings.max_page_size)
    return [CompatJob.of(job) for job in jobs]


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, user: VerifiedUser, ctx: Context) -> CompatJob:
    return CompatJob.of(await ctx.engine.jobs.get(job_id, owner_scope(user)))


@router.patch("/jobs/{job_id}/status")
async def change_status(
    job_id: str, body: StatusChange, user: VerifiedUser, ctx: Context
) -> CompatJob:
    """Owners may cancel; admins may make any move the job state machine allows (else 409)."""
    if user.is_admin:
        return CompatJob.of(await ctx.engine.jobs.set_state(job_id, body.status))
    if body.status is not JobState.CANCELLED:
        await ctx.engine.jobs.get(job_id, user.id)  # 404 first if it is not theirs
        raise Forbidden("owners may only cancel their jobs; other changes are for admins")
    return CompatJob.of(await ctx.engine.jobs.cancel(job_id, user.id))
