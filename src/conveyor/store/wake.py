"""Wake-ups for event readers: "the outbox may have grown", without polling it.

Writers ring after a commit that wrote events (`StoreBase._events_committed`, store/base.py):
in this process through a `Bell` (per database URL), across processes through the driver (a
NOTIFY on PostgreSQL; SQLite's `PRAGMA data_version` watch). Readers (the relay's lanes, every SSE
stream) share one `EventWatch` per backend, so a thousand SSE clients cost one LISTEN
connection, not a thousand.

A ring says "look", not "it is there": on PostgreSQL an event becomes readable only once every
older transaction has ended (store/events.py), so a reader that finds nothing looks again a
few times shortly after (`Pace`), and a slow poll stays as the safety net for a lost wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from conveyor.store.driver import Listener

# After a ring, a reader that found nothing looks again after these many seconds (in turn)
# before it falls back to its slow poll: the events that rang may still be below the horizon.
RECHECKS = (0.005, 0.02, 0.05, 0.1, 0.25)
CHASE_EVERY = 1.0  # and then this often, until a read finds something
OPEN_TIMEOUT = 5.0  # seconds a reader may wait for the listener to open before it polls


class Bell:
    """In-process subscribers to "this process committed events"."""

    def __init__(self) -> None:
        self._callbacks: set[Callable[[], None]] = set()

    def ring(self) -> None:
        for callback in list(self._callbacks):
            callback()

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.add(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        self._callbacks.discard(callback)


bells: defaultdict[str, Bell] = defaultdict(Bell)


class EventWatch:
    """One wake-up source shared by every reader of one backend in this process.

    The cross-process listener opens with the first subscriber and closes with the last;
    if it cannot open (or dies), readers still have the in-process bell and their poll.
    """

    def __init__(
        self, bell: Bell, open_listener: Callable[[Callable[[], None]], Awaitable[Listener]]
    ) -> None:
        self._bell = bell
        self._open = open_listener
        self._subscribers: set[Subscription] = set()
        self._listener: Listener | None = None
        self._opening = asyncio.Lock()

    def ring(self) -> None:
        for subscription in list(self._subscribers):
            subscription.rung.set()

    @asynccontextmanager
    async def pace(self, min_gap: float = 0.0) -> AsyncIterator[Pace]:
        """A reader's wake-ups for as long as it reads (`Pace`)."""
        subscription = await self.subscribe()
        try:
            yield Pace(subscription, min_gap)
        finally:
            await self.unsubscribe(subscription)

    async def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        async with self._opening:
            if not self._subscribers:
                self._bell.add(self.ring)
            self._subscribers.add(subscription)
            await self._ensure_listener()
        return subscription

    async def _ensure_listener(self) -> None:
        if self._listener is not None and self._listener.alive():
            return
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        with contextlib.suppress(Exception):  # the database may be away: poll meanwhile
            self._listener = await asyncio.wait_for(self._open(self.ring), OPEN_TIMEOUT)

    async def revive(self) -> None:
        """Reopen a listener that died (readers call it on their slow poll)."""
        if self._subscribers and (self._listener is None or not self._listener.alive()):
            async with self._opening:
                await self._ensure_listener()

    async def unsubscribe(self, subscription: Subscription) -> None:
        async with self._opening:
            self._subscribers.discard(subscription)
            if self._subscribers:
                return
            self._bell.discard(self.ring)
            listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    async def close(self) -> None:
        self._subscribers.clear()
        self._bell.discard(self.ring)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()


class Subscription:
    """One reader's place in an `EventWatch`: set when a ring came since it last looked."""

    def __init__(self, watch: EventWatch) -> None:
        self.watch = watch
        self.rung = asyncio.Event()


class Pace:
    """When a reader looks next: at once after a ring (but not more often than `min_gap`),
    then, while its reads find nothing, again shortly after and then every second (what rang
    may still be below PostgreSQL's horizon); else after its slow `poll`."""

    def __init__(self, subscription: Subscription, min_gap: float = 0.0) -> None:
        self._subscription = subscription
        self._min_gap = min_gap
        self._rechecks: list[float] = []
        self._chasing = False  # a ring whose events no read has found yet
        self._last = 0.0

    def interrupt(self) -> None:
        """End the current (or next) wait now: the reader is stopping."""
        self._subscription.rung.set()

    async def wait(self, poll: float, *, found: bool = False) -> bool:
        """Wait before the next read; `found`: the last read returned events. True when a
        ring ended the wait."""
        if found:
            self._chasing = False
            self._rechecks.clear()
        delay = self._next_delay(poll)
        rung = self._subscription.rung
        if not rung.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await rung.wait()
        woken = rung.is_set()
        if woken:
            rung.clear()
            self._chasing, self._rechecks = True, list(RECHECKS)
            if (gap := self._last + self._min_gap - time.monotonic()) > 0:
                await asyncio.sleep(gap)  # rings coalesce meanwhile
        elif delay == poll:
            await self._subscription.watch.revive()
        self._last = time.monotonic()
        return woken

    def _next_delay(self, poll: float) -> float:
        if self._rechecks:
            return min(poll, self._rechecks.pop(0))
        return min(poll, CHASE_EVERY) if self._chasing else poll
