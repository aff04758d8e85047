"""Queue pauses: a paused queue still accepts jobs, but no worker claims from it."""

from __future__ import annotations

from sqlalchemy import delete, select

from conveyor.domain.clock import utcnow
from conveyor.domain.queues import PausedQueue
from conveyor.store.base import StoreBase
from conveyor.store.records import must
from conveyor.store.tables import queue_pauses


class Pauses(StoreBase):
    async def pause_queue(self, queue: str, by: str | None = None) -> None:
        """No worker claims from `queue` once this commits; it still accepts jobs."""
        values = {"queue": queue, "paused_at": utcnow(), "paused_by": by}
        statement = self.driver.insert(queue_pauses).values(**values)
        async with self.db.write() as conn:
            await conn.execute(statement.on_conflict_do_nothing(index_elements=["queue"]))

    async def resume_queue(self, queue: str) -> bool:
        """Let workers claim from `queue` again (woken at once); False if it was not paused."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(queue_pauses).where(queue_pauses.c.queue == queue))
            if result.rowcount:
                await self.driver.notify_jobs(conn, {queue})
        return bool(result.rowcount)

    async def paused_queues(self) -> list[PausedQueue]:
        query = select(queue_pauses).order_by(queue_pauses.c.queue)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [PausedQueue(r.queue, must(r.paused_at), r.paused_by) for r in rows]
