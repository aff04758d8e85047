"""Cron schedules: create, list, read, change, pause, resume, delete."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from fastapi import APIRouter, Response, status

from conveyor.api.deps import Context, VerifiedUser, owner_scope
from conveyor.api.schedule_schemas import (
    ScheduleCreate,
    ScheduleOut,
    ScheduleUpdate,
    WorkflowScheduleCreate,
)
from conveyor.domain.schedules import NewSchedule
from conveyor.errors import InvalidInput

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])

# API field name -> service field name
_RENAMED = {"type": "job_type", "timeout": "timeout_s"}
# Fields where null means "use the job type's default"; for the rest null means "unchanged".
_NULLABLE = {"queue", "max_attempts", "timeout", "limits"}


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_schedule(
    body: ScheduleCreate | WorkflowScheduleCreate, user: VerifiedUser, ctx: Context
) -> ScheduleOut:
    """The job or workflow template is validated now (a bad one is 422 as its submit would
    be), so a schedule saved today fires what its types accept today."""
    places: AbstractContextManager[None] = nullcontext()
    if isinstance(body, WorkflowScheduleCreate):
        flat = body.workflow.flat()
        places = flat.declared_places()  # a bad step named where the template declared it
        new = NewSchedule(
            name=body.name, cron=body.cron, timezone=body.timezone, workflow=flat.spec,
            tags=tuple(body.tags), paused=body.paused, misfire_policy=body.misfire_policy,
            owner_id=user.id,
        )  # fmt: skip
    else:
        new = NewSchedule(
            name=body.name, cron=body.cron, timezone=body.timezone, job_type=body.type,
            payload=body.payload, queue=body.queue, priority=body.priority,
            max_attempts=body.max_attempts, timeout_s=body.timeout, tags=tuple(body.tags),
            paused=body.paused, misfire_policy=body.misfire_policy, owner_id=user.id,
            limits=dict(body.limits or {}),
        )  # fmt: skip
    with places:
        record = await ctx.engine.schedules.create(new)
    return ScheduleOut.of(record)


@router.get("")
async def list_schedules(user: VerifiedUser, ctx: Context) -> list[ScheduleOut]:
    records = await ctx.engine.schedules.of_owner(owner_scope(user))
    return [ScheduleOut.of(r) for r in records]


@router.get("/{schedule_id}")
async def get_schedule(schedule_id: str, user: VerifiedUser, ctx: Context) -> ScheduleOut:
    return ScheduleOut.of(await ctx.engine.schedules.get(schedule_id, owner_scope(user)))


@router.patch("/{schedule_id}")
async def update_schedule(
    schedule_id: str, body: ScheduleUpdate, user: VerifiedUser, ctx: Context
) -> ScheduleOut:
    """A workflow schedule's `workflow` is replaced whole, checked as at create (a bad
    template is 422 naming `steps.<i>...`, and nothing changes)."""
    changes: dict[str, Any] = {
        _RENAMED.get(name, name): value
        for name, value in body.model_dump(exclude_unset=True, exclude={"workflow"}).items()
        if value is not None or name in _NULLABLE
    }
    places: AbstractContextManager[None] = nullcontext()
    if body.workflow is not None:
        try:
            flat = body.workflow.flat()
        except InvalidInput:  # another's or no schedule is 404 first, as for a bad template
            await ctx.engine.schedules.get(schedule_id, owner_scope(user))
            raise
        changes["workflow"], places = flat.spec, flat.declared_places()
    with places:
        record = await ctx.engine.schedules.update(schedule_id, owner_scope(user), **changes)
    return ScheduleOut.of(record)


@router.post("/{schedule_id}/pause")
async def pause_schedule(schedule_id: str, user: VerifiedUser, ctx: Context) -> ScheduleOut:
    return ScheduleOut.of(await ctx.engine.schedules.pause(schedule_id, owner_scope(user)))


@router.post("/{schedule_id}/resume")
async def resume_schedule(schedule_id: str, user: VerifiedUser, ctx: Context) -> ScheduleOut:
    return ScheduleOut.of(await ctx.engine.schedules.resume(schedule_id, owner_scope(user)))


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(schedule_id: str, user: VerifiedUser, ctx: Context) -> Response:
    await ctx.engine.schedules.delete(schedule_id, owner_scope(user))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
