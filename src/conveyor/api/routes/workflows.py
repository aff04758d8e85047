"""Workflows: submit a DAG of steps, list, read, cancel, retry, delete, follow its events.

Every route calls `Engine.workflows` (services/workflows.py) only; owner scoping is the jobs'
(another user's workflow is 404, admins see all). docs/workflows.md has the whole story.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from conveyor.api.deps import Context, VerifiedUser, charge_submission, owner_scope
from conveyor.api.routes.events import (
    After,
    LastEventId,
    accepts_event_stream,
    not_acceptable,
    start_position,
)
from conveyor.api.routes.jobs import IdempotencyKey
from conveyor.api.schemas import ErrorBody
from conveyor.api.sse import event_stream
from conveyor.api.workflow_schemas import (
    WorkflowCreate,
    WorkflowDetailOut,
    WorkflowOut,
    WorkflowPage,
)
from conveyor.api.workflow_stream import WorkflowEvents, settled, story_told
from conveyor.domain.events import Position
from conveyor.domain.workflows import MAX_STEPS, WorkflowDetail, WorkflowState
from conveyor.services.events import Scope

router = APIRouter(prefix="/api/v1", tags=["workflows"])


def _detail(detail: WorkflowDetail, is_admin: bool) -> WorkflowDetailOut:
    return WorkflowDetailOut.of_detail(detail, tracebacks=is_admin)


@router.post(
    "/workflows",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {
            "model": ErrorBody,
            "description": "`idempotency_key_reused`: the Idempotency-Key was used for "
            "another workflow declaration; nothing was stored.",
        },
        429: {
            "model": ErrorBody,
            "description": "`rate_limited`: each step counts against the jobs limit; "
            "`quota_exceeded`: the steps would pass the owner's queued quota.",
        },
        422: {
            "model": ErrorBody,
            "description": "Nothing stored: a cycle (its steps named), a dependency on an "
            f"unknown step, a duplicate step name, more than {MAX_STEPS:,} steps, an unknown "
            "job type or a step payload its type refuses (`details` says where, e.g. "
            "`steps.2.payload`, in a nested workflow `steps.1.steps.0.payload`, with "
            "`details.errors[].loc` down to the field).",
        },
    },
)
async def create_workflow(
    body: WorkflowCreate, user: VerifiedUser, ctx: Context, idempotency_key: IdempotencyKey = None
) -> WorkflowDetailOut:
    """Submit a workflow: every step is a job; a step waits (`waiting`) until the steps it
    depends on have settled. The whole DAG is stored in one transaction, or nothing. Each
    step counts against the per-user jobs limit; a request with an Idempotency-Key used
    before answers the workflow stored with it (the same declaration) or 409 (another one),
    and stores nothing."""
    flat = body.flat()
    await charge_submission(ctx, user.id, len(flat.spec.steps))  # nested ones counted
    with flat.declared_places():
        detail = await ctx.engine.workflows.submit(
            flat.spec, owner_id=user.id, idempotency_key=idempotency_key
        )
    return _detail(detail, user.is_admin)


@router.get("/workflows")
async def list_workflows(
    user: VerifiedUser,
    ctx: Context,
    state: WorkflowState | None = None,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> WorkflowPage:
    """Your workflows (admins: everyone's), newest first, with step counts per state."""
    size = min(limit, ctx.settings.max_page_size)
    found = await ctx.engine.workflows.page(
        owner_id=owner_scope(user), state=state, limit=size + 1, before=cursor
    )
    items = [WorkflowOut.of(w) for w in found[:size]]
    return WorkflowPage(items=items, next_cursor=items[-1].id if len(found) > size else None)


@router.get("/workflows/{workflow_id}")
async def get_workflow(workflow_id: str, user: VerifiedUser, ctx: Context) -> WorkflowDetailOut:
    """The workflow with its steps (state, result, error), in dependency order, and its
    edges (`to` waits for `from`)."""
    detail = await ctx.engine.workflows.get(workflow_id, owner_scope(user))
    return _detail(detail, user.is_admin)


@router.post("/workflows/{workflow_id}/cancel")
async def cancel_workflow(workflow_id: str, user: VerifiedUser, ctx: Context) -> WorkflowDetailOut:
    """Cancel every unsettled step (a running one is interrupted)."""
    detail = await ctx.engine.workflows.cancel(workflow_id, owner_scope(user))
    return _detail(detail, user.is_admin)


@router.post(
    "/workflows/{workflow_id}/retry",
    responses={409: {"model": ErrorBody, "description": "The workflow is still running."}},
)
async def retry_workflow(workflow_id: str, user: VerifiedUser, ctx: Context) -> WorkflowDetailOut:
    """Run the failed, cancelled and skipped steps again, and the steps after them;
    completed steps keep their results and do not run again."""
    detail = await ctx.engine.workflows.retry(workflow_id, owner_scope(user))
    return _detail(detail, user.is_admin)


@router.delete(
    "/workflows/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorBody, "description": "The workflow is still running."}},
)
async def delete_workflow(workflow_id: str, user: VerifiedUser, ctx: Context) -> Response:
    """Delete a settled workflow with its steps and their results."""
    await ctx.engine.workflows.delete(workflow_id, owner_scope(user))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/workflows/{workflow_id}/events", include_in_schema=False)
async def workflow_events(
    workflow_id: str,
    request: Request,
    user: VerifiedUser,
    ctx: Context,
    follow: bool = False,
    after: After = None,
    last_event_id: LastEventId = None,
) -> Response:
    """The workflow's steps' events and its own (`event: workflow`, `job.id` the workflow's
    id, `job.state` its state) from the first (or after `Last-Event-ID` / `after`), as the
    job stream (routes/events.py); it ends after the workflow settled unless `follow=true`,
    and a client resuming after that end gets 204."""
    engine = ctx.engine
    stream = WorkflowEvents(engine.workflows, engine.jobs, workflow_id, owner_scope(user))
    owner = await stream.load()  # another user's: 404 first
    if not accepts_event_stream(request):
        return not_acceptable()
    feed = ctx.engine.events
    start = start_position(last_event_id, after)
    if start is not None and not follow and await story_told(feed, owner, workflow_id, start):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return event_stream(
        request,
        feed,
        Scope(owner),
        start or Position(),
        until_terminal=not follow,
        keep=stream.keep,
        ends=settled,
    )
