"""Gauges read from the database (queue depth, oldest job, workers alive, jobs per limit) and
the relay's lag.

A scrape never queries the database: the API process refreshes these every few seconds in
the background (`database_gauges`), so a slow or unreachable database cannot make scrapes
slow, and many scrapers cost no more than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence, Sized
from datetime import UTC, datetime
from typing import Protocol

from conveyor.domain.states import JobState
from conveyor.metrics.families import (
    LIMIT_READY,
    LIMIT_RUNNING,
    QUEUE_JOBS,
    QUEUE_OLDEST_AGE,
    RELAY_LAG_EVENTS,
    RELAY_LAG_SECONDS,
    WORKERS_ALIVE,
)

log = logging.getLogger("conveyor.metrics")


class QueueCountLike(Protocol):
    @property
    def queue(self) -> str: ...

    @property
    def state(self) -> JobState: ...

    @property
    def count(self) -> int: ...

    @property
    def oldest_created_at(self) -> datetime | None: ...


class LimitTotalLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def running(self) -> int: ...

    @property
    def ready(self) -> int: ...


# The two reads a refresh needs (the queue and worker services have them): every queue's
# counts by state, and the workers alive.
ReadCounts = Callable[[], Awaitable[Sequence[QueueCountLike]]]
ReadAlive = Callable[[], Awaitable[Sized]]
# ... and, where flow control is shown, the jobs running and ready per limit name.
ReadLimits = Callable[[], Awaitable[Sequence[LimitTotalLike]]]


# Every queue ever seen by this process: a queue whose jobs were all pruned reads 0 rather
# than keeping its last depth forever.
_known_queues: set[str] = set()


def set_queue_gauges(counts: Iterable[QueueCountLike], now: datetime | None = None) -> None:
    """Every state of every known queue, 0 where the database has no such job."""
    now = now or datetime.now(UTC)
    found = {(c.queue, c.state.value): c for c in counts}
    _known_queues.update(queue for queue, _ in found)
    for queue in _known_queues:
        for state in JobState:
            count = found.get((queue, state.value))
            oldest = count.oldest_created_at if count else None
            age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
            QUEUE_JOBS.labels(queue, state.value).set(count.count if count else 0)
            QUEUE_OLDEST_AGE.labels(queue, state.value).set(age)


_known_limits: set[str] = set()


def set_limit_gauges(totals: Iterable[LimitTotalLike]) -> None:
    """Running and ready jobs per limit name; 0 for a known limit with none now."""
    found = {t.name: t for t in totals}
    _known_limits.update(found)
    for name in _known_limits:
        total = found.get(name)
        LIMIT_RUNNING.labels(name).set(total.running if total else 0)
        LIMIT_READY.labels(name).set(total.ready if total else 0)


def set_relay_lag(sink: str, events: int, seconds: float) -> None:
    """The relay's backlog for one sink: events not yet delivered and the oldest one's age."""
    RELAY_LAG_EVENTS.labels(sink).set(events)
    RELAY_LAG_SECONDS.labels(sink).set(seconds)


async def refresh_database_gauges(
    counts_of: ReadCounts, alive_of: ReadAlive, limits_of: ReadLimits | None = None
) -> None:
    counts = await counts_of()
    alive = await alive_of()
    totals = await limits_of() if limits_of is not None else None
    set_queue_gauges(counts)
    WORKERS_ALIVE.set(len(alive))
    if totals is not None:
        set_limit_gauges(totals)


async def _refresh_forever(
    counts_of: ReadCounts, alive_of: ReadAlive, interval: float, limits_of: ReadLimits | None
) -> None:
    """Keep the last values while the database is away (dropping to 0 would read as an
    empty queue), and say so once per outage rather than every few seconds."""
    failing = False
    while True:
        try:
            await refresh_database_gauges(counts_of, alive_of, limits_of)
        except Exception as exc:
            if not failing:
                log.warning("metrics: cannot read queue figures (%s); keeping the last ones", exc)
            failing = True
        else:
            if failing:
                log.info("metrics: queue figures readable again")
            failing = False
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def database_gauges(
    counts_of: ReadCounts,
    alive_of: ReadAlive,
    interval: float,
    limits_of: ReadLimits | None = None,
) -> AsyncIterator[None]:
    """Refresh the database gauges every `interval` seconds while the block runs (0: never)."""
    if interval <= 0:
        yield
        return
    task = asyncio.create_task(
        _refresh_forever(counts_of, alive_of, interval, limits_of), name="metrics-gauges"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
