"""PostgreSQL's sessions of their own: LISTEN, the leader's advisory lock, the events NOTIFY.

LISTEN and a session-level advisory lock belong to one server session for as long as they
last, so each holds a dedicated connection (not one of the pool's, which it would keep
from the hot path); a keepalive query notices when it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from conveyor.store.driver import Callback

log = logging.getLogger("conveyor.store.postgres")

JOBS_CHANNEL = "conveyor_jobs"
CANCEL_CHANNEL = "conveyor_cancel"
EVENTS_CHANNEL = "conveyor_events"
KEEPALIVE_SECONDS = 5.0
# Cross-process event wake-ups: at most one NOTIFY in flight per process, and at most one per
# this many seconds. Each NOTIFY is a statement and a commit that takes PostgreSQL's notify
# queue lock: one per claim or finish would double the hot path's statements and serialise
# its commits. At most 20 a second is lost in the noise (bench/notify_cost.py). The first
# change after a quiet spell is told at once; while busy, readers elsewhere wait at most this
# much longer.
EVENTS_NOTIFY_GAP = 0.05


class Notifier:
    """The debounced NOTIFY of `EVENTS_CHANNEL`, sent after commits from a task of its own."""

    def __init__(self, send: Callable[[], Awaitable[None]]) -> None:
        self._send_one = send
        self._due = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send(), name="pg-notify")

    async def _send(self) -> None:
        while self._due:
            self._due = False
            try:
                await self._send_one()
            except Exception as exc:  # readers still have their poll
                log.debug("event NOTIFY failed: %s", exc)
                return
            await asyncio.sleep(EVENTS_NOTIFY_GAP)

    async def close(self) -> None:
        """Send what is due first: a short-lived process (`conveyor enqueue`) must not take
        its wake-up with it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PgListener:
    """LISTEN on a dedicated connection; a keepalive query notices when it drops."""

    def __init__(self, dsn: str, channels: Mapping[str, Callback]) -> None:
        self._dsn = dsn
        self._channels = dict(channels)
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, ping: str) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        for channel in self._channels:
            await self._conn.add_listener(channel, self._heard)
        self._task = asyncio.create_task(self._keepalive(ping), name="pg-listener")

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._channels[channel](payload)

    async def _keepalive(self, ping: str) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # lands as the query completes, and this loop would then never end.
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                await self._conn.fetchval(ping)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)


def lock_key(name: str) -> int:
    digest = hashlib.sha256(f"conveyor:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLeadership:
    """A session-level advisory lock on a dedicated connection: held until that session ends.

    `statements` are the named try-lock, unlock and ping statements."""

    def __init__(self, dsn: str, name: str, statements: tuple[str, str, str]) -> None:
        self._dsn = dsn
        self._key = lock_key(name)
        self._try, self._unlock, self._ping = statements
        self._conn: Any = None
        self._held = False

    async def acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._held = False
                self._conn = await asyncpg.connect(self._dsn)
            if self._held:
                await self._conn.fetchval(self._ping)  # still connected means still held
            else:
                self._held = bool(await self._conn.fetchval(self._try, self._key))
        # InternalClientError: the server ends a terminated session's lock before its socket,
        # so a call can meet the FATAL message half-read; the lock is gone either way.
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as exc:
            log.warning("leadership check failed: %s", exc)
            await self._drop()
        return self._held

    async def release(self) -> None:
        if self._conn is not None and self._held:
            with contextlib.suppress(Exception):
                await self._conn.execute(self._unlock, self._key)
        await self._drop()

    async def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
        self._conn = None
