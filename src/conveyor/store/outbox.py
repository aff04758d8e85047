"""The outbox as its readers see it: events in commit-safe order, cursors, pruning, wake-ups.

How event rows are made and read is store/events.py; how readers are woken, store/wake.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.store import events as rows
from conveyor.store.base import StoreBase
from conveyor.store.records import must
from conveyor.store.tables import events, sink_cursors
from conveyor.store.wake import EventWatch, Pace


class Outbox(StoreBase):
    _horizons: SharedHorizon | None = None

    @property
    def _one_writer(self) -> bool:
        """SQLite: commit order is id order and every event's xid is 0 (store/events.py)."""
        return self.dialect == "sqlite"

    async def read_events(
        self,
        after: ev.Position,
        limit: int = 500,
        *,
        owner_id: str | None = None,
        job_id: str | None = None,
    ) -> list[ev.Event]:
        """Committed events after `after`, in an order no later commit can precede."""
        horizon = await self.read_horizon()
        query = self.events_query(after, limit, horizon, owner_id=owner_id, job_id=job_id)
        async with self.db.read() as conn:
            return [rows.to_event(row) for row in await conn.execute(query)]

    async def read_horizon(self) -> int | None:
        """Where reading must stop for now (None: nowhere, one writer). It is asked once
        for all the readers of this process that are waiting for one, in its own statement
        before theirs (docs/events.md, "Reading in commit order")."""
        loop = asyncio.get_running_loop()
        if self._horizons is None or self._horizons.loop is not loop:
            self._horizons = SharedHorizon(self.driver.horizon, loop)
        return await self._horizons.get()

    def events_query(
        self,
        after: ev.Position,
        limit: int,
        horizon: int | None = None,
        *,
        owner_id: str | None = None,
        job_id: str | None = None,
    ) -> Any:
        """The statement `read_events` runs below `horizon` (also for EXPLAIN: every
        reader's plan must be an index range from its position, never a scan from the
        table's start)."""
        return rows.page_query(
            after, horizon, limit, owner_id=owner_id, job_id=job_id, one_writer=self._one_writer
        )

    def event_wakeups(self, min_gap: float = 0.0) -> AbstractAsyncContextManager[Pace]:
        """`async with backend.event_wakeups() as pace:` then `await pace.wait(poll, found=...)`
        between reads of the outbox: returns soon after new events commit, anywhere, but
        not sooner than `min_gap` after the previous wait (many readers, busy outbox)."""
        if self._watch is None:
            self._watch = EventWatch(self._bell, self.driver.listen_events)
        return self._watch.pace(min_gap)

    async def cursor(self, sink: str) -> ev.Position:
        query = select(sink_cursors).where(sink_cursors.c.sink == sink)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return ev.Position() if row is None else ev.Position(row.xid, row.event_id)

    async def save_cursor(self, sink: str, position: ev.Position) -> None:
        values = {"xid": position.xid, "event_id": position.id, "updated_at": utcnow()}
        async with self.db.write() as conn:
            done = await conn.execute(
                update(sink_cursors).where(sink_cursors.c.sink == sink).values(**values)
            )
            if done.rowcount == 0:
                await conn.execute(insert(sink_cursors).values(sink=sink, **values))

    async def prune_events(
        self, before: datetime, sinks: Sequence[str] = (), batch: int = 1000
    ) -> int:
        """Delete every event `prune_old_events` may, slice by slice (see there)."""
        total, mark = 0, None
        while True:
            done, mark = await self.prune_old_events(before, sinks, batch, mark)
            total += done
            if done < batch:
                return total

    async def prune_old_events(
        self,
        before: datetime,
        sinks: Sequence[str] = (),
        limit: int = 1000,
        after: ev.Position | None = None,
    ) -> tuple[int, ev.Position | None]:
        """One slice: delete up to `limit` of the oldest events, in reading order from
        `after`, that are older than `before` and that every sink still in use has
        delivered, in one short transaction. Returns how many went (fewer than `limit`:
        nothing more can go now) and where the next slice starts: pass it back as `after`,
        so a slice does not walk again past the index entries of the events the slices
        before it deleted (dead until vacuumed).

        The slice walks the reading order's index, so no index on the events' age is kept
        for pruning; it stops at the first event still needed (too young, or not delivered
        yet): what lies behind it waits for the next round.

        In use: the named sinks (configured in the caller's process), whatever their cursor
        says, and every other sink whose cursor moved since `before`. A cursor left alone
        for longer than the retention belongs to a sink that was removed (or has failed for
        that long): it no longer holds events back, or they would be kept forever.
        """
        floor = await self._prune_floor(before, sinks)
        start = [] if after is None else [rows.after(after, self._one_writer)]
        oldest = (
            select(events.c.xid, events.c.id, events.c.created_at)
            .where(*start)
            .order_by(events.c.xid, events.c.id)
            .limit(limit)
        )
        async with self.db.write() as conn:
            last: ev.Position | None = None
            for row in await conn.execute(oldest):
                if must(row.created_at) >= before or (
                    floor is not None and (row.xid, row.id) > (floor.xid, floor.id)
                ):
                    break
                last = ev.Position(row.xid, row.id)
            if last is None:
                return 0, after
            # Rows up to `last` committed since the read are past retention too, and below
            # a floor nothing commits late (a cursor never passes a running transaction).
            result = await conn.execute(
                delete(events).where(
                    *start, rows.up_to(last, self._one_writer), events.c.created_at < before
                )
            )
        return int(result.rowcount), last

    async def _prune_floor(self, before: datetime, sinks: Sequence[str]) -> ev.Position | None:
        """The lowest cursor of the sinks in use (None: no sink holds anything back)."""
        async with self.db.read() as conn:
            found = (await conn.execute(select(sink_cursors))).all()
        known = {row.sink: row for row in found}
        held = [ev.Position() for sink in sinks if sink not in known]  # nothing delivered yet
        for row in found:
            if row.sink in sinks or must(row.updated_at) >= before:
                held.append(ev.Position(row.xid, row.event_id))
        return min(held, key=lambda p: (p.xid, p.id), default=None)

    async def _close_wakeups(self) -> None:
        if self._watch is not None:
            await self._watch.close()


class SharedHorizon:
    """The horizon, asked once for every reader that is waiting for one.

    A reader needs a horizon asked after it asked (after the commit that woke it), not an
    older one. One query runs at a time; whoever asked while it ran shares the next one,
    so a hundred SSE streams woken by one commit cost two horizon queries, not a hundred
    (the query reads the server's lock table: docs/events.md)."""

    def __init__(
        self, ask: Callable[[], Awaitable[int | None]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self._ask = ask
        self._lock = asyncio.Lock()
        self._started = 0  # queries begun
        self._done = 0  # the number of the last one that answered
        self._value: int | None = None

    async def get(self) -> int | None:
        begun_before = self._started
        async with self._lock:
            if self._done > begun_before:  # begun after we asked, and answered
                return self._value
            self._started += 1
            number = self._started
            self._value = await self._ask()
            self._done = number
            return self._value
