"""The workers table: who is running, their heartbeats, and the jobs each holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.states import JobState
from conveyor.domain.workers import JobRef, WorkerInfo
from conveyor.store.base import StoreBase
from conveyor.store.records import aware, worker_info
from conveyor.store.tables import jobs, workers


class Workers(StoreBase):
    async def register_worker(
        self, worker_id: str, hostname: str, pid: int, queues: Sequence[str], concurrency: int
    ) -> None:
        now = utcnow()
        async with self.db.write() as conn:
            await conn.execute(
                insert(workers).values(
                    id=worker_id,
                    hostname=hostname,
                    pid=pid,
                    queues=list(queues),
                    concurrency=concurrency,
                    started_at=now,
                    last_heartbeat_at=now,
                    stopped_at=None,
                )
            )

    async def unregister_worker(self, worker_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(stopped_at=utcnow())
            )

    async def list_workers(self, alive_within: float | None = None) -> list[WorkerInfo]:
        query = select(workers).order_by(workers.c.started_at)
        if alive_within is not None:
            since = utcnow() - timedelta(seconds=alive_within)
            query = query.where(
                workers.c.stopped_at.is_(None), workers.c.last_heartbeat_at >= since
            )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [worker_info(r) for r in rows]

    async def workers_with_jobs(self, alive_within: float) -> list[tuple[WorkerInfo, list[JobRef]]]:
        """Live workers, each with the jobs it is running: one query, not one per worker."""
        since = utcnow() - timedelta(seconds=alive_within)
        running = (jobs.c.worker_id == workers.c.id) & (jobs.c.state == JobState.RUNNING.value)
        query = (
            select(
                workers,
                jobs.c.id.label("job_id"),
                jobs.c.type.label("job_type"),
                jobs.c.queue.label("job_queue"),
                jobs.c.started_at.label("job_started_at"),
            )
            .select_from(workers.outerjoin(jobs, running))
            .where(workers.c.stopped_at.is_(None), workers.c.last_heartbeat_at >= since)
            .order_by(workers.c.started_at, workers.c.id, jobs.c.started_at, jobs.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, tuple[WorkerInfo, list[JobRef]]] = {}
        for r in rows:
            _, refs = found.setdefault(r.id, (worker_info(r), []))
            if r.job_id is not None:
                refs.append(JobRef(r.job_id, r.job_type, r.job_queue, aware(r.job_started_at)))
        return list(found.values())

    async def prune_workers(self, older_than: datetime) -> int:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(workers).where(workers.c.last_heartbeat_at < older_than)
            )
        return result.rowcount
