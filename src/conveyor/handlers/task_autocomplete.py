"""`task_autocomplete`: reference 004's background completion of a task after a delay."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from conveyor.store.tasks import TaskStore
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class TaskAutocompletePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: int = Field(ge=1)


class TaskAutocompleteResult(BaseModel):
    task_id: int
    completed: bool  # False: the task was deleted or completed before the job ran


@blueprint.job("task_autocomplete", max_attempts=5)
async def task_autocomplete(
    ctx: JobContext, payload: TaskAutocompletePayload
) -> TaskAutocompleteResult:
    """Mark the task completed (its run time was set to creation + the configured delay)."""
    done = await TaskStore(ctx.resources.backend.db).complete(payload.task_id)
    return TaskAutocompleteResult(task_id=payload.task_id, completed=done)
