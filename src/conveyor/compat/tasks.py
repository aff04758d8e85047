"""Reference 004 (Go task manager): /register (with role), /tasks, DELETE /tasks/{id}.

`POST /login` is served by `compat.jobscope` (it takes `{"email", "password"}` too), and the
bare-token `Authorization: <token>` header works everywhere. Secure default: `role: "admin"`
only from a caller who is already an admin (403 otherwise).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.deps import (
    Context,
    OptionalUser,
    SubmittingUser,
    VerifiedUser,
    limited,
    owner_scope,
)
from conveyor.api.schemas import Email, NewPassword
from conveyor.domain.tasks import TaskRecord

router = APIRouter(tags=["compat: task manager (004)"])


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: NewPassword
    role: str = Field("user", pattern="^(user|admin)$")


class Registered(BaseModel):
    message: str


class TaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=10_000)


class TaskOut(BaseModel):
    id: int
    title: str
    description: str
    status: str
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, task: TaskRecord) -> TaskOut:
        return cls(
            id=task.id,
            title=task.title,
            description=task.description,
            status=task.status,
            created_at=task.created_at,
            completed_at=task.completed_at,
        )


@router.post("/register", status_code=status.HTTP_201_CREATED, dependencies=[limited("register")])
async def register(body: RegisterBody, ctx: Context, actor: OptionalUser) -> Registered:
    await ctx.accounts.register(body.email, body.password, body.role, actor=actor)
    return Registered(message="User registered")


@router.post("/tasks", status_code=status.HTTP_201_CREATED)
async def create_task(body: TaskBody, user: SubmittingUser, ctx: Context) -> TaskOut:
    """Created `pending`; a durable job completes it after TASK_AUTOCOMPLETE_SECONDS."""
    return TaskOut.of(
        await ctx.engine.tasks.create(
            user.id, body.title, body.description, max_queued=user.max_queued
        )
    )


@router.get("/tasks")
async def list_tasks(user: VerifiedUser, ctx: Context) -> list[TaskOut]:
    return [TaskOut.of(task) for task in await ctx.engine.tasks.list(owner_scope(user))]


@router.delete("/tasks/{task_id}")
async def delete_task(
    task_id: Annotated[int, Path(ge=1, le=2**31 - 1)], user: VerifiedUser, ctx: Context
) -> Response:
    """Delete your own task (another user's answers 404, like a missing one)."""
    await ctx.engine.tasks.delete(task_id, owner_scope(user))
    return Response(
        content='{"message":"Task deleted"}', media_type="application/json", status_code=200
    )
