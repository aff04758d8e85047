"""Schedules (list with next fire times, create, pause/resume, delete) and queues."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request, Response

from conveyor.dashboard.web import (
    PREFIX,
    AdminSession,
    Context,
    DashboardRoute,
    SessionDep,
    flash,
    owner_scope,
    redirect,
    render,
)
from conveyor.domain import cron
from conveyor.domain.schedules import NewSchedule, ScheduleRecord
from conveyor.errors import ConveyorError, InvalidInput

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
UPCOMING = 3
Text = Annotated[str, Form(max_length=200)]


def upcoming(schedule: ScheduleRecord, count: int = UPCOMING) -> list[datetime]:
    """The next fire times (none while paused)."""
    if schedule.paused or schedule.next_fire_at is None:
        return []
    times = [schedule.next_fire_at]
    while len(times) < count:
        times.append(cron.next_fire(schedule.cron, schedule.timezone, times[-1]))
    return times


async def _schedules_page(
    request: Request, session: SessionDep, ctx: Context, form: dict[str, str], error: str | None
) -> Response:
    records = await ctx.engine.schedules.of_owner(owner_scope(session))
    return render(
        request,
        "schedules.html",
        session,
        status_code=422 if error else 200,
        page="schedules",
        schedules=[(s, upcoming(s)) for s in records],
        types=sorted(spec.name for spec in ctx.engine.registry),
        form=form,
        error=error,
    )


@router.get("/schedules")
async def schedules(request: Request, session: SessionDep, ctx: Context) -> Response:
    empty = {"timezone": "UTC", "payload": "{}", "cron": "*/5 * * * *"}
    return await _schedules_page(request, session, ctx, empty, None)


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the payload is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInput('the payload must be a JSON object, like {"key": "value"}')
    return value


def _describe(exc: ConveyorError) -> str:
    errors = exc.details.get("errors")
    if not errors:
        return exc.message
    fields = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'payload'}: {e.get('msg')}" for e in errors
    )
    return f"{exc.message}: {fields}"


@router.post("/schedules")
async def create_schedule(
    request: Request,
    session: SessionDep,
    ctx: Context,
    name: Text,
    cron_expression: Annotated[str, Form(alias="cron", max_length=200)],
    timezone: Text,
    job_type: Text,
    payload: Annotated[str, Form(max_length=100_000)] = "{}",
    queue: Text = "",
) -> Response:
    """A bad cron, zone, type or payload re-shows the form with what was typed and why."""
    form = {
        "name": name,
        "cron": cron_expression,
        "timezone": timezone,
        "job_type": job_type,
        "payload": payload,
        "queue": queue,
    }
    try:
        new = NewSchedule(
            name=name.strip(),
            cron=cron_expression.strip(),
            timezone=timezone.strip() or "UTC",
            job_type=job_type,
            payload=_payload(payload),
            queue=queue.strip() or None,
            owner_id=session.user.id,
        )
        if not new.name:
            raise InvalidInput("a schedule needs a name")
        await ctx.engine.schedules.create(new)
    except ConveyorError as exc:
        return await _schedules_page(request, session, ctx, form, _describe(exc))
    response = redirect(f"{PREFIX}/schedules")
    flash(request, response, f"Schedule {name.strip()!r} created.")
    return response


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(
    request: Request,
    schedule_id: str,
    action: Literal["pause", "resume", "delete"],
    session: SessionDep,
    ctx: Context,
) -> Response:
    scope = owner_scope(session)
    if action == "pause":
        await ctx.engine.schedules.pause(schedule_id, scope)
    elif action == "resume":
        await ctx.engine.schedules.resume(schedule_id, scope)
    else:
        await ctx.engine.schedules.delete(schedule_id, scope)
    response = redirect(f"{PREFIX}/schedules")
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    flash(request, response, f"Schedule {done}.")
    return response


# ---- queues -----------------------------------------------------------------------------------
@router.get("/queues")
async def queues(request: Request, session: SessionDep, ctx: Context) -> Response:
    overview = await ctx.engine.queues.overview(owner_scope(session))
    return render(request, "queues.html", session, page="queues", queues=overview)


@router.post("/queues/{name}/{action}")
async def queue_action(
    request: Request,
    name: str,
    action: Literal["pause", "resume"],
    session: AdminSession,
    ctx: Context,
) -> Response:
    if action == "pause":
        await ctx.engine.queues.pause(name, session.user.id)
    else:
        await ctx.engine.queues.resume(name)
    response = redirect(f"{PREFIX}/queues")
    flash(request, response, f"Queue {name!r} {action}d.")
    return response
