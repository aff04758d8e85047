"""The jobs table (filters, sorting, pages, bulk actions) and the page of one job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import JSONResponse

from conveyor.dashboard.formats import STATE_NAMES
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
from conveyor.domain.events import Event, Position
from conveyor.domain.jobs import SORT_KEYS, JobFilter, JobRecord
from conveyor.domain.states import TERMINAL, JobState
from conveyor.errors import Conflict, InvalidInput
from conveyor.runtime import Engine
from conveyor.services.accounts.web_sessions import WebSession
from conveyor.services.events import Scope

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 25
MAX_TIMELINE = 500
Action = Literal["retry", "cancel", "delete"]
Short = Annotated[str, Query(max_length=200)]
COLUMNS = (  # (label, sort key or None)
    ("Job", None),
    ("Type", "type"),
    ("Queue", "queue"),
    ("State", "state"),
    ("Attempt", "attempt"),
    ("Priority", "priority"),
    ("Created", "created_at"),
    ("Finished", "finished_at"),
)


@dataclass(frozen=True)
class JobQuery:
    """The jobs table's filters, sort and page, as they travel in a URL or a form."""

    state: tuple[str, ...] = ()
    type: str = ""
    queue: str = ""
    tag: str = ""
    owner: str = ""
    after: str = ""  # datetime-local text, read as UTC
    before: str = ""
    q: str = ""
    sort: str = "-created_at"
    page: int = 1

    def filter(self, session: WebSession) -> JobFilter:
        scope = owner_scope(session)
        return JobFilter(
            owner_id=scope if scope is not None else (self.owner or None),
            states=tuple(JobState(s) for s in self.state if s in STATE_NAMES),
            queue=self.queue or None,
            type=self.type or None,
            tag=self.tag or None,
            created_after=_utc(self.after, "after"),
            created_before=_utc(self.before, "before"),
            text=self.q.strip() or None,
        )

    def pairs(self, **changes: Any) -> list[tuple[str, str]]:
        """The non-default values as query pairs (repeated `state`), with `changes` applied."""
        query = replace(self, **changes)
        pairs = [("state", s) for s in query.state]
        for name in ("type", "queue", "tag", "owner", "after", "before", "q"):
            if value := getattr(query, name):
                pairs.append((name, value))
        if query.sort != "-created_at":
            pairs.append(("sort", query.sort))
        if query.page != 1:
            pairs.append(("page", str(query.page)))
        return pairs

    def url(self, path: str = "/jobs", **changes: Any) -> str:
        pairs = self.pairs(**changes)
        return f"{PREFIX}{path}" + (f"?{urlencode(pairs)}" if pairs else "")

    def sort_url(self, key: str) -> str:
        """Click a column: descending first, again for ascending."""
        return self.url(sort=key if self.sort == f"-{key}" else f"-{key}", page=1)

    def sort_state(self, key: str) -> str:
        """The column's aria-sort value."""
        if self.sort == key:
            return "ascending"
        return "descending" if self.sort == f"-{key}" else "none"

    @property
    def filtered(self) -> bool:
        return any(p[0] not in ("sort", "page") for p in self.pairs())


def _utc(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{name}: not a date and time", field=name) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def job_query(
    state: Annotated[list[str] | None, Query(max_length=20)] = None,
    type: Short = "",
    queue: Short = "",
    tag: Short = "",
    owner: Short = "",
    after: Short = "",
    before: Short = "",
    q: Short = "",
    sort: Annotated[str, Query(max_length=40)] = "-created_at",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> JobQuery:
    return JobQuery(tuple(state or ()), type, queue, tag, owner, after, before, q, sort, page)


Jobs = Annotated[JobQuery, Depends(job_query)]


@dataclass
class Table:
    query: JobQuery
    items: list[JobRecord]
    total: int
    owners: dict[str, str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))

    @property
    def first(self) -> int:
        return (self.query.page - 1) * PAGE_SIZE + 1 if self.items else 0

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1 if self.items else 0


async def _table(engine: Engine, session: WebSession, query: JobQuery) -> Table:
    offset = (query.page - 1) * PAGE_SIZE
    page = await engine.jobs.page(query.filter(session), query.sort, offset, PAGE_SIZE)
    owners = await _owner_names(engine, session, {job.owner_id for job in page.items})
    return Table(query, page.items, page.total, owners)


async def _owner_names(engine: Engine, session: WebSession, ids: set[str]) -> dict[str, str]:
    """E-mail addresses for an admin's owner column (users see only their own jobs)."""
    if not session.user.is_admin:
        return {}
    return {u.id: u.email for u in await engine.accounts.list_users(limit=1000) if u.id in ids}


@router.get("/jobs")
async def jobs_page(request: Request, session: SessionDep, ctx: Context, query: Jobs) -> Response:
    table = await _table(ctx.engine, session, query)
    users = await ctx.accounts.list_users(limit=1000) if session.user.is_admin else []
    return render(
        request,
        "jobs.html",
        session,
        page="jobs",
        table=table,
        query=query,
        columns=COLUMNS,
        sort_keys=SORT_KEYS,
        types=sorted(spec.name for spec in ctx.engine.registry),
        users=users,
    )


