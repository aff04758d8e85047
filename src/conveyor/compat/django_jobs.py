"""Reference 003 (Django + Celery): register, verify-otp, login, token refresh, jobs, results.

Scheduled jobs start at their time (durable: they are rows), never before; a
`scheduled_time` in the past is refused with 400, as the reference does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from conveyor.api.deps import NO_STORE, Context, SubmittingUser, Throttle, VerifiedUser, limited
from conveyor.api.schemas import ErrorBody, SignUp
from conveyor.domain.jobs import JobFilter, JobRecord
from conveyor.domain.states import JobState
from conveyor.services.jobs import Submission

router = APIRouter(prefix="/api", tags=["compat: Django + Celery (003)"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class Otp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)  # any: answers like a wrong code
    otp: str = Field(min_length=1, max_length=16)


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh: str = Field(min_length=1, max_length=4096)


class Pair(BaseModel):
    access: str
    refresh: str


class Message(BaseModel):
    message: str


class NewJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    scheduled_time: AwareDatetime | None = None


class DjangoJob(BaseModel):
    id: str
    title: str
    description: str
    status: str
    scheduled_time: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, job: JobRecord) -> DjangoJob:
        return cls(
            id=job.id,
            title=str(job.payload.get("title", "")),
            description=str(job.payload.get("description", "")),
            status=job.state.value,
            scheduled_time=job.run_at if job.run_at > job.created_at else None,
            created_at=job.created_at,
        )


class DjangoResult(BaseModel):
    job_id: str
    title: str
    result: Any
    completed_at: datetime | None


@router.post("/register/", status_code=status.HTTP_201_CREATED, dependencies=[limited("register")])
async def register(body: SignUp, ctx: Context) -> Message:
    """A 6-digit code is e-mailed (the console backend prints it to the log by default)."""
    await ctx.accounts.register(body.email, body.password)
    return Message(message="Registered. Check your e-mail for the verification code.")


@router.post("/verify-otp/", dependencies=[limited("otp")])
async def verify_otp(body: Otp, ctx: Context) -> Message:
    await ctx.accounts.verify_otp(body.email, body.otp)
    return Message(message="E-mail verified.")


@router.post("/login/", dependencies=[limited("login"), NO_STORE])
async def login(body: Credentials, ctx: Context, throttle: Throttle) -> Pair:
    pair = await ctx.accounts.login(body.email, body.password, throttle=throttle)
    return Pair(access=pair.access, refresh=pair.refresh)


@router.post("/token/refresh/", dependencies=[limited("refresh"), NO_STORE])
async def refresh(body: Refresh, ctx: Context) -> Pair:
    pair = await ctx.accounts.refresh(body.refresh)
    return Pair(access=pair.access, refresh=pair.refresh)


class FieldErrors(RootModel[dict[str, list[str]]]):
    """Django REST framework's answer to invalid input: messages per field."""


PAST: dict[int | str, dict[str, Any]] = {
    400: {
        # FieldErrors as the reference answers; a body that is not even UTF-8 text gets the
        # API's error shape before the route is reached.
        "model": FieldErrors | ErrorBody,
        "description": "The scheduled time is in the past, or the body is not text.",
    }
}


@router.post(
    "/jobs/", status_code=status.HTTP_201_CREATED, response_model=DjangoJob, responses=PAST
)
async def create_job(body: NewJob, user: SubmittingUser, ctx: Context) -> Any:
    if body.scheduled_time is not None and body.scheduled_time <= datetime.now(UTC):
        return JSONResponse(
            {"scheduled_time": ["The scheduled time cannot be in the past."]}, status_code=400
        )
    submission = Submission(
        type="generic",
        payload={"title": body.title, "description": body.description},
        run_at=body.scheduled_time,
    )
    enqueued = await ctx.engine.jobs.submit_within_quota(submission, user.id, user.max_queued)
    return DjangoJob.of(await ctx.engine.jobs.get(enqueued.id, user.id))


@router.get("/jobs/")
async def list_jobs(user: VerifiedUser, ctx: Context) -> list[DjangoJob]:
    """The caller's own jobs (admins too: this is the owner's view)."""
    jobs = await ctx.engine.jobs.newest_first(
        JobFilter(owner_id=user.id, type="generic"), limit=ctx.settings.max_page_size
    )
    return [DjangoJob.of(job) for job in jobs]


@router.get("/job-results/")
async def job_results(user: VerifiedUser, ctx: Context) -> list[DjangoResult]:
    """Results of the caller's completed jobs only."""
    where = JobFilter(owner_id=user.id, type="generic", states=(JobState.COMPLETED,))
    jobs = await ctx.engine.jobs.newest_first(where, limit=ctx.settings.max_page_size)
    return [
        DjangoResult(
            job_id=job.id,
            title=str(job.payload.get("title", "")),
            result=job.result,
            completed_at=job.finished_at,
        )
        for job in jobs
    ]
