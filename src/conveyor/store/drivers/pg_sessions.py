"""PostgreSQL's sessions of their own: LISTEN, the leader's advisory lock, the events NOTIFY.

LISTEN and a session-level advisory lock belong to one server session for as long as they
last, so each holds a dedicated connection (not one of the pool's, which it would keep
from the hot path). Either may drop (a database outage): the listener reconnects on its own
with backoff; leadership is lost with its session and is tried for again on the next
`acquire` (another process may lead meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from conveyor.store.database import SessionPooling
from conveyor.store.driver import Callback

log = logging.getLogger("conveyor.store.postgres")

JOBS_CHANNEL = "conveyor_jobs"
CANCEL_CHANNEL = "conveyor_cancel"
EVENTS_CHANNEL = "conveyor_events"
KEEPALIVE_SECONDS = 5.0
CONNECT_TIMEOUT = 5.0  # seconds: a database that does not answer is away, not slow
# A dropped LISTEN connection is reopened after these many seconds, doubling up to the cap:
# once the database is back, wake-ups resume within RECONNECT_MAX (polling covers the gap).
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 2.0
# Cross-process event wake-ups: at most one NOTIFY in flight per process, and at most one per
# this many seconds. Each NOTIFY is a statement and a commit that takes PostgreSQL's notify
# queue lock: one per claim or finish would double the hot path's statements and serialise
# its commits. At most 20 a second is lost in the noise (bench/notify_cost.py). The first
# change after a quiet spell is told at once; while busy, readers elsewhere wait at most this
# much longer.
EVENTS_NOTIFY_GAP = 0.05


# asyncpg's named prepared statements meeting another client's on a shared server session
_SHARED_SESSION_ERRORS = (
    asyncpg.DuplicatePreparedStatementError,
    asyncpg.InvalidSQLStatementNameError,
)


async def own_session(conn: Any, dsn: str, session: Mapping[str, str], pid_sql: str) -> None:
    """Raise `SessionPooling` if `conn` does not keep one server session of its own.

    Cheap (one short connection, a few round trips, when a dedicated session opens) and never
    wrong when it raises: on a connection of its own the server pid never changes and no
    other client sees it. Behind a transaction-mode pooler a quiet pool hands the session
    `conn` just released to the next client, and a busy one hands `conn` other sessions, so
    one of the two shows; a pooler that happens to show neither passes (documented).
    """
    mine: set[int] = set()
    theirs: set[int] = set()
    try:
        # Named apart: it lives for a few round trips, beside the budgeted sessions.
        name = f"{session.get('application_name', 'conveyor')[:56]} check"
        other = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT, server_settings={**session, "application_name": name}
        )
        try:
            for _ in range(3):
                mine.add(await conn.fetchval(pid_sql))
                theirs.add(await other.fetchval(pid_sql))
        finally:
            with contextlib.suppress(Exception):
                await other.close(timeout=2)
    except _SHARED_SESSION_ERRORS as exc:
        raise SessionPooling(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if len(mine) > 1:
        raise SessionPooling(f"one connection was answered by server sessions {sorted(mine)}")
    if mine & theirs:
        raise SessionPooling(f"two connections were answered by server session {min(mine)}")


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
    """LISTEN on a dedicated connection that outlives database outages.

    A dropped connection (noticed at once through asyncpg's termination callback, or by the
    keepalive query within `KEEPALIVE_SECONDS`) is reopened with capped backoff; meanwhile its
    owner's poll covers the gap, and once back `on_reconnect` tells it to look at once for
    what the lost notifications would have said. It logs once when the database goes away and
    once when it is back. `alive` stays true while reconnecting: only a bug ends it.
    """

    def __init__(
        self,
        dsn: str,
        channels: Mapping[str, Callback],
        on_reconnect: Callable[[], None] | None = None,
        application_name: str = "conveyor listen",
        pid_sql: str | None = None,
    ) -> None:
        self._pid_sql = pid_sql  # given: check the session is ours on the first connect
        self._dsn = dsn
        self._session = {"application_name": application_name}
        self._channels = dict(channels)
        self._on_reconnect = on_reconnect
        self._conn: Any = None
        self._dropped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0  # how many times it came back (tests and logs)

    async def start(self, ping: str) -> None:
        """Connect now (a database away at start, or sessions shared by a pooler, is the
        caller's error), then keep at it."""
        self._conn = await self._open()
        if self._pid_sql is not None:
            try:
                await own_session(self._conn, self._dsn, self._session, self._pid_sql)
            except BaseException:
                await self._discard()
                raise
        self._task = asyncio.create_task(self._run(ping), name="pg-listener")

    async def _open(self) -> Any:
        conn = await asyncpg.connect(
            self._dsn, timeout=CONNECT_TIMEOUT, server_settings=self._session
        )
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._heard)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            raise
        self._dropped.clear()
        conn.add_termination_listener(self._lost)
        return conn

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._channels[channel](payload)

    def _lost(self, _conn: Any) -> None:
        self._dropped.set()

    async def _run(self, ping: str) -> None:
        while True:
            reason = await self._watch(ping)
            log.warning(
                "database unreachable: the LISTEN connection dropped (%s); "
                "reconnecting, polling meanwhile",
                reason,
            )
            await self._reconnect()
            self.reconnects += 1
            log.info("database reachable again: LISTEN reconnected")
            if self._on_reconnect is not None:
                self._on_reconnect()

    async def _watch(self, ping: str) -> str:
        """Until the connection drops; returns why."""
        try:
            while not self._dropped.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        await self._dropped.wait()
                if self._dropped.is_set():
                    break
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
                # that lands as the query completes, and this loop would then never end.
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    await self._conn.fetchval(ping)
            reason = "connection closed"
        except Exception as exc:  # any failed keepalive: the session is not to be trusted
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await self._discard()
        return reason

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                self._conn = await self._open()
                return
            except Exception as exc:
                log.debug("LISTEN reconnect failed, next in %.1fs: %s", delay, exc)
                delay = min(delay * 2, RECONNECT_MAX)

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._discard()


