"""Reference 002 (store-visit image jobs): ``POST /api/jobs`` and ``GET /api/status?jobid=``.

Submissions become ``store_visits`` jobs (``conveyor.handlers.store_visits`` does the work).
Every error of these two calls has the reference's shape ``{"error": "<message>"}``: bad input
and unknown jobs are 400 as documented; authentication, rate limits and outages keep 401,
403, 429 and 503. As in the reference's Go server, unknown JSON fields are ignored.

Secure default: a token is required. ``ANONYMOUS_STORE_VISITS=true`` allows calls without one;
their jobs belong to one shared owner, ``anonymous`` (anyone holding a job id may read its
status, as in the reference), submissions are rate-limited per client address, and a caller
who does send a token still owns their jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from conveyor.api.deps import (
    Context,
    OptionalUser,
    charge_submission,
    client_ip,
    owner_scope,
    verified_user,
)
from conveyor.api.errors import status_of
from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import JobState
from conveyor.errors import ConveyorError, InvalidInput, NotFound, Unauthenticated
from conveyor.handlers.store_visits import StoreError, StoreVisitsFailed, StoreVisitsPayload
from conveyor.services.jobs import Submission

JOB_TYPE = "store_visits"
ANONYMOUS_OWNER = "anonymous"
COUNT_MISMATCH = "The 'count' field does not match the number of 'visits'."
JOB_NOT_FOUND = "Job not found"
MAX_JOB_ID = 64
VISIT_FIELDS = ("store_id", "image_url", "visit_time")

Status = Literal["ongoing", "completed", "failed"]
STATUS: dict[JobState, Status] = {
    JobState.WAITING: "ongoing",  # a workflow's step (never one of this door's own jobs)
    JobState.SCHEDULED: "ongoing",
    JobState.QUEUED: "ongoing",
    JobState.RUNNING: "ongoing",
    JobState.RETRYING: "ongoing",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
    JobState.SKIPPED: "failed",  # not run: a workflow's dependency failed
}


def error_response(exc: ConveyorError) -> JSONResponse:
    """A typed error in reference 002's shape and status."""
    code = 400 if isinstance(exc, InvalidInput | NotFound) else status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
    retry_after = exc.details.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(float(retry_after) + 0.999)))
    return JSONResponse({"error": exc.message}, status_code=code, headers=headers)


class _ReferenceErrors(APIRoute):
    """Routes whose errors, their dependencies' included, answer in the reference's shape
    (the app-wide handlers would give the primary API's ``{"error": {...}}``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def reshaped(request: Request) -> Response:
            try:
                return await handle(request)
            except ConveyorError as exc:
                return error_response(exc)

        return reshaped


router = APIRouter(prefix="/api", tags=["compat: store visits (002)"], route_class=_ReferenceErrors)


class StoreVisitsError(BaseModel):
    error: str


class StoreVisitsCreated(BaseModel):
    job_id: str


class StoreVisitsStatus(BaseModel):
    job_id: str
    status: Status
    error: list[StoreError] | None = None


@dataclass(frozen=True)
class Caller:
    """Who is calling: the owner of new jobs, the owner filter for reads (None: any owner,
    for administrators) and the identity submissions are rate-limited by."""

    owner_id: str
    scope: str | None
    limit_key: str


async def caller(request: Request, ctx: Context, user: OptionalUser) -> Caller:
    """A verified user when a token is sent (a bad token is refused, never ignored); else the
    shared anonymous owner if the deployment allows tokenless calls."""
    if user is not None:
        verified = await verified_user(user, ctx)
        return Caller(verified.id, owner_scope(verified), verified.id)
    if not ctx.settings.anonymous_store_visits:
        raise Unauthenticated("a bearer token is required")
    return Caller(ANONYMOUS_OWNER, ANONYMOUS_OWNER, f"{ANONYMOUS_OWNER}@{client_ip(request)}")


CallerDep = Annotated[Caller, Depends(caller)]


async def submitter(who: CallerDep, ctx: Context) -> Caller:
    """A caller within the job-submission rate."""
    await charge_submission(ctx, who.limit_key)
    return who


Submitter = Annotated[Caller, Depends(submitter)]


def parse_submission(raw: bytes) -> dict[str, Any]:
    """The ``store_visits`` payload of a reference request body, or InvalidInput saying what
    is wrong, in the reference's words where it has them."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")
    visits, count = body.get("visits"), body.get("count")
    if not isinstance(visits, list):
        raise InvalidInput("The 'visits' field must be a list.")
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidInput("The 'count' field must be an integer.")
    if count != len(visits):
        raise InvalidInput(COUNT_MISMATCH)
    payload = {"visits": [_visit(number, visit) for number, visit in enumerate(visits, 1)]}
    try:
        StoreVisitsPayload.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    return payload


