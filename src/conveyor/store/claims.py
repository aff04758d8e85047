"""A worker's operations on its jobs: claim, finish, heartbeat, release, progress.

Claim and finish are the hot path: one driver statement each (a few for a finish of mixed
kinds), with their events in the same transaction. Finish, heartbeat, release and progress
are fenced: they change a job only while this worker still runs this attempt of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, Outcome
from conveyor.domain.states import JobState
from conveyor.metrics import count_refused
from conveyor.store import events as outbox
from conveyor.store.base import StoreBase
from conveyor.store.driver import Claimed, Fence, FinishBatch
from conveyor.store.jobs import EVENT_COLUMNS
from conveyor.store.tables import jobs


class Claims(StoreBase):
    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_s: float,
        *,
        exclude: Sequence[str] = (),
        early: Callable[[list[ClaimedJob]], None] | None = None,
    ) -> Claimed:
        """Take up to `limit` queued jobs of these queues, highest priority first.

        `queues == ["*"]` takes from every queue except those in `exclude`. `early` is told
        the jobs once claimed, before the commit returns: an idle worker starts them while
        the database makes the claim durable (one sync less before a job starts). If the
        commit then fails, the claim raises: with an error from the server the jobs were
        not claimed and the caller must stop them; with the connection lost (`Unavailable`)
        the COMMIT may have been applied, and only the database can say (the worker lets
        them run on: its fenced finish and its heartbeat settle it).
        """
        if limit <= 0 or not queues:
            return Claimed()
        now = utcnow()
        every = "*" in queues
        names = list(exclude) if every else list(queues)
        lease = (now, now + timedelta(seconds=lease_s))
        said = outbox.started(worker_id)
        claimed = await self.driver.claim(worker_id, names, every, limit, lease, said, early)
        if claimed:
            self._events_committed()
        if claimed.refused:
            count_refused(claimed.refused)
        return claimed

    async def arm_claim(self) -> None:
        """An idle worker readies its next claim's transaction before it waits (PostgreSQL:
        the BEGIN is sent now, not after the wake-up), so the claim a wake-up starts is
        one round trip before its jobs start. Only while nothing runs and nothing waits to
        be recorded: a busy worker's claims are single statements, and a held connection
        would be one the finisher and the next claim cannot use (bench/README.md, "BEGIN
        ahead reverted"). The next `claim`, whatever its kind, uses it."""
        await self.driver.arm_claim()

    async def disarm_claim(self) -> None:
        """Give back an armed claim transaction unused (a worker stopping)."""
        await self.driver.disarm_claim()

    async def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Persist outcomes in one transaction; returns the ids accepted (the rest were fenced)."""
        if not outcomes:
            return set()
        now = utcnow()
        batches = []
        for kind in outbox.FINISHED:  # completed, retry, failed: one statement each
            chosen = [o for o in outcomes if o.kind == kind]
            if chosen:
                errors = [_entry(o, now, worker_id) for o in chosen]
                events = [outbox.finished(o) for o in chosen]
                batches.append(FinishBatch(kind, chosen, errors, events))
        accepted = await self.driver.finish(worker_id, now, batches)
        if accepted:
            self._events_committed()
        return accepted

    async def heartbeat(self, worker_id: str, lease_s: float) -> set[str]:
        """Extend the leases of all this worker's running jobs; returns the ids it still owns."""
        now = utcnow()
        return await self.driver.heartbeat(worker_id, now, now + timedelta(seconds=lease_s))

    async def release(self, worker_id: str, job_ids: Sequence[str]) -> set[str]:
        """Give running jobs back to the queue without spending their attempt (shutdown)."""
        if not job_ids:
            return set()
        fence = [
            jobs.c.id.in_(list(job_ids)),
            jobs.c.worker_id == worker_id,
            jobs.c.state == JobState.RUNNING.value,
        ]
        async with self.db.write() as conn:
            result = await conn.execute(
                self._update_locked(fence)
                .values(
                    state=JobState.QUEUED.value,
                    attempt=jobs.c.attempt - 1,
                    worker_id=None,
                    lease_expires_at=None,
                    started_at=None,
                )
                .returning(*EVENT_COLUMNS)
            )
            rows = result.all()
            if rows:
                now = utcnow()
                said = outbox.requeued("released")
                await self._log(conn, [outbox.said_row(said, r, now) for r in rows])
                await self.driver.notify_jobs(conn, {row.queue for row in rows})
        return {row.id for row in rows}

    async def set_progress(
        self, worker_id: str, job_id: str, attempt: int, percent: int, message: str | None
    ) -> bool:
        """Record a running attempt's progress and its event; False when the job is no longer
        this worker's attempt (the fence)."""
        fence = Fence(worker_id, job_id, attempt)
        said = outbox.progressed(percent, message)
        if not await self.driver.set_progress(fence, percent, message, said, utcnow()):
            return False
        self._events_committed()
        return True


def _entry(outcome: Outcome, now: datetime, worker_id: str) -> dict[str, Any] | None:
    """The entry a failed attempt adds to the job's errors (None: it did not fail)."""
    if outcome.error is None:
        return None
    return outcome.error.as_entry(outcome.attempt, now, worker_id)
