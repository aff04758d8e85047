"""Gauges read from the database (queue depth, oldest job, workers alive) and the relay's lag.

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


# The two reads a refresh needs (the queue and worker services have them): every queue's
# counts by state, and the workers alive.
ReadCounts = Callable[[], Awaitable[Sequence[QueueCountLike]]]
ReadAlive = Callable[[], Awaitable[Sized]]


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


def set_relay_lag(sink: str, events: int, seconds: float) -> None:
    """The relay's backlog for one sink: events not yet delivered and the oldest one's age."""
    RELAY_LAG_EVENTS.labels(sink).set(events)
    RELAY_LAG_SECONDS.labels(sink).set(seconds)


async def refresh_database_gauges(counts_of: ReadCounts, alive_of: ReadAlive) -> None:
    counts = await counts_of()
    alive = await alive_of()
    set_queue_gauges(counts)
    WORKERS_ALIVE.set(len(alive))


async def _refresh_forever(counts_of: ReadCounts, alive_of: ReadAlive, interval: float) -> None:
    """Keep the last values while the database is away (dropping to 0 would read as an
    empty queue), and say so once per outage rather than every few seconds."""
    failing = False
    while True:
        try:
            await refresh_database_gauges(counts_of, alive_of)
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
    counts_of: ReadCounts, alive_of: ReadAlive, interval: float
) -> AsyncIterator[None]:
    """Refresh the database gauges every `interval` seconds while the block runs (0: never)."""
    if interval <= 0:
        yield
        return
    task = asyncio.create_task(
        _refresh_forever(counts_of, alive_of, interval), name="metrics-gauges"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
