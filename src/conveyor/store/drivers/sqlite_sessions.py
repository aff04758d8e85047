"""SQLite's wake-ups and leadership: an in-process bus, a data_version watch, a lease row."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import TextClause, select

from conveyor.domain.clock import utcnow
from conveyor.store.database import Database
from conveyor.store.driver import Callback
from conveyor.store.drivers.processes import ProcessId, is_gone, this_process
from conveyor.store.tables import leader_leases

# How often an idle process looks for commits made by other processes. The look is one
# `PRAGMA data_version` on the event loop's own thread (about 3 us of CPU in WAL mode: it
# reads the shared-memory index, takes no lock that waits), so it can be frequent: a
# commit elsewhere is seen after 1 ms on average. Through aiosqlite's thread every 20 ms it
# was 10 ms on average, most of SQLite's idle latency (8.8 ms p50 from submit to start).
CROSS_PROCESS_POLL = 0.002


class LocalBus:
    """In-process wake-ups, per database file: enqueue and cancel reach this process at once."""

    def __init__(self) -> None:
        self.jobs: set[Callback] = set()
        self.cancels: set[Callback] = set()

    def emit(self, targets: set[Callback], value: str) -> None:
        for callback in list(targets):
            callback(value)


_buses: dict[str, LocalBus] = defaultdict(LocalBus)


def bus_of(url: str) -> LocalBus:
    return _buses[url]


class SqliteListener:
    """In-process callbacks, plus a watch on PRAGMA data_version for other processes' commits."""

    def __init__(self, bus: LocalBus, path: str, on_jobs: Callback, on_cancel: Callback) -> None:
        self._bus = bus
        self._path = path
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None

    async def start(self, data_version: str) -> None:
        self._bus.jobs.add(self._on_jobs)
        self._bus.cancels.add(self._on_cancel)
        self._task = asyncio.create_task(self._watch(data_version), name="sqlite-data-version")

    async def _watch(self, data_version: str) -> None:
        # Its own autocommit connection: inside a transaction data_version would be frozen.
        # timeout=0: a look that would have to wait (a lock in a non-WAL file) fails at once
        # and counts as a change; the loop never blocks on it.
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        try:
            last = None
            while True:
                try:
                    row = conn.execute(data_version).fetchone()
                except sqlite3.OperationalError:
                    row = None
                version = row[0] if row else None
                if last is not None and version != last:
                    self._on_jobs("*")
                last = version
                await asyncio.sleep(CROSS_PROCESS_POLL)
        finally:
            conn.close()

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._bus.jobs.discard(self._on_jobs)
        self._bus.cancels.discard(self._on_cancel)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LeaseLeadership:
    """Leadership as a row with an expiry, renewed by its holder: SQLite has no advisory locks.

    The row also names the holder's process. A contender that cannot take the row reads it,
    and when the holder is a process of this host that is gone (killed, crashed: see
    processes.py) takes it at once instead of waiting out the expiry; a live holder, or one
    on another host, keeps it until it expires. `statements` are the named take-or-renew and
    give-up statements."""

    def __init__(
        self,
        db: Database,
        statements: tuple[TextClause, TextClause],
        name: str,
        holder: str,
        ttl: float,
    ) -> None:
        self._db, self._name, self._holder, self._ttl = db, name, holder, ttl
        self._lead, self._unlead = statements
        self._me = this_process()

    async def acquire(self) -> bool:
        if await self._try(dead=None):
            return True
        dead = await self._dead_holder()
        return dead is not None and await self._try(dead=dead)

    async def _try(self, dead: str | None) -> bool:
        now = utcnow()
        params = {
            "name": self._name,
            "holder": self._holder,
            "now": now,
            "expires": now + timedelta(seconds=self._ttl),
            "host": self._me.host,
            "pid": self._me.pid,
            "pid_started": self._me.started,
            "dead": dead,
        }
        async with self._db.write() as conn:
            return (await conn.execute(self._lead, params)).one_or_none() is not None

    async def _dead_holder(self) -> str | None:
        """The current holder, when its process is certainly gone; None otherwise."""
        query = select(
            leader_leases.c.holder,
            leader_leases.c.host,
            leader_leases.c.pid,
            leader_leases.c.pid_started,
        ).where(leader_leases.c.name == self._name)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None or row.host is None or row.pid is None or row.holder == self._holder:
            return None
        gone = is_gone(ProcessId(row.host, row.pid, row.pid_started))
        return str(row.holder) if gone else None

    async def release(self) -> None:
        async with self._db.write() as conn:
            await conn.execute(self._unlead, {"name": self._name, "holder": self._holder})