def _visit(number: int, visit: object) -> dict[str, Any]:
    """The documented fields of one visit, which must have a store and at least one image."""
    if not isinstance(visit, dict):
        raise InvalidInput(f"Visit {number} must be a JSON object.")
    store_id, urls = visit.get("store_id"), visit.get("image_url")
    if not isinstance(store_id, str) or not store_id.strip():
        raise InvalidInput(f"Visit {number} is missing 'store_id'.")
    if not isinstance(urls, list) or not urls:
        raise InvalidInput(f"Visit {number} has no 'image_url'.")
    return {name: visit[name] for name in VISIT_FIELDS if visit.get(name) is not None}


def _first_problem(exc: ValidationError) -> str:
    """``Invalid visits[2].image_url[1]: <why>`` (positions counted from 1, like above)."""
    first = exc.errors(include_url=False)[0]
    where = ""
    for part in first["loc"]:
        where += f"[{part + 1}]" if isinstance(part, int) else f".{part}"
    why = first["msg"].removeprefix("Value error, ").rstrip(".")
    return f"Invalid {where.lstrip('.') or 'request'}: {why}."


_SUBMISSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["count", "visits"],
    "properties": {
        "count": {"type": "integer", "description": "The number of visits."},
        "visits": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["store_id", "image_url"],
                "properties": {
                    "store_id": {"type": "string"},
                    "image_url": {"type": "array", "items": {"type": "string"}},
                    "visit_time": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
    "example": {
        "count": 1,
        "visits": [
            {
                "store_id": "RP00002",
                "image_url": ["https://www.gstatic.com/webp/gallery/2.jpg"],
                "visit_time": "2024-11-16T12:00:00Z",
            }
        ],
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": StoreVisitsError, "description": why}
    for code, why in (
        (400, "invalid input, or no such job"),
        (401, "a token is required"),
        (403, "the e-mail address is not verified"),
        (429, "too many submissions"),
    )
}


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _SUBMISSION_SCHEMA}},
        }
    },
)
async def submit(request: Request, who: Submitter, ctx: Context) -> StoreVisitsCreated:
    """Submit store visits; each image is downloaded and measured by a `store_visits` job.
    The body is read here rather than by FastAPI so every problem answers in this shape."""
    payload = parse_submission(await request.body())
    enqueued = await ctx.engine.jobs.submit(
        Submission(type=JOB_TYPE, payload=payload), owner_id=who.owner_id
    )
    return StoreVisitsCreated(job_id=enqueued.id)


@router.get("/status", responses=_ERRORS, response_model_exclude_none=True)
async def job_status(who: CallerDep, ctx: Context, jobid: str = "") -> StoreVisitsStatus:
    """`ongoing`, `completed`, or `failed` with one `{store_id, error}` per failing store."""
    job = await _find(ctx, who, jobid)
    state = STATUS[job.state]
    errors = store_errors(job) if state == "failed" else None
    return StoreVisitsStatus(job_id=job.id, status=state, error=errors)


async def _find(ctx: Context, who: Caller, job_id: str) -> JobRecord:
    """The caller's store-visit job; anything else, another owner's included, is not found."""
    if not job_id:
        raise InvalidInput("The 'jobid' query parameter is required.")
    if len(job_id) > MAX_JOB_ID:
        raise NotFound(JOB_NOT_FOUND)
    try:
        job = await ctx.engine.jobs.get(job_id, who.scope)
    except NotFound:
        raise NotFound(JOB_NOT_FOUND) from None
    if job.type != JOB_TYPE:
        raise NotFound(JOB_NOT_FOUND)
    return job


def store_errors(job: JobRecord) -> list[StoreError]:
    """The per-store errors of a failed (or cancelled) job. When the job failed as a whole
    (a timeout, a crash, a cancel) every store of the job gets that one reason."""
    last = job.errors[-1] if job.errors else {}
    if job.state is JobState.CANCELLED:
        return _every_store(job, "the job was cancelled")
    if last.get("type") == StoreVisitsFailed.__name__:
        return StoreVisitsFailed.store_errors(str(last["message"]))
    return _every_store(job, str(last.get("message") or "the job failed"))


def _every_store(job: JobRecord, reason: str) -> list[StoreError]:
    stores = dict.fromkeys(str(visit.get("store_id")) for visit in job.payload.get("visits", []))
    return [StoreError(store_id=store_id, error=reason) for store_id in stores]
