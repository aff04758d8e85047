"""Tasks (reference 004): created pending, completed by a durable scheduled job."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

from conveyor.domain.clock import utcnow
from conveyor.domain.tasks import TaskRecord
from conveyor.errors import IllegalTransition, InvalidInput, NotFound
from conveyor.services.jobs import JobService, Submission
from conveyor.store.tasks import TaskStore


class TaskService:
    def __init__(self, jobs: JobService, store: TaskStore, complete_after: float) -> None:
        self.jobs = jobs
        self.store = store
        self.complete_after = complete_after

    async def create(
        self, owner_id: str, title: str, description: str = "", max_queued: int | None = None
    ) -> TaskRecord:
        """The task row and its completion job commit together: neither exists alone. The
        owner's queued quota (`max_queued`: their own cap, None: the setting's) counts the
        job: over it, QuotaExceeded and neither is stored."""
        if not title.strip():
            raise InvalidInput("a task needs a title", field="title")
        async with self.jobs.backend.transaction() as tx:
            task = await self.store.create(tx, owner_id, title, description)
            enqueued = await self.jobs.submit_within_quota(
                Submission(
                    type="task_autocomplete",
                    payload={"task_id": task.id},
                    run_at=utcnow() + timedelta(seconds=self.complete_after),
                    idempotency_key=f"task-{task.id}",
                ),
                owner_id=owner_id,
                max_queued=max_queued,
                tx=tx,
            )
            await self.store.attach_job(tx, task.id, enqueued.id)
        return replace(task, job_id=enqueued.id)

    async def list(self, owner_id: str | None) -> list[TaskRecord]:
        return await self.store.list(owner_id)

    async def delete(self, task_id: int, owner_id: str | None) -> TaskRecord:
        """Delete the task and cancel its completion job if it has not run yet."""
        task = await self.store.delete(task_id, owner_id)
        if task is None:
            raise NotFound("no such task", task_id=task_id)
        if task.job_id and task.status == "pending":
            # It may have just run (IllegalTransition): the task is gone either way.
            with contextlib.suppress(IllegalTransition):
                await self.jobs.cancel(task.job_id)
        return task
