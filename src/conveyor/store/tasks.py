"""Reference 004's tasks: rows with integer ids that a scheduled job completes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.tasks import TaskRecord
from conveyor.store.database import Database
from conveyor.store.tables import tasks
from conveyor.store.transaction import Transaction


class TaskStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, tx: Transaction, owner_id: str, title: str, description: str
    ) -> TaskRecord:
        row = (
            await tx.connection.execute(
                insert(tasks)
                .values(
                    owner_id=owner_id,
                    title=title,
                    description=description,
                    status="pending",
                    created_at=utcnow(),
                )
                .returning(*tasks.c)
            )
        ).one()
        return _task(row)

    async def attach_job(self, tx: Transaction, task_id: int, job_id: str) -> None:
        await tx.connection.execute(
            update(tasks).where(tasks.c.id == task_id).values(job_id=job_id)
        )

    async def list(self, owner_id: str | None) -> list[TaskRecord]:
        query = select(tasks).order_by(tasks.c.id)
        if owner_id is not None:
            query = query.where(tasks.c.owner_id == owner_id)
        async with self.db.read() as conn:
            return [_task(row) for row in await conn.execute(query)]

    async def get(self, task_id: int, owner_id: str | None) -> TaskRecord | None:
        query = select(tasks).where(tasks.c.id == task_id)
        if owner_id is not None:
            query = query.where(tasks.c.owner_id == owner_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _task(row)

    async def delete(self, task_id: int, owner_id: str | None) -> TaskRecord | None:
        guard = [tasks.c.id == task_id]
        if owner_id is not None:
            guard.append(tasks.c.owner_id == owner_id)
        async with self.db.write() as conn:
            row = (
                await conn.execute(delete(tasks).where(*guard).returning(*tasks.c))
            ).one_or_none()
        return None if row is None else _task(row)

    async def complete(self, task_id: int) -> bool:
        """Pending -> completed; False if the task is gone or was already completed."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == "pending")
                .values(status="completed", completed_at=utcnow())
            )
        return result.rowcount == 1


def _task(row: Any) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        owner_id=row.owner_id,
        title=row.title,
        description=row.description,
        status=row.status,
        job_id=row.job_id,
        created_at=row.created_at,
        completed_at=row.completed_at,
    )
