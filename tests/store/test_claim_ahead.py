"""A claim begun ahead (`open_claim`): an idle worker's BEGIN sent before the wake-up, so
that the claim it wakes for is one round trip. What it must keep: the claim sees jobs
committed after the BEGIN, commits them, and a transaction the server ended while it waited
costs nothing but a new one."""

from __future__ import annotations

import asyncio

import asyncpg

from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.database import plain_postgres_dsn
from tests.store.helpers import job

W = "worker-a"


async def _idle_in_transaction(db_url: str) -> int:
    """Sessions on this test's database left idle inside a transaction."""
    admin = await asyncpg.connect(plain_postgres_dsn(db_url))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state = 'idle in transaction'"
                " AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()


async def _enqueue_and_claim_once(backend: QueueBackend) -> None:
    """A job enqueued now is claimed by an early-told claim, committed, and by no other."""
    (queued,) = await backend.enqueue([job(n=1)])
    told: list[str] = []
    claimed = await backend.claim(
        W, ["default"], 4, 30, early=lambda js: told.extend(j.id for j in js)
    )
    assert [c.id for c in claimed] == told == [queued.id]
    record = await backend.get(queued.id)
    assert record.state is JobState.RUNNING and record.attempt == 1 and record.worker_id == W
    assert await backend.claim("worker-b", ["default"], 4, 30) == []


async def test_a_claim_begun_ahead_takes_jobs_enqueued_after_it(
    backend: QueueBackend, db_url: str
) -> None:
    """BEGIN takes no snapshot: the claim sees a job committed after it, claims it once,
    commits it, and leaves no transaction open."""
    await backend.open_claim()
    await asyncio.sleep(0.05)
    await _enqueue_and_claim_once(backend)
    if db_url.startswith("postgres"):
        assert await _idle_in_transaction(db_url) == 0


async def test_a_claim_begun_ahead_and_ended_by_the_server_still_claims(
    backend: QueueBackend, db_url: str
) -> None:
    """The server ends a session idle in a transaction past its timeout (here 0.1 s, set on
    the session the claim is begun on): the claim then begins its own, and the job is
    claimed once, attempt 1, nothing lost."""
    if not db_url.startswith("postgres"):
        assert await backend.open_claim() is None  # SQLite: BEGIN IMMEDIATE is the claim's
        return
    async with backend.db.raw() as raw:  # kept as the spare: `open_claim` takes it
        await raw.execute("SET idle_in_transaction_session_timeout = 100")
    assert await backend.open_claim() is not None
    assert await _idle_in_transaction(db_url) == 1
    await asyncio.sleep(0.6)
    assert await _idle_in_transaction(db_url) == 0  # ended by the server
    await _enqueue_and_claim_once(backend)


async def test_a_claim_begun_ahead_and_not_used_is_ended_by_close_claim(
    backend: QueueBackend, db_url: str
) -> None:
    """A worker that stops while idle leaves no transaction open; the next claim works."""
    await asyncio.gather(backend.open_claim(), backend.open_claim())  # two workers: one
    await backend.open_claim()  # still usable: the same one, not another
    if db_url.startswith("postgres"):
        assert await _idle_in_transaction(db_url) == 1
    await backend.close_claim()
    if db_url.startswith("postgres"):
        assert await _idle_in_transaction(db_url) == 0
    (queued,) = await backend.enqueue([job(n=1)])
    (claimed,) = await backend.claim(W, ["default"], 4, 30, early=lambda js: None)
    assert claimed.id == queued.id
