"""What the leader does: promote due jobs, rescue expired leases, prune old rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_, update

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
        self, completed_before: datetime, failed_before: datetime, batch: int = 1000
    ) -> int:
        """Delete every finished job past retention (and old fire rows), slice by slice.

        The scheduler calls the slices itself, a bounded number per tick; this runs them
        all, for callers with nothing else to do meanwhile."""
        total = 0
        while (done := await self.prune_finished(completed_before, failed_before, batch)) > 0:
            total += done
            if done < batch:
                break
        while await self.prune_fires(failed_before, batch) >= batch:
            pass
        return total

    async def prune_finished(
        self, completed_before: datetime, failed_before: datetime, limit: int
    ) -> int:
        """One slice: up to `limit` finished jobs past retention deleted in one short
        transaction (fewer than `limit`: none are left). Completed jobs are kept until
        `completed_before`, failed and cancelled ones until `failed_before`."""
        finished = (
            (jobs.c.state == JobState.COMPLETED.value) & (jobs.c.finished_at < completed_before)
        ) | (
            jobs.c.state.in_([JobState.FAILED.value, JobState.CANCELLED.value])
            & (jobs.c.finished_at < failed_before)
        )
        victims = jobs.c.id.in_(select(jobs.c.id).where(finished).limit(limit).scalar_subquery())
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(jobs).where(self.driver.in_lock_order([victims, finished]), finished)
            )
        return int(result.rowcount)

    async def prune_fires(self, before: datetime, limit: int) -> int:
        """One slice of `schedule_fires` rows older than `before` (a fire that old can no
        longer be attempted twice: the schedule moved past it long ago)."""
        key = tuple_(schedule_fires.c.schedule_id, schedule_fires.c.fire_at)
        old = select(schedule_fires.c.schedule_id, schedule_fires.c.fire_at).where(
            schedule_fires.c.fire_at < before
        )
        async with self.db.write() as conn:
            result = await conn.execute(delete(schedule_fires).where(key.in_(old.limit(limit))))
        return int(result.rowcount)
