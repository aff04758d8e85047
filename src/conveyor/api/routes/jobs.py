"""Jobs: submit (one or many), list, read, cancel, retry, delete, result, progress, stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from conveyor.api.deps import (
    AppContext,
    Context,
    Submitter,
    VerifiedUser,
    charge_submission,
    owner_scope,
)
from conveyor.api.schemas import (
    Answer,
    AnyUtcDateTime,
    BulkOut,
    BulkRequest,
    ErrorBody,
    JobBatchCreate,
    JobCreate,
    JobDetailOut,
    JobOut,
    JobPage,
    JobResult,
    JobSubmitted,
    JobTypeOut,
    Progress,
    QueueStats,
    Stats,
    ThroughputMinuteOut,
    ThroughputOut,
    UniqueOut,
    WaitingReasonOut,
    job_json,
    jobs_json,
)
from conveyor.domain.jobs import SORT_KEYS, Enqueued, JobFilter, JobRecord
from conveyor.domain.states import JobState
from conveyor.errors import Conflict, InvalidInput
from conveyor.services.accounts import User
from conveyor.services.jobs import Submission

router = APIRouter(prefix="/api/v1", tags=["jobs"])
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Dedupes retries."),
]


def _submission(body: JobCreate, header_key: str | None = None) -> Submission:
    if body.run_at is not None and body.delay is not None:
        raise InvalidInput("give run_at or delay, not both", field="delay")
    run_at = body.run_at
    if body.delay is not None:
        run_at = datetime.now(UTC) + timedelta(seconds=body.delay)
    return Submission(
        type=body.type,
        payload=body.payload,
        queue=body.queue,
        priority=body.priority,
        max_attempts=body.max_attempts,
        timeout_s=body.timeout,
        run_at=run_at,
        idempotency_key=header_key or body.idempotency_key,
        tags=tuple(body.tags),
        callback_url=body.callback_url,
        limits=body.limits,
    )


async def _outs(jobs: Sequence[JobRecord], user: User, ctx: AppContext) -> list[JobOut]:
    """Tracebacks are for administrators; owners see the error type and message. The jobs'
    `callback_url`s are read from their side table in one query for the whole list."""
    urls = await ctx.engine.webhooks.callback_urls([job.id for job in jobs])
    return [JobOut.of(j, tracebacks=user.is_admin, callback_url=urls.get(j.id)) for j in jobs]


async def _out(job: JobRecord, user: User, ctx: AppContext) -> JobOut:
    (out,) = await _outs([job], user, ctx)
    return out


_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "`idempotency_key_reused`: the Idempotency-Key was used for another "
        "request (another type, queue or payload); nothing was stored.",
    },
    422: {
        "model": ErrorBody,
        "description": "Invalid input, among it a `run_at` in the past by more than the "
        "server's tolerance (CONVEYOR_RUN_AT_PAST_TOLERANCE, 60 s by default).",
    },
}


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=JobSubmitted,
    responses={
        200: {
            "model": JobSubmitted,
            "description": "Nothing stored: the job submitted earlier with this Idempotency-Key "
            "and the same type, queue and payload (`duplicate` false), or the live job of a "
            "unique job type with the same unique key (`duplicate` true).",
        },
        **_SUBMIT_ERRORS,
    },
)
async def create_job(
    body: JobCreate, caller: Submitter, idempotency_key: IdempotencyKey = None
) -> Response:
    """Submit a job; its payload is validated against the job type's model (see /job-types)."""
    ctx = caller.ctx
    await charge_submission(ctx, caller.credential.user_id)
    submission = _submission(body, idempotency_key)
    user, enqueued = await ctx.intake.submit(caller.credential, [submission])
    ((job, url, duplicate),) = await _answers(enqueued, [submission], user, ctx)
    answer = job_json(job, url, tracebacks=user.is_admin, duplicate=duplicate)
    return _json(answer, status.HTTP_201_CREATED if enqueued[0].created else status.HTTP_200_OK)


