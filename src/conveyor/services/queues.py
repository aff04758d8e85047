"""Queues as a person sees them: depth per state, oldest waiting job, paused or not."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ACCOUNTS_OWNER
from conveyor.domain.queues import QUEUE_NAME_MAX, QUEUE_NAME_PATTERN, QueueCount
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry

# The names a job may be submitted to (api/schemas.py JobCreate.queue), so any queue can be
# paused, even before its first job arrives.
QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class QueueOverview:
    name: str
    paused: bool
    counts_by_state: dict[JobState, int]  # every state, zero included
    oldest_queued_age_s: float | None  # how long the longest-waiting queued job has been due


class QueueService:
    """Pause and resume are stored in the database, so every worker process honours them."""

    def __init__(self, backend: QueueBackend, registry: Registry) -> None:
        self.backend = backend
        self.registry = registry

    async def pause(self, name: str, by: str | None = None) -> None:
        """Workers stop claiming from `name` (running jobs finish); submissions still land."""
        await self.backend.pause_queue(_checked(name), by)

    async def resume(self, name: str) -> None:
        await self.backend.resume_queue(_checked(name))

    async def counts(self, owner_id: str | None = None) -> list[QueueCount]:
        """Jobs per queue and state, with the oldest of each: one owner's, or everyone's."""
        return await self.backend.counts(owner_id)

    async def public_counts(self) -> list[QueueCount]:
        """Everyone's counts but the account service's own mail jobs: what an anonymous caller
        may see (counting those would tell whether a resend went to a registered address)."""
        own = {(c.queue, c.state): c.count for c in await self.backend.counts(ACCOUNTS_OWNER)}
        counts = [
            replace(c, count=c.count - own.get((c.queue, c.state), 0))
            for c in await self.backend.counts()
        ]
        return [c for c in counts if c.count > 0]

    async def overview(self, owner_id: str | None) -> list[QueueOverview]:
        """Every queue with jobs (one owner's, or everyone's for None), every handler's queue,
        and, for everyone's view, every paused queue; sorted by name."""
        counts = await self.backend.counts(owner_id)
        paused = {p.queue for p in await self.backend.paused_queues()}
        names = {c.queue for c in counts} | {spec.queue for spec in self.registry}
        if owner_id is None:
            names |= paused
        now = utcnow()
        return [_overview(name, name in paused, counts, now) for name in sorted(names)]

    async def get(self, name: str) -> QueueOverview:
        """One queue as everyone's overview shows it; a queue without jobs has zero counts."""
        name = _checked(name)
        for queue in await self.overview(None):
            if queue.name == name:
                return queue
        return _overview(name, False, [], utcnow())


def _checked(name: str) -> str:
    if len(name) > QUEUE_NAME_MAX or not QUEUE_NAME.match(name):
        raise InvalidInput(
            "a queue name is 1-100 ASCII letters, digits, '_', '.', '-' or ':'", queue=name
        )
    return name


def _overview(name: str, paused: bool, counts: list[QueueCount], now: datetime) -> QueueOverview:
    by_state = dict.fromkeys(JobState, 0)
    oldest: datetime | None = None
    for c in counts:
        if c.queue != name:
            continue
        by_state[c.state] += c.count
        if c.state is JobState.QUEUED:
            oldest = c.oldest_run_at
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
    return QueueOverview(name, paused, by_state, age)
