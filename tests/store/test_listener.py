"""The listener on both databases: wake-ups for enqueues on a worker's queues and for cancels
of its running jobs, written by another backend (another process's stand-in) or by another
process; `alive` and `close`.

A wake-up names its queue, or says "*" (look at every queue): PostgreSQL's NOTIFY names the
queue; SQLite names it within a process and says "*" when another process's commit shows in
`PRAGMA data_version`. A cancel names the job id.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import pytest

from conveyor.domain.jobs import NewJob
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend

DEADLINE = 10.0  # seconds a wake-up may take on a busy machine (normally milliseconds)
POLL = 0.01
# PostgreSQL: the listener's keepalive query runs every 5 s and may take 5 s to time out
# (KEEPALIVE_SECONDS in the store).
KEEPALIVE = 2 * 5.0


class Listening(Protocol):
    """What `backend.listen(on_jobs, on_cancel)` returns."""

    def alive(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass
class Heard:
    """What one listener was told."""

    queues: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)

    def woke(self, queue: str) -> bool:
        return queue in self.queues or "*" in self.queues


async def until(check: Callable[[], bool], seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s")
        await asyncio.sleep(POLL)


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[QueueBackend]:
    """A second backend on the same database: what another process would write through."""
    opened = open_backend(db_url)
    yield opened
    await opened.close()


async def listening(backend: QueueBackend) -> tuple[Listening, Heard]:
    heard = Heard()
    listener = await backend.listen(heard.queues.append, heard.cancels.append)
    return listener, heard


def new_job(queue: str) -> NewJob:
    return NewJob(type="noop", payload={}, queue=queue)


async def test_an_enqueue_by_another_backend_wakes_the_listener_for_its_queue(
    backend: QueueBackend, other: QueueBackend
) -> None:
    listener, heard = await listening(backend)
    try:
        await other.enqueue([new_job("mail")])
        await until(lambda: heard.woke("mail"))
        assert heard.cancels == []
    finally:
        await listener.close()


async def test_a_released_or_retried_job_wakes_its_queue_too(
    backend: QueueBackend, other: QueueBackend
) -> None:
    (queued,) = await other.enqueue([new_job("q1")])
    (failed,) = await other.enqueue([NewJob(type="noop", payload={}, queue="q2", max_attempts=1)])
    await other.claim("w", ["q1", "q2"], 2, 30)
    listener, heard = await listening(backend)
    try:
        await other.release("w", [queued.id])
        await until(lambda: heard.woke("q1"))
        await other.cancel(failed.id)
        await other.retry(failed.id)
        await until(lambda: heard.woke("q2"))
    finally:
        await listener.close()


SUBMIT = """
import asyncio, sys
from conveyor.domain.jobs import NewJob
from conveyor.store.factory import open_backend

async def main() -> None:
    backend = open_backend(sys.argv[1])
    await backend.enqueue([NewJob(type="noop", payload={}, queue="reports")])
    await backend.close()

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.slow
async def test_an_enqueue_by_another_process_wakes_the_listener(
    backend: QueueBackend, db_url: str
) -> None:
    listener, heard = await listening(backend)
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", SUBMIT, db_url)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        await until(lambda: heard.woke("reports"))
    finally:
        await listener.close()


async def test_cancelling_a_running_job_tells_the_listener_its_id(
    backend: QueueBackend, other: QueueBackend
) -> None:
    (one,), (two,) = await other.enqueue([new_job("q")]), await other.enqueue([new_job("q")])
    await other.claim("w", ["q"], 2, 30)
    listener, heard = await listening(backend)
    try:
        await other.cancel(one.id)
        await until(lambda: one.id in heard.cancels)
        assert (await other.bulk_ids("cancel", [two.id], None, 10)).changed == 1
        await until(lambda: two.id in heard.cancels)
    finally:
        await listener.close()


async def test_a_listener_is_alive_until_closed_and_hears_nothing_after(
    backend: QueueBackend, other: QueueBackend
) -> None:
    listener, heard = await listening(backend)
    assert listener.alive()
    await listener.close()
    assert not listener.alive()
    told = len(heard.queues)

    witness, seen = await listening(backend)  # hears what the closed one would have
    try:
        await other.enqueue([new_job("mail")])
        await until(lambda: seen.woke("mail"))
    finally:
        await witness.close()
    assert len(heard.queues) == told


async def test_a_listener_whose_session_is_terminated_reconnects_and_hears_again(
    backend: QueueBackend, other: QueueBackend, db_url: str
) -> None:
    """PostgreSQL: a LISTEN connection lost (here its server session killed) is reopened by
    the listener itself, which stays alive, says "look" once back, and hears new NOTIFYs."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's listener holds no server session to lose")
    admin = await asyncpg.connect(db_url)
    try:
        sessions = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        before = {r["pid"] for r in await admin.fetch(sessions)}
        listener, heard = await listening(backend)
        try:
            (pid,) = {r["pid"] for r in await admin.fetch(sessions)} - before
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await until(lambda: "" in heard.queues, seconds=KEEPALIVE + DEADLINE)
            assert listener.alive()
            await other.enqueue([new_job("after")])
            await until(lambda: heard.woke("after"))
        finally:
            await listener.close()
    finally:
        await admin.close()
