"""Wake-ups for event readers: "the outbox may have grown", without polling it.

Writers ring after a commit that wrote events (`QueueBackend._events_committed`): in this
process through a `Bell` (per database URL), across processes through the backend (a NOTIFY
on PostgreSQL; SQLite's `PRAGMA data_version` watch). Readers (the relay's lanes, every SSE
stream) share one `EventWatch` per backend, so a thousand SSE clients cost one LISTEN
connection, not a thousand.

A ring says "look", not "it is there": on PostgreSQL an event becomes readable only once every
older transaction has ended (store/events.py), so a reader that finds nothing looks again a
few times shortly after (`Pace`), and a slow poll stays as the safety net for a lost wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.store.backend import Listener

# After a ring, a reader that found nothing looks again after these many seconds (in turn)
# before it falls back to its slow poll: the events that rang may still be below the horizon.
RECHECKS = (0.005, 0.02, 0.05, 0.1, 0.25)
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
    async def pace(self) -> AsyncIterator[Pace]:
        """A reader's wake-ups for as long as it reads."""
        subscription = await self.subscribe()
        try:
            yield Pace(subscription)
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
    """When a reader looks next: at once after a ring, then again a few times shortly after
    (what rang may still be below PostgreSQL's horizon), else after its slow `poll`."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        self._rechecks: list[float] = []

    def interrupt(self) -> None:
        """End the current (or next) wait now: the reader is stopping."""
        self._subscription.rung.set()

    async def wait(self, poll: float) -> bool:
        """Wait before the next read. True when a ring ended the wait."""
        rung = self._subscription.rung
        polling = not self._rechecks
        delay = poll if polling else self._rechecks.pop(0)
        if not rung.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await rung.wait()
        if rung.is_set():
            rung.clear()
            self._rechecks = list(RECHECKS)
            return True
        if polling:
            await self._subscription.watch.revive()
        return False
