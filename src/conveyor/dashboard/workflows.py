"""The workflows list and the page of one workflow: its steps drawn as a graph (dag.py),
live over the workflow's event stream, with cancel, retry and delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor.api.sse import POSITION_PATTERN, event_stream
from conveyor.api.workflow_stream import WorkflowEvents
from conveyor.dashboard.dag import workflow_graph
from conveyor.dashboard.web import (
    PREFIX,
    Context,
    DashboardRoute,
    SessionDep,
    flash,
    owner_scope,
    redirect,
    render,
    templates,
)
from conveyor.domain.events import Position
from conveyor.domain.workflows import WorkflowDetail, WorkflowState
from conveyor.errors import Conflict
from conveyor.runtime import Engine
from conveyor.services.accounts.web_sessions import WebSession
from conveyor.services.events import Scope

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 25
Action = Literal["retry", "cancel", "delete"]
WORKFLOW_STATES = tuple(s.value for s in WorkflowState)


@router.get("/workflows")
async def workflows_page(
    request: Request,
    session: SessionDep,
    ctx: Context,
    state: Annotated[str, Query(max_length=20)] = "",
    before: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Newest first, `PAGE_SIZE` a page; `before` is the last id of the page before."""
    chosen = WorkflowState(state) if state in WORKFLOW_STATES else None
    found = await ctx.engine.workflows.page(
        owner_id=owner_scope(session), state=chosen, limit=PAGE_SIZE + 1, before=before or None
    )
    items = found[:PAGE_SIZE]
    following = items[-1].id if len(found) > PAGE_SIZE else None
    return render(
        request,
        "workflows.html",
        session,
        page="workflows",
        items=items,
        state=state if chosen else "",
        states=WORKFLOW_STATES,
        following=following,
        first_page=not before,
    )


def _context(detail: WorkflowDetail, session: WebSession) -> dict[str, Any]:
    workflow = detail.workflow
    running = workflow.state is WorkflowState.RUNNING
    return {
        "workflow": workflow,
        "steps": detail.steps,
        "graph": workflow_graph(workflow.name, detail.steps),
        "can_cancel": running,
        "can_retry": workflow.state in (WorkflowState.FAILED, WorkflowState.CANCELLED),
        "can_delete": not running,
        "tracebacks": session.user.is_admin,
    }


@router.get("/workflows/{workflow_id}")
async def workflow_page(
    request: Request, workflow_id: str, session: SessionDep, ctx: Context
) -> Response:
    detail = await ctx.engine.workflows.get(workflow_id, owner_scope(session))
    after = await _head(ctx.engine, detail)
    return render(
        request,
        "workflow.html",
        session,
        page="workflows",
        after=after,
        **_context(detail, session),
    )


async def _head(engine: Engine, detail: WorkflowDetail) -> str:
    """Where the page's live stream starts: after everything the page already shows."""
    return str(await engine.events.head(detail.workflow.owner_id))


@router.get("/workflows/{workflow_id}/parts")
async def workflow_parts(
    request: Request, workflow_id: str, session: SessionDep, ctx: Context
) -> Response:
    """The page's changing regions, re-rendered, for the live script."""
    detail = await ctx.engine.workflows.get(workflow_id, owner_scope(session))
    values = _context(detail, session)
    parts = templates.env.get_template("_workflow.html").make_module(
        {"user": session.user, "session": session, "prefix": PREFIX, **values}
    )
    html = {
        "status": str(parts.status()),  # type: ignore[attr-defined]
        "graph": str(parts.graph(values["graph"])),  # type: ignore[attr-defined]
        "steps": str(parts.step_table()),  # type: ignore[attr-defined]
    }
    return JSONResponse({"state": detail.workflow.state.value, "html": html})


@router.get("/workflows/{workflow_id}/events")
async def workflow_events(
    request: Request,
    workflow_id: str,
    session: SessionDep,
    ctx: Context,
    after: Annotated[str | None, Query(pattern=POSITION_PATTERN)] = None,
) -> Response:
    """The workflow's steps' events and its own, live (EventSource resumes with
    `Last-Event-ID`)."""
    engine = ctx.engine
    stream = WorkflowEvents(engine.workflows, engine.jobs, workflow_id, owner_scope(session))
    owner = await stream.load()  # another user's: 404
    feed = ctx.engine.events
    resume = request.headers.get("last-event-id") or after
    start = Position.parse(resume) if resume else await feed.head(owner)
    return event_stream(request, feed, Scope(owner), start, until_terminal=False, keep=stream.keep)


@router.post("/workflows/{workflow_id}/{action}")
async def workflow_action(
    request: Request, workflow_id: str, action: Action, session: SessionDep, ctx: Context
) -> Response:
    """A workflow that moved on meanwhile (settled before the cancel, say) gets a message on
    its page, not an error page; another user's is NotFound, as everywhere."""
    scope = owner_scope(session)
    page = f"{PREFIX}/workflows/{workflow_id}"
    workflows = ctx.engine.workflows
    try:
        if action == "retry":
            await workflows.retry(workflow_id, scope)
            target, text = page, "The workflow's failed steps run again."
        elif action == "cancel":
            await workflows.cancel(workflow_id, scope)
            target, text = page, "The workflow is cancelled."
        else:
            await workflows.delete(workflow_id, scope)
            target, text = f"{PREFIX}/workflows", "The workflow is deleted."
    except Conflict as exc:  # IllegalTransition too
        await workflows.get(workflow_id, scope)  # still NotFound for another user's
        response = redirect(page)
        flash(request, response, exc.message, "error")
        return response
    response = redirect(target)
    flash(request, response, text)
    return response
