"""What the leader does: promote due jobs, rescue expired leases, prune old rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import RescueReport
from conveyor.domain.states import JobState
from conveyor.store import events as outbox
from conveyor.store.base import StoreBase
from conveyor.store.tables import jobs, schedule_fires

_WAITING = [JobState.SCHEDULED.value, JobState.RETRYING.value]


class Maintenance(StoreBase):
    async def promote_due(self, limit: int = 1000) -> int:
        """Scheduled and retrying jobs whose time has come become queued."""
        now = utcnow()
        due = (
            select(jobs.c.id)
            .where(jobs.c.state.in_(_WAITING), jobs.c.run_at <= now)
            .order_by(jobs.c.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(due.scalar_subquery()), jobs.c.state.in_(_WAITING))
                    .values(state=JobState.QUEUED.value)
                    .returning(jobs.c.queue)
                )
            ).all()
            if rows:
                await self.driver.notify_jobs(conn, {row.queue for row in rows})
        return len(rows)

    async def rescue_expired(self, limit: int = 1000) -> RescueReport:
        """Running jobs whose lease expired: back to queued, or failed when attempts are spent."""
        now = utcnow()
        async with self.db.write() as conn:
            rows = await self.driver.rescue(conn, now, limit)
            await self._log(conn, [outbox.said_row(outbox.rescued(r.state), r, now) for r in rows])
            requeued = [r for r in rows if r.state == JobState.QUEUED.value]
            if requeued:
                await self.driver.notify_jobs(conn, {r.queue for r in requeued})
        return RescueReport(
            requeued=[r.id for r in requeued],
            failed=[r.id for r in rows if r.state == JobState.FAILED.value],
            labels={r.id: (r.queue, r.type) for r in rows},
            attempts={r.id: r.attempt for r in rows},
        )

    async def prune(
        self, completed_before: datetime, failed_before: datetime, batch: int = 10_000
    ) -> int:
        """Delete finished jobs past retention, one bounded batch per statement."""
        total = 0
        finished = (
            (jobs.c.state == JobState.COMPLETED.value) & (jobs.c.finished_at < completed_before)
        ) | (
            jobs.c.state.in_([JobState.FAILED.value, JobState.CANCELLED.value])
            & (jobs.c.finished_at < failed_before)
        )
        while True:
            victims = jobs.c.id.in_(
                select(jobs.c.id).where(finished).limit(batch).scalar_subquery()
            )
            async with self.db.write() as conn:
                result = await conn.execute(
                    delete(jobs).where(self.driver.in_lock_order([victims, finished]), finished)
                )
                if total == 0:
                    await conn.execute(
                        delete(schedule_fires).where(schedule_fires.c.fire_at < failed_before)
                    )
            total += result.rowcount
            if result.rowcount < batch:
                return total
