"""What every part of the queue store shares: the database, its driver, and the event bell."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update

from conveyor.store import events as outbox
from conveyor.store.database import Database, after_commit
from conveyor.store.driver import Driver
from conveyor.store.tables import jobs
from conveyor.store.transaction import Transaction
from conveyor.store.wake import EventWatch, bells


class StoreBase:
    """The state the per-concern parts (jobs, claims, maintenance, ...) work on."""

    def __init__(self, db: Database, driver: Driver) -> None:
        self.db = db
        self.driver = driver
        self.dialect = driver.dialect
        self._bell = bells[db.url]
        self._watch: EventWatch | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction callers may enqueue into alongside their own statements."""
        async with self.db.write() as conn:
            # Whatever it writes first, what it enqueues is keyed by its transaction id.
            await self.driver.lock_events(conn)
            yield Transaction(conn)

    def _use(self, tx: Transaction | None) -> AbstractAsyncContextManager[AsyncConnection]:
        if tx is not None:
            return _borrowed(tx.connection)
        return self.db.write()

    def _update_locked(self, fence: Sequence[ColumnElement[bool]]) -> Update:
        """An UPDATE of the jobs `fence` picks, their rows locked in the one order."""
        return update(jobs).where(self.driver.in_lock_order(fence), *fence)

    async def _log(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Write events in `conn`'s transaction; readers are rung once it commits. The
        transaction is marked as writing events first: their key comes after (store/
        outbox.py's horizon)."""
        if not rows:
            return
        await self.driver.lock_events(conn)
        await outbox.record(conn, self.driver.xid(), rows)
        after_commit(conn, self._events_committed)

    def _events_committed(self, *, others: bool = True) -> None:
        """After a commit that wrote events: wake this process's readers (store/wake.py)
        and, with `others`, other processes' too."""
        self._bell.ring()
        if others:
            self.driver.tell_other_processes()


@asynccontextmanager
async def _borrowed(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    yield conn
