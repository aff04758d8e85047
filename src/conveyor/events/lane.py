"""One sink's delivery loop: read after its cursor, deliver, save the cursor; repeat.

The cursor is saved only after the sink accepted the batch, so a crash in between delivers
that batch again (at least once) and never skips it. A failed delivery is retried, same
events first, with exponential backoff; other sinks have their own lanes and go on.

"Normally once" across processes: a lane delivers only while it holds its sink's lock
(`backend.leadership("relay:<sink>")`: a PostgreSQL advisory lock, or a SQLite lease row).
Other relay processes stand by for that sink and take over when the holder dies. The lock
is renewed by a side task, so a slow delivery does not lose it.

An idle lane does not poll: it waits for a wake-up after new events commit (store/wake.py),
with `poll_interval` as the safety net for a wake-up that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from conveyor.domain.events import Event, Position
from conveyor.events.config import RelayConfig
from conveyor.events.sinks import Sink
from conveyor.metrics import set_relay_lag
from conveyor.store.backend import QueueBackend
from conveyor.store.wake import Pace

log = logging.getLogger("conveyor.events.relay")


class Lane:
    def __init__(
        self,
        backend: QueueBackend,
        sink: Sink,
        config: RelayConfig,
        holder: str,
        stopping: asyncio.Event,
    ) -> None:
        self.sink = sink
        self._backend = backend
        self._config = config
        self._stopping = stopping
        self._lock = backend.leadership(f"relay:{sink.name}", holder, config.lease_ttl)
        self._held = False
        self._position: Position | None = None  # None: read it from the database first
        self._pace: Pace | None = None
        self._found = False  # the last read returned events
        self.failures = 0  # consecutive failed turns
        self.delivered = 0

    @property
    def held(self) -> bool:
        return self._held

    def wake(self) -> None:
        """End an idle wait now (the relay is stopping)."""
        if self._pace is not None:
            self._pace.interrupt()

    async def run(self) -> None:
        keeper = asyncio.create_task(self._keep_lock(), name=f"relay-lock:{self.sink.name}")
        try:
            async with self._backend.event_wakeups() as pace:
                self._pace = pace
                while not self._stopping.is_set():
                    delay = await self._turn()
                    if delay is None:
                        await pace.wait(self._config.poll_interval, found=self._found)
                    else:
                        await self._pause(delay)
        finally:
            self._pace = None
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await self._lock.release()

    async def _turn(self) -> float | None:
        """One delivery step; returns how long to wait before the next (None: until new
        events may have come)."""
        if not self._held:  # stand by; the lock keeper looks this often too
            return min(self._config.poll_interval, self._config.lease_ttl / 3)
        try:
            moved = await self._step()
        except Exception as exc:
            self.failures += 1
            delay = self.backoff()
            log.warning(
                "sink %s: delivery failed (%d in a row), retrying in %.1fs: %s: %s",
                self.sink.name, self.failures, delay, type(exc).__name__, exc,
            )  # fmt: skip
            return delay
        if self.failures:
            log.info("sink %s: delivering again after %d failures", self.sink.name, self.failures)
            self.failures = 0
        return 0.0 if moved >= self._config.batch else None

    def backoff(self) -> float:
        cfg = self._config
        return float(min(cfg.backoff_max, cfg.backoff_initial * 2 ** (self.failures - 1)))

    async def _step(self) -> int:
        if self._position is None:
            self._position = await self._backend.cursor(self.sink.name)
        events = await self._backend.read_events(self._position, self._config.batch)
        _report_lag(self.sink.name, events)
        self._found = bool(events)
        if not events:
            return 0
        async with asyncio.timeout(self._config.deliver_timeout):
            await self.sink.deliver(events)
        self._position = events[-1].position
        await self._backend.save_cursor(self.sink.name, self._position)
        self.delivered += len(events)
        return len(events)

    async def _keep_lock(self) -> None:
        while True:
            try:
                held = await self._lock.acquire()
            except Exception as exc:  # the database may be away; deliver nothing meanwhile
                log.warning("sink %s: cannot check the relay lock: %s", self.sink.name, exc)
                held = False
            if held != self._held:
                self._position = None  # whoever held it may have moved the cursor
                log.info(
                    "sink %s: %s", self.sink.name, "relaying" if held else "another relay has it"
                )
            self._held = held
            await asyncio.sleep(self._config.lease_ttl / 3)

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


def _report_lag(sink: str, pending: Sequence[Event]) -> None:
    """Lag as far as one read shows: exact below a full batch, at least `batch` above it."""
    age = (datetime.now(UTC) - pending[0].created_at).total_seconds() if pending else 0.0
    set_relay_lag(sink, len(pending), max(0.0, age))