def lock_key(name: str) -> int:
    digest = hashlib.sha256(f"conveyor:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _ReadOnly(Exception):
    """The leadership session is on a server that takes no writes."""


class AdvisoryLeadership:
    """A session-level advisory lock on a dedicated connection: held until that session ends.

    `statements` are the named try-lock, unlock and ping statements. The lock is taken, and
    kept, only on a server that takes writes: a session that finds itself on a standby (a
    failover's address still leading there) is left, and the next `acquire` opens a new
    one wherever the address leads then."""

    def __init__(
        self,
        dsn: str,
        name: str,
        statements: tuple[str, str, str],
        application_name: str = "conveyor lead",
        pid_sql: str | None = None,
    ) -> None:
        self._pid_sql = pid_sql  # given: check each new session is ours before leading
        self._shared = False  # a pooler shares sessions: never lead (said once)
        self._dsn = dsn
        self._session = {"application_name": application_name}
        self._name = name
        self._key = lock_key(name)
        self._try, self._unlock, self._ping = statements
        self._conn: Any = None
        self._held = False
        self._away = False  # the last check failed: said once, not every tick

    async def acquire(self) -> bool:
        """Reconnects as needed: a lost session lost the lock, tried for again here."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._held = False
                self._conn = await asyncpg.connect(
                    self._dsn, timeout=CONNECT_TIMEOUT, server_settings=self._session
                )
                if self._pid_sql is not None:
                    await own_session(self._conn, self._dsn, self._session, self._pid_sql)
                    self._shared = False
            if self._held:
                # Still connected means still held; false: the server turned read-only.
                if not await self._conn.fetchval(self._ping):
                    raise _ReadOnly("the server no longer takes writes")
            else:
                got = await self._conn.fetchval(self._try, self._key)
                if got is None:
                    raise _ReadOnly("the server takes no writes (a standby?)")
                self._held = bool(got)
        except SessionPooling as exc:  # two leaders at once would follow: refuse to lead
            if not self._shared:
                log.error("not leading %s: %s", self._name, exc)
            self._shared = True
            await self._drop()
            return False
        # InternalClientError: the server ends a terminated session's lock before its socket,
        # so a call can meet the FATAL message half-read; the lock is gone either way.
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            _ReadOnly,
        ) as exc:
            if not self._away:
                log.warning("database unreachable: leadership lost until it is back: %s", exc)
            self._away = True
            await self._drop()
            return False
        if self._away:
            log.info("database reachable again: leadership session reopened")
            self._away = False
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