@router.post(
    "/jobs/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=list[JobSubmitted],
    responses=_SUBMIT_ERRORS,
)
async def create_jobs(body: JobBatchCreate, caller: Submitter) -> Response:
    """Submit many jobs in one transaction: all are stored, or none. Each job counts
    against the per-user jobs limit (RATE_LIMIT_JOBS); the batch is one request. A job
    that duplicates a live unique job (or repeats an idempotency key's request) is that
    job in the answer (`duplicate` says which), the others are stored; the answer is 201."""
    ctx = caller.ctx
    if len(body.jobs) > ctx.settings.max_batch_size:
        raise InvalidInput(f"at most {ctx.settings.max_batch_size} jobs per batch")
    await charge_submission(ctx, caller.credential.user_id, len(body.jobs))
    submissions = [_submission(j) for j in body.jobs]
    user, enqueued = await ctx.intake.submit(caller.credential, submissions)
    answers = await _answers(enqueued, submissions, user, ctx)
    return _json(jobs_json(answers, tracebacks=user.is_admin), status.HTTP_201_CREATED)


def _json(content: bytes, status_code: int) -> Response:
    """An answer serialised already: FastAPI's response-model pass would validate and
    serialise it again (the route's `response_model` still documents it)."""
    return Response(content, status_code, media_type="application/json")


async def _answers(
    enqueued: Sequence[Enqueued], submissions: Sequence[Submission], user: User, ctx: AppContext
) -> list[Answer]:
    """What was stored, without reading it back; only jobs an idempotency key or a unique
    key named (stored earlier) are read, in one query."""
    earlier = [e.id for e in enqueued if e.record is None]
    found: dict[str, JobRecord] = {}
    urls: dict[str, str] = {}
    if earlier:  # NotFound if one was deleted since, as a read of it would answer
        found = {job.id: job for job in await ctx.engine.jobs.get_many(earlier, user.id)}
        urls = await ctx.engine.webhooks.callback_urls(earlier)
    answers: list[Answer] = []
    for done, submission in zip(enqueued, submissions, strict=True):
        if done.record is not None:
            answers.append((done.record, submission.callback_url, False))
        else:
            answers.append((found[done.id], urls.get(done.id), done.duplicate))
    return answers


@router.get("/jobs")
async def list_jobs(
    user: VerifiedUser,
    ctx: Context,
    state: Annotated[list[JobState] | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    created_after: AnyUtcDateTime | None = None,
    created_before: AnyUtcDateTime | None = None,
    text: Annotated[
        str | None, Query(max_length=200, description="In the id or the payload, any case.")
    ] = None,
    owner_id: Annotated[str | None, Query(description="Admins only: one owner's jobs.")] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="Newest-first paging only: not with `sort`/`offset`."),
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=32,
            description=f"One of {', '.join(SORT_KEYS)}; -desc. Not with `cursor`.",
            json_schema_extra={"enum": [*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)]},
        ),
    ] = None,
    offset: Annotated[int | None, Query(ge=0, le=10_000_000)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobPage:
    """Your jobs (admins: everyone's). Newest first with `next_cursor` pages by default;
    with `sort` or `offset`, offset pages in that order with `total` and `next_offset`."""
    scope = owner_scope(user)
    where = JobFilter(
        owner_id=scope if scope is not None else owner_id,
        states=tuple(state or ()),
        queue=queue,
        type=type,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
        text=text,
    )
    size = min(limit, ctx.settings.max_page_size)
    if sort is None and offset is None:
        jobs = await ctx.engine.jobs.newest_first(where, after_id=cursor, limit=size + 1)
        more = len(jobs) > size
        items = await _outs(jobs[:size], user, ctx)
        return JobPage(items=items, next_cursor=items[-1].id if more else None)
    if cursor is not None:
        raise InvalidInput(
            "cursor pages are newest first; with sort, page by offset", field="cursor"
        )
    start = offset or 0
    page = await ctx.engine.jobs.page(where, sort or "-created_at", start, size)
    following = start + len(page.items)
    return JobPage(
        items=await _outs(page.items, user, ctx),
        total=page.total,
        next_offset=following if following < page.total else None,
    )


@router.post("/jobs/bulk")
async def bulk_jobs(body: BulkRequest, user: VerifiedUser, ctx: Context) -> BulkOut:
    """Retry, cancel or delete the given jobs, or all matching a filter, in bounded batches.

    Users act on their own jobs only (others' ids count as skipped); admins on everyone's.
    """
    scope = owner_scope(user)
    where = body.filter.to_filter(scope) if body.filter is not None else None
    result = await ctx.engine.jobs.bulk(body.action, where=where, ids=body.ids, owner_id=scope)
    return BulkOut(matched=result.matched, changed=result.changed, skipped=result.skipped)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, user: VerifiedUser, ctx: Context) -> JobDetailOut:
    """The job; a queued one says why it waits (`waiting_reason`: docs/flow-control.md)."""
    job = await ctx.engine.jobs.get(job_id, owner_scope(user))
    out = await _out(job, user, ctx)
    reason = await ctx.engine.flow.waiting_reason(job)
    waiting = None if reason is None else WaitingReasonOut(**asdict(reason))
    limits = await ctx.engine.flow.limit_keys(job.id)
    return JobDetailOut(**out.model_dump(), waiting_reason=waiting, limits=limits)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, user: VerifiedUser, ctx: Context) -> JobOut:
    """Cancel a scheduled, queued, retrying or running job (a running one is interrupted)."""
    return await _out(await ctx.engine.jobs.cancel(job_id, owner_scope(user)), user, ctx)


