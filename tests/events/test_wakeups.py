"""Wake-ups on commit: with a safety-net poll far longer than the test, events still reach
the relay's sinks and the SSE feed at once, whether this process or another wrote them, and
(PostgreSQL) once an older transaction that held them below the horizon ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from conveyor.domain import events as ev
from conveyor.domain.jobs import NewJob
from conveyor.events import Relay, RelayConfig
from conveyor.services.events import EventFeed, Scope
from conveyor.store.backend import QueueBackend
from tests.events.conftest import Recorder, finished_jobs, writing_elsewhere
from tests.support.processes import Cluster, eventually

NEVER = 60.0  # the safety-net poll: longer than any test here waits
WOKEN = RelayConfig(poll_interval=NEVER, lease_ttl=0.3)


@asynccontextmanager
async def relaying(backend: QueueBackend, sink: Recorder) -> AsyncIterator[None]:
    relay = Relay(backend, [sink], WOKEN)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: relay.lanes[0].held, timeout=10, what="the relay lock")
        await asyncio.sleep(0.1)  # the lane's first (empty) read is done: it is waiting
        yield
    finally:
        relay.stop()
        assert await asyncio.wait_for(task, 5) == 0  # stop ends an idle wait too


async def arrived(sink: Recorder, count: int, within: float) -> float:
    began = time.monotonic()
    await eventually(lambda: len(sink.ids) >= count, timeout=within, what=f"{count} events")
    return time.monotonic() - began


async def test_the_relay_wakes_on_this_process_commits(backend: QueueBackend) -> None:
    sink = Recorder()
    async with relaying(backend, sink):
        await finished_jobs(backend, 3)  # created, started, completed: enqueue, claim, finish
        assert await arrived(sink, 9, within=5) < 2
        await backend.cancel((await backend.enqueue([NewJob(type="noop", payload={})]))[0].id)
        assert await arrived(sink, 11, within=5) < 2  # SQLAlchemy-path writes ring too
    assert [e.type for e in sink.batches[-1]][-1] == ev.CANCELLED


@pytest.mark.parametrize("delay", [None, "3600"], ids=["queued", "scheduled"])
async def test_the_relay_wakes_on_another_process_commits(
    backend: QueueBackend, db_url: str, tmp_path: Path, delay: str | None
) -> None:
    """Another process: PostgreSQL's NOTIFY (jobs channel for a queued job, events channel
    for a scheduled one); SQLite's data_version watch."""
    sink = Recorder()
    cluster = Cluster(db_url, tmp_path)
    try:
        async with relaying(backend, sink):
            args = ["enqueue", "noop", *(["--delay", delay] if delay else [])]
            proc = cluster.spawn("enqueue", args, {})
            assert await proc.wait_exit(30) == 0, proc.output()
            await arrived(sink, 1, within=5)
    finally:
        cluster.close()
    assert sink.batches[0][0].type == ev.CREATED


async def test_the_sse_feed_wakes_on_commit(backend: QueueBackend) -> None:
    feed = EventFeed(backend, poll=NEVER)
    seen: list[ev.Event] = []

    async def follow() -> None:
        async with aclosing(feed.tail(ev.Position(), Scope())) as batches:
            async for batch in batches:
                seen.extend(batch)

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.2)  # caught up (nothing yet) and waiting
        await finished_jobs(backend, 2)
        await eventually(lambda: len(seen) >= 6, timeout=5, what="the feed's events")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_event_held_below_the_horizon_comes_once_the_older_transaction_ends(
    backend: QueueBackend, db_url: str
) -> None:
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has one writer: commit order is id order")
    sink = Recorder()
    relay = Relay(backend, [sink], RelayConfig(poll_interval=1.0, lease_ttl=0.3))
    task = asyncio.create_task(relay.run())
    older = await asyncpg.connect(db_url)
    try:
        await eventually(lambda: relay.lanes[0].held, timeout=10, what="the relay lock")
        blocker = older.transaction()
        await blocker.start()
        # An event writer (marked as Conveyor's are) with an xid below the next event's.
        await older.execute("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        await older.fetchval("SELECT txid_current()")
        await finished_jobs(backend, 1)  # rings now, but cannot be read yet
        await asyncio.sleep(0.6)  # past every quick re-check
        assert sink.ids == []
        await blocker.rollback()
        assert await arrived(sink, 3, within=5) < 2  # the safety-net poll finds them
    finally:
        await older.close()
        relay.stop()
        await asyncio.wait_for(task, 5)


async def test_a_write_transaction_open_in_another_database_delays_no_event(
    backend: QueueBackend,
) -> None:
    """The horizon ignores transactions that cannot write our events: another database's
    open write (a migration, a batch, a session idle in transaction) used to hold back
    every relay and SSE stream on the server until it ended."""
    if backend.dialect != "postgresql":
        pytest.skip("SQLite has one writer: commit order is id order")
    sink = Recorder()
    feed = EventFeed(backend, poll=NEVER)
    seen: list[ev.Event] = []

    async def follow() -> None:
        async with aclosing(feed.tail(ev.Position(), Scope())) as batches:
            async for batch in batches:
                seen.extend(batch)

    async with writing_elsewhere(), relaying(backend, sink):
        task = asyncio.create_task(follow())
        try:
            await asyncio.sleep(0.2)  # caught up (nothing yet) and waiting
            await finished_jobs(backend, 2)
            await arrived(sink, 6, within=10)  # the other transaction is still open
            await eventually(lambda: len(seen) >= 6, timeout=10, what="the feed's events")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert [e.id for e in seen] == sink.ids


async def test_a_woken_reader_that_finds_nothing_keeps_looking_then_rests(
    backend: QueueBackend,
) -> None:
    """After a ring: quick re-checks, then one a second while nothing is found (the horizon);
    once a read finds events, only a ring or the slow poll wakes it."""
    async with backend.event_wakeups() as pace:
        backend._events_committed(others=False)  # this process committed events
        assert await pace.wait(NEVER) is True
        began = time.monotonic()
        for _ in range(7):  # 5, 20, 50, 100, 250, 500 ms, then 1 s
            assert await pace.wait(NEVER, found=False) is False
        assert 1.8 < time.monotonic() - began < 4
        waiting = asyncio.create_task(pace.wait(NEVER, found=True))
        await asyncio.sleep(1.5)
        assert not waiting.done()  # found: no more re-checks
        backend._events_committed(others=False)
        assert await asyncio.wait_for(waiting, 1) is True


async def test_a_reader_with_a_gap_reads_no_more_often(backend: QueueBackend) -> None:
    async with backend.event_wakeups(min_gap=0.2) as pace:
        backend._events_committed(others=False)
        await pace.wait(NEVER)
        began = time.monotonic()
        backend._events_committed(others=False)
        assert await pace.wait(NEVER, found=True) is True
        assert time.monotonic() - began >= 0.19
