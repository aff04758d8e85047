"""What the leader does: promote due jobs, rescue expired leases, prune old rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, tuple_

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import RescueReport
from conveyor.domain.states import JobState
from conveyor.store.base import StoreBase
from conveyor.store.records import aware
from conveyor.store.tables import jobs, schedule_fires, workflows
from conveyor.store.workflows import delete_settled


class Maintenance(StoreBase):
    async def promote_due(self, limit: int = 1000) -> int:
        """Scheduled and retrying jobs whose time has come become queued."""
        return len(await self.driver.promote(utcnow(), limit))

    async def rescue_expired(self, limit: int = 1000) -> RescueReport:
        """Running jobs whose lease expired: back to queued, or failed when attempts are spent."""
        rows = await self.driver.rescue(utcnow(), limit)
        if rows:
            self._events_committed()
        return RescueReport(
            requeued=[r.id for r in rows if r.state == JobState.QUEUED.value],
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
        for state, before in self.retained(completed_before, failed_before):
            mark: datetime | None = None
            while True:
                done, mark = await self.prune_finished(state, before, batch, mark)
                total += done
                if done < batch:
                    break
        while await self.prune_fires(failed_before, batch) >= batch:
            pass
        while await self.prune_workflows(min(completed_before, failed_before), batch) >= batch:
            pass
        return total

    @staticmethod
    def retained(
        completed_before: datetime, failed_before: datetime
    ) -> list[tuple[JobState, datetime]]:
        """Each finished state with the moment before which its jobs go."""
        return [
            (JobState.COMPLETED, completed_before),
            (JobState.FAILED, failed_before),
            (JobState.CANCELLED, failed_before),
        ]

    async def prune_finished(
        self, state: JobState, before: datetime, limit: int, after: datetime | None = None
    ) -> tuple[int, datetime | None]:
        """One slice: up to `limit` jobs in `state` that finished before `before`, oldest
        first, deleted in one short transaction. Returns how many went (fewer than `limit`:
        none are left) and where the next slice starts: pass it back as `after`, so a slice
        does not walk again past the index entries of the rows the slices before it deleted
        (dead until vacuumed, which may be a while on a busy server)."""
        # A workflow's steps go with their workflow, never alone (`prune_workflows`).
        pick = [jobs.c.state == state.value, jobs.c.finished_at < before]
        pick.append(jobs.c.workflow_id.is_(None))
        if after is not None:
            pick.append(jobs.c.finished_at >= after)  # ties of `after` may be left: >=
        oldest = select(jobs.c.id).where(*pick).order_by(jobs.c.finished_at).limit(limit)
        # The fence re-checks each row as locked (a retry may have taken it back), spelled
        # so that no index can serve it: the rows are found by primary key only.
        fence = [
            func.coalesce(jobs.c.state, "") == state.value,
            func.coalesce(jobs.c.finished_at, before) < before,
            jobs.c.workflow_id.is_(None),
        ]
        async with self.db.write() as conn:
            # The slice's ids first, then its rows by key. As `id IN (SELECT ... LIMIT)`
            # inside the delete, with the fence indexable, a planner without statistics (a
            # backlog written faster than autovacuum analyzes it) ran the subquery once per
            # old row (~3M rows read for 500 of 6,000), then read every old row twice.
            ids = list((await conn.execute(oldest)).scalars())
            if not ids:
                return 0, after
            victims = jobs.c.id.in_(ids)
            gone = (
                await conn.execute(
                    delete(jobs)
                    .where(self.driver.in_lock_order([victims, *fence]), *fence)
                    .returning(jobs.c.finished_at)
                )
            ).all()
        marks = [aware(row.finished_at) for row in gone]
        return len(gone), max((m for m in marks if m is not None), default=after)

    async def prune_workflows(self, before: datetime, limit: int) -> int:
        """Up to `limit` workflows settled before `before`, deleted with their steps."""
        async with self.db.write() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(workflows.c.id)
                        .where(workflows.c.settled_at < before, workflows.c.state != "running")
                        .order_by(workflows.c.settled_at)
                        .limit(limit)
                    )
                ).scalars()
            )
            if ids:
                await delete_settled(conn, ids)
        return len(ids)

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
