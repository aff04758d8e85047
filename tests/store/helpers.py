"""What the store's tests share: a job to enqueue, a job brought to a state, readable events."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.store.backend import QueueBackend


def job(**fields: object) -> NewJob:
    """A job of type "noop" with payload {"n": n} unless `fields` say otherwise."""
    fields.setdefault("type", "noop")
    return NewJob(payload={"n": fields.pop("n", 0)}, **fields)  # type: ignore[arg-type]


async def job_in_state(backend: QueueBackend, state: str) -> str:
    """A job brought to `state` through the real transitions.

    A job that must be claimed gets a queue of its own, so the claim takes no other test
    job with it, and an hour's lease, so it is still running however slow the machine."""
    if state == "scheduled":
        (e,) = await backend.enqueue([job(run_at=utcnow() + timedelta(hours=1))])
        return e.id
    queue = "default" if state == "queued" else f"in-{state}-{utcnow().timestamp()}"
    (e,) = await backend.enqueue([job(max_attempts=2, queue=queue)])
    if state == "queued":
        return e.id
    worker = f"w-{e.id[-6:]}"
    (c,) = await backend.claim(worker, [queue], 1, lease_s=3600)
    assert c.id == e.id
    later = utcnow() + timedelta(hours=1)
    error = ErrorInfo("E", "m")
    outcomes = {
        "running": None,
        "completed": Outcome(c.id, 1, "completed"),
        "failed": Outcome(c.id, 1, "failed", error=error),
        "retrying": Outcome(c.id, 1, "retry", error=error, retry_at=later),
    }
    if state == "cancelled":
        await backend.cancel(e.id)
    elif (outcome := outcomes[state]) is not None:
        assert await backend.finish(worker, [outcome]) == {e.id}
    if state == "running":
        return e.id
    assert (await backend.get(e.id)).state.value == state
    return e.id


async def settled(
    backend: QueueBackend, count: int, *, job_id: str | None = None
) -> list[ev.Event]:
    """The first `count` events once readable. On PostgreSQL a reader sees only transactions
    older than the oldest still running on the server, and other tests' transactions count."""
    for _ in range(200):
        found = await backend.read_events(ev.Position(), job_id=job_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {len(found)} of {count} events became readable")


async def wait_past(moment: datetime) -> None:
    """Return once the clock has passed `moment` (a lease's or a run time's end): time must
    pass for what comes next, however busy the machine is."""
    while utcnow() <= moment:
        await asyncio.sleep(0.01)
