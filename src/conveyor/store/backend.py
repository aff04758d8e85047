"""The queue store: every queue operation by name, one class assembled from its concerns.

Policy (which statements, in which transaction, what events, the lock order, fencing)
lives once, in the per-concern modules this class is made of; what differs between the
databases is the driver's (store/driver.py), chosen by store/factory.py.
"""

from __future__ import annotations

from conveyor.store.claims import Claims
from conveyor.store.driver import Callback, Leadership, Listener
from conveyor.store.flow import FlowReads
from conveyor.store.limits import Limits
from conveyor.store.maintenance import Maintenance
from conveyor.store.outbox import Outbox
from conveyor.store.pauses import Pauses
from conveyor.store.schedules import Schedules
from conveyor.store.workers import Workers
from conveyor.store.workflows import Workflows

# What callers hold; its listener and leadership types are store.driver's.
__all__ = ["QueueBackend"]


class QueueBackend(
    Schedules, Workflows, Claims, Maintenance, Outbox, Workers, Pauses, Limits, FlowReads
):
    """Every queue operation, by name. Instances are per process and safe to share.

    jobs, reads and schedules (store/jobs.py, reads.py, schedules.py), the worker's claims
    (claims.py), the leader's maintenance (maintenance.py), the outbox (outbox.py),
    workers (workers.py), queue pauses (pauses.py), flow control's limits (limits.py) and
    its reads (flow.py), workflows (workflows.py)."""

    async def listen(self, on_jobs: Callback, on_cancel: Callback) -> Listener:
        """Wake-ups for a worker: queues that got runnable jobs, jobs cancelled while running."""
        return await self.driver.listen(on_jobs, on_cancel)

    def leadership(self, name: str, holder: str, ttl: float) -> Leadership:
        """Who runs `name` (maintenance, a relay lane) right now; one holder at a time."""
        return self.driver.leadership(name, holder, ttl)

    async def close(self) -> None:
        await self._close_wakeups()
        await self.driver.close()
        await self.db.dispose()