@router.get("/jobs/rows")
async def jobs_rows(request: Request, session: SessionDep, ctx: Context, query: Jobs) -> Response:
    """The table's body and counts, for the live script to swap in."""
    table = await _table(ctx.engine, session, query)
    parts = templates.env.get_template("_jobs.html").make_module(
        {"user": session.user, "prefix": PREFIX}
    )
    html = str(parts.rows(table))  # type: ignore[attr-defined]
    summary = str(parts.range_text(table))  # type: ignore[attr-defined]
    return JSONResponse({"rows": html, "range": summary, "total": table.total})


# ---- bulk actions -----------------------------------------------------------------------------
@router.post("/jobs/bulk")
async def bulk(
    request: Request,
    session: SessionDep,
    ctx: Context,
    query: Annotated[JobQuery, Depends(job_query)],
    action: Annotated[Action, Form()],
    ids: Annotated[list[str] | None, Form(max_length=64)] = None,
    scope: Annotated[Literal["selected", "matching"], Form()] = "selected",
    confirmed: Annotated[bool, Form()] = False,
) -> Response:
    """Asks first (how many, which), then acts and says matched / changed / skipped.

    The filter travels in the URL of the form's action, so "all matching" means exactly the
    filter the table showed; the ids are the checked rows."""
    chosen = [] if scope == "matching" else list(dict.fromkeys(ids or ()))
    if scope == "selected" and not chosen:
        response = redirect(query.url())
        flash(request, response, "Select at least one job first.", "error")
        return response
    where = query.filter(session)
    if not confirmed:
        count = len(chosen) if chosen else (await ctx.engine.jobs.page(where, limit=1)).total
        return render(
            request,
            "confirm_bulk.html",
            session,
            page="jobs",
            action=action,
            ids=chosen,
            scope=scope,
            count=count,
            query=query,
        )
    if chosen:
        result = await ctx.engine.jobs.bulk(action, ids=chosen, owner_id=owner_scope(session))
    else:
        result = await ctx.engine.jobs.bulk(action, where=where)
    response = redirect(query.url(page=1))
    flash(
        request,
        response,
        f"{action.capitalize()}: {result.matched} matched, {result.changed} changed, "
        f"{result.skipped} skipped.",
    )
    return response


# ---- one job ----------------------------------------------------------------------------------
async def _timeline(engine: Engine, job: JobRecord, owner_id: str | None) -> list[Event]:
    feed = engine.events
    scope = Scope(owner_id, job.id)
    found: list[Event] = []
    position = Position()
    while len(found) < MAX_TIMELINE and (batch := await feed.read(position, scope)):
        found.extend(batch)
        position = batch[-1].position
    return found[:MAX_TIMELINE]


def _job_context(job: JobRecord, session: WebSession) -> dict[str, Any]:
    errors = [
        {k: v for k, v in e.items() if k != "traceback" or session.user.is_admin}
        for e in job.errors
    ]
    return {
        "job": job,
        "errors": errors,
        "finished": job.state in TERMINAL,
        "can_retry": job.state in (JobState.FAILED, JobState.CANCELLED),
        "can_cancel": job.state not in TERMINAL,
    }


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, session: SessionDep, ctx: Context) -> Response:
    scope = owner_scope(session)
    job = await ctx.engine.jobs.get(job_id, scope)
    timeline = await _timeline(ctx.engine, job, scope)
    after = str(timeline[-1].position) if timeline else ""
    return render(
        request,
        "job.html",
        session,
        page="jobs",
        timeline=timeline,
        after=after,
        waiting=await ctx.engine.flow.waiting_reason(job),
        limits=await ctx.engine.flow.limit_keys(job.id),
        **_job_context(job, session),
    )


@router.get("/jobs/{job_id}/parts")
async def job_parts(request: Request, job_id: str, session: SessionDep, ctx: Context) -> Response:
    """The job page's changing regions, re-rendered, for the live script."""
    job = await ctx.engine.jobs.get(job_id, owner_scope(session))
    values = _job_context(job, session)
    values["waiting"] = await ctx.engine.flow.waiting_reason(job)
    values["limits"] = await ctx.engine.flow.limit_keys(job.id)
    parts = templates.env.get_template("_job.html").make_module(
        {"user": session.user, "session": session, "prefix": PREFIX, **values}
    )
    html = {
        "status": str(parts.status()),  # type: ignore[attr-defined]
        "outcome": str(parts.outcome()),  # type: ignore[attr-defined]
    }
    return JSONResponse({"state": job.state.value, "html": html})


@router.post("/jobs/{job_id}/{action}")
async def job_action(
    request: Request, job_id: str, action: Action, session: SessionDep, ctx: Context
) -> Response:
    """A job that moved on meanwhile (finished before the cancel, say) gets a message on its
    page, not an error page; another user's job is NotFound, as everywhere."""
    scope = owner_scope(session)
    page = f"{PREFIX}/jobs/{job_id}"
    try:
        target, text = await _act(ctx.engine, job_id, action, scope)
    except Conflict as exc:
        await ctx.engine.jobs.get(job_id, scope)  # still NotFound for another user's job
        response = redirect(page)
        flash(request, response, exc.message, "error")
        return response
    response = redirect(target or page)
    flash(request, response, text)
    return response


async def _act(engine: Engine, job_id: str, action: Action, scope: str | None) -> tuple[str, str]:
    if action == "retry":
        await engine.jobs.retry(job_id, scope)
        return "", "The job is queued again."
    if action == "cancel":
        await engine.jobs.cancel(job_id, scope)
        return "", "The job is cancelled."
    await engine.jobs.delete(job_id, scope)
    return f"{PREFIX}/jobs", "The job is deleted."
