"""Following the event outbox for one subscriber: where to start, and what came next.

The doors (SSE today) need three things the store does not say directly: the newest
committed position (a subscriber that asks for "from now"), a bounded tail that waits for
wake-ups on commit while caught up (store/wake.py; a slow poll as the safety net), and
whether a finished job's story was already told up to a position (so a reconnecting client
can be told "nothing more" instead of waiting forever).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from conveyor.domain.events import CANCELLED, COMPLETED, FAILED, SKIPPED, Event, Position
from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import TERMINAL
from conveyor.store.backend import QueueBackend

# A subscriber reads at most this often however busy the outbox is: with many streams open,
# each commit's wake-up would otherwise cost one read per stream.
READ_GAP = 0.02
# Event types after which a job changes no more (unless a user retries it).
TERMINAL_EVENTS = frozenset({COMPLETED, FAILED, CANCELLED, SKIPPED})


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose events a subscriber may see: one owner's (None: everyone's), one job's or all."""

    owner_id: str | None = None
    job_id: str | None = None


class EventFeed:
    """Reads the outbox for subscribers, in bounded batches, never past what has committed."""

    def __init__(self, backend: QueueBackend, *, batch: int = 100, poll: float = 1.0) -> None:
        self.backend = backend
        self.batch = batch
        self.poll = poll

    async def read(self, after: Position, scope: Scope, limit: int | None = None) -> list[Event]:
        return await self.backend.read_events(
            after, limit or self.batch, owner_id=scope.owner_id, job_id=scope.job_id
        )

    async def tail(self, after: Position, scope: Scope) -> AsyncGenerator[list[Event]]:
        """Every batch after `after`, forever; an empty batch after each idle wait, so the
        caller gets control back regularly (keep-alives, disconnects) while nothing happens.
        A full batch is followed at once: a subscriber behind catches up at read speed.
        While caught up it reads again when new events commit (or after `poll`)."""
        async with self.backend.event_wakeups(READ_GAP) as pace:
            while True:
                batch = await self.read(after, scope)
                if batch:
                    after = batch[-1].position
                yield batch
                if len(batch) < self.batch:
                    await pace.wait(self.poll, found=bool(batch))

    async def head(self, owner_id: str | None = None) -> Position:
        """The newest readable position of an owner's events (None: anyone's); every event
        not readable yet comes after it, so it is a gap-free "now".

        The store reads forward only, so this gallops then bisects with one-row reads: about
        2·log2(n) indexed queries instead of reading all n retained events. (A store method
        reading the last row below the horizon would replace it.)"""
        scope = Scope(owner_id)
        first = await self.read(Position(), scope, 1)
        if not first:
            return Position()

        async def xid_from(xid: int) -> int | None:
            # Ids start at 1, so "after (xid, 0)" is "in transaction xid or a later one".
            found = await self.read(Position(xid, 0), scope, 1)
            return found[0].xid if found else None

        xid = await _largest(xid_from, first[0].xid)

        async def id_from(event_id: int) -> int | None:
            found = await self.read(Position(xid, event_id - 1), scope, 1)
            return found[0].id if found and found[0].xid == xid else None

        first_id = await id_from(0)
        return Position(xid, await _largest(id_from, first_id or 0))

    async def story_told(self, job: JobRecord, after: Position, scope: Scope) -> bool:
        """True when `job` is finished and its newest visible event is a terminal one at or
        before `after`: a client resuming there has seen the end. Only the job's own events
        are read (`scope` names it). A finished job whose last event is not visible yet (an
        older transaction still open on PostgreSQL) is not "told" yet."""
        if job.state not in TERMINAL:
            return False
        last: Event | None = None
        position = Position()
        while batch := await self.read(position, scope):
            last, position = batch[-1], batch[-1].position
        if last is None or last.type not in TERMINAL_EVENTS:
            return False
        return (last.xid, last.id) <= (after.xid, after.id)


async def _largest(at_least: Callable[[int], Awaitable[int | None]], known: int) -> int:
    """The largest key, given `at_least(k)` (the smallest key >= k, or None) and one key
    `known` to exist: double the step while keys lie beyond, then bisect the last gap."""
    step = 1
    while (found := await at_least(known + step)) is not None:
        known, step = found, step * 2
    high = known + step  # no key at or past it, as far as the last read saw
    while high - known > 1:
        middle = (known + high) // 2
        found = await at_least(middle)
        if found is None or found >= high:
            high = middle
        else:
            known = found
    return known