@router.post(
    "/jobs/{job_id}/retry",
    responses={
        409: {
            "model": ErrorBody,
            "description": "`illegal_transition`: the job is not failed or cancelled; "
            "`unique_key_taken`: a unique job whose key another live job holds now.",
        }
    },
)
async def retry_job(job_id: str, user: VerifiedUser, ctx: Context) -> JobOut:
    """Queue a failed or cancelled job again, with fresh attempts."""
    return await _out(await ctx.engine.jobs.retry(job_id, owner_scope(user)), user, ctx)


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: str, user: VerifiedUser, ctx: Context) -> Response:
    """Delete a finished job (completed, failed or cancelled)."""
    await ctx.engine.jobs.delete(job_id, owner_scope(user))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/jobs/{job_id}/result", responses={409: {"description": "not completed"}})
async def job_result(job_id: str, user: VerifiedUser, ctx: Context) -> JobResult:
    job = await ctx.engine.jobs.get(job_id, owner_scope(user))
    if job.state is not JobState.COMPLETED:
        raise Conflict(f"the job is {job.state.value}; results exist once it has completed")
    return JobResult(id=job.id, state=job.state, result=job.result)


@router.get("/jobs/{job_id}/progress")
async def job_progress(job_id: str, user: VerifiedUser, ctx: Context) -> Progress:
    job = await ctx.engine.jobs.get(job_id, owner_scope(user))
    return Progress(percent=job.progress, message=job.progress_message)


@router.get("/stats")
async def stats(
    user: VerifiedUser,
    ctx: Context,
    minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 15,
) -> Stats:
    """Counts per state and queue, and jobs finished per minute over the last `minutes`."""
    scope = owner_scope(user)
    counts = await ctx.engine.queues.counts(scope)
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    points = await ctx.engine.jobs.finished_per_minute(since, scope)
    alive = await ctx.engine.workers.list_alive()
    totals: dict[str, int] = dict.fromkeys((s.value for s in JobState), 0)
    queues: dict[str, QueueStats] = {}
    for c in counts:
        totals[c.state.value] += c.count
        entry = queues.setdefault(c.queue, QueueStats(queue=c.queue, counts={}))
        entry.counts[c.state.value] = c.count
        if c.state is JobState.QUEUED:
            entry.oldest_queued_at = c.oldest_created_at
    return Stats(
        totals=totals,
        queues=list(queues.values()),
        throughput=[
            ThroughputOut(minute=p.minute, completed=p.completed, failed=p.failed) for p in points
        ],
        workers_alive=len(alive),
    )


@router.get("/throughput")
async def throughput(
    user: VerifiedUser,
    ctx: Context,
    minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60,
) -> list[ThroughputMinuteOut]:
    """One point per minute (zeros included), oldest first: jobs submitted, completed and
    failed, and the failure rate. Yours; admins: everyone's."""
    chart = await ctx.engine.jobs.throughput(minutes, owner_scope(user))
    return [
        ThroughputMinuteOut(
            minute=p.minute,
            enqueued=p.enqueued,
            completed=p.completed,
            failed=p.failed,
            failure_rate=p.failure_rate,
        )
        for p in chart
    ]


@router.get("/job-types")
async def job_types(ctx: Context) -> list[JobTypeOut]:
    """Every job type this server accepts, with the JSON schema of its payload and result."""
    return [
        JobTypeOut(
            name=spec.name,
            queue=spec.queue,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
            description=spec.description,
            payload_schema=spec.payload_model.model_json_schema(),
            result_schema=spec.result_schema,
            unique=UniqueOut.of(spec.unique),
            submit_limits=[limit.name for limit in spec.submit_limits],
        )
        for spec in ctx.engine.registry
    ]
