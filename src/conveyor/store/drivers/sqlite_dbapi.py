"""SQLite's DB-API adapter: one trip to the connection's thread per statement, and one
per transaction for the hot paths (`in_one_trip`).

SQLite runs in-process, but aiosqlite runs each call on a thread of its own, and every
trip there and back is two thread switches and a wake-up of the event loop (about 90 us
of a slow machine's time, far more than a small statement's own work). SQLAlchemy's
aiosqlite adapter makes four trips per statement (open a cursor, execute, fetch, close),
one to BEGIN and one for the pool's ROLLBACK of every connection given back: a single
submit made 16 trips and took 4.1 ms, of which its statements and its durable commit
took about 0.8 (docs/design.md "Idle latency").

This adapter keeps SQLAlchemy's (the dialect, the types, the pool, the events) and changes
only how a statement reaches the thread: one trip that opens a cursor, executes, fetches
every row and closes. The transaction's BEGIN goes with its first statement, and a
rollback of a connection that has no transaction open (the pool's, on every check-in of
a committed one) makes no trip. The rows come back whole, as SQLAlchemy's adapter already
fetched them (it buffers them too); server-side cursors (`stream`) keep its adapter's.

It is built on SQLAlchemy's and aiosqlite's adapter classes, so pyproject.toml pins the
minor versions it was written against; tests/store/test_sqlite_dbapi.py counts the trips.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, Protocol, TypeVar

import aiosqlite
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "conveyor"  # the URL's driver name: sqlite+conveyor://
T = TypeVar("T")

Outcome = tuple[Any, list[Any], int, int | None]  # description, rows, rowcount, lastrowid


def _statement(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """On the connection's thread: the statement, its rows and its counts, the cursor
    closed."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement is one trip to the thread; its rows are kept here."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: OneTripConnection) -> None:
        # No aiosqlite cursor: each statement opens and closes its own on the thread.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]  # DB-API: None before an insert

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        """Every row is fetched with the statement: nothing to size."""

    async def _async_soft_close(self) -> None:
        """Nothing open on the thread: the rows are here already."""

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        return self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        return self._trip(operation, seq_of_parameters, many=True)

    def _trip(self, operation: str, parameters: Any, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneTripConnection)
        try:
            outcome: Outcome = await_(adapt.send(_statement, operation, parameters, many))
        except Exception as error:
            adapt._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    def nextset(self) -> None:
        """One statement, one result."""

    def setinputsizes(self, *inputsizes: Any) -> None:
        """sqlite3 ignores input sizes."""


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's connection, with one-trip cursors and a BEGIN that waits for the first
    statement (`begin`)."""

    __slots__ = ("done", "pending_begin", "sent")

    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass; mypy reads it as not

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.pending_begin: str | None = None
        # Trips sent (counted on the event loop's thread) and ended (on the connection's):
        # unequal while one runs, even when its caller was cancelled and stopped waiting.
        self.sent = 0
        self.done = 0

    def begin(self, statement: str) -> None:
        """Open the transaction with `statement` (BEGIN IMMEDIATE or BEGIN) on the same trip
        as its first statement. A BEGIN IMMEDIATE that waits for another process's write
        lock waits there, and its error is that statement's."""
        self.pending_begin = statement

    def send(self, work: Callable[..., T], *args: Any) -> Awaitable[T]:
        """One trip: `work(sqlite3 connection, *args)` on the connection's thread, after the
        pending BEGIN if there is one."""
        begin, self.pending_begin = self.pending_begin, None
        self.sent += 1
        return self._connection._execute(_tracked, self, begin, work, args)  # type: ignore[no-any-return]

    def _open(self) -> bool:
        """Whether a rollback or a commit has anything to end: a transaction open on this
        connection, or a trip still running (cancelled part-way: what it opens is ended by
        the trip queued after it, never skipped). sqlite3's `in_transaction` asks the C
        library's autocommit flag, which nothing changes while no trip runs."""
        raw = self._connection._connection
        running = self.sent != self.done
        return raw is not None and (running or bool(raw.in_transaction))

    def rollback(self) -> None:
        self.pending_begin = None
        if self._open():
            self._end(sqlite3.Connection.rollback)

    def commit(self) -> None:
        self.pending_begin = None
        if self._open():
            self._end(sqlite3.Connection.commit)

    def _end(self, how: Callable[[sqlite3.Connection], None]) -> None:
        try:
            await_(self.send(how))
        except Exception as error:
            self._handle_exception(error)


def _tracked(
    adapt: OneTripConnection, begin: str | None, work: Callable[..., T], args: tuple[Any, ...]
) -> T:
    """A trip, on the connection's thread; counted as ended however it ends."""
    try:
        conn: sqlite3.Connection = adapt._connection._conn
        if begin is not None:
            conn.execute(begin)
        return work(conn, *args)
    finally:
        adapt.done += 1


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


class OneTripDialect(SQLiteDialect_aiosqlite):
    """SQLAlchemy's aiosqlite dialect with the one-trip adapter."""

    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneTripDBAPI:
        return OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


def deferred_begin(dbapi_connection: Any, statement: str) -> bool:
    """Hand `statement` to the connection to send with its first statement; False for a
    connection of another adapter (it must be executed now)."""
    if isinstance(dbapi_connection, OneTripConnection):
        dbapi_connection.begin(statement)
        return True
    return False


class Trips(Protocol):
    """A library caller's sync connection to the file, as `in_one_trip` runs work on it
    (store/foreign.py): at once, in the caller's transaction."""

    async def one_trip(self, work: Callable[[sqlite3.Connection], T]) -> T: ...


async def in_one_trip(
    conn: AsyncConnection | Trips, work: Callable[[sqlite3.Connection], T], *, end: bool = False
) -> T:
    """`work` run on the thread of `conn`'s connection, in `conn`'s transaction, in one trip:
    for a hot path's several statements (a claim: candidates, start, events), each of which
    costs a trip and SQLAlchemy's execution on its own. `work` gets the sqlite3 connection
    and sends the driver's named SQL itself (parameters as stored: times as `sqlite_time`
    text, JSON as text); its sqlite3 errors reach the caller as SQLAlchemy's, as a
    statement's would (IntegrityError, OperationalError: store/database.py maps them).
    A caller's own async connection (SQLAlchemy's aiosqlite, store/foreign.py) runs it on
    its aiosqlite thread the same way, in the transaction its statements would begin.

    `end` (a transaction of Conveyor's own, whose work this is all of): the same trip
    commits it, or rolls it back if `work` fails, and the caller's commit has nothing left
    to do. The write lock is then never held while the event loop runs something else: a
    handler that blocks the loop (docs/design.md "A blocked event loop") would otherwise
    keep every other process's writes waiting behind a transaction it cannot finish."""
    if not isinstance(conn, AsyncConnection):
        return await conn.one_trip(work)
    if not conn.in_transaction():
        # As a statement would (autobegin): SQLAlchemy must know of the transaction its
        # owner commits, or the commit does nothing and the rows go at its close.
        await conn.begin()
    pooled = await conn.get_raw_connection()
    adapt, aio = pooled.dbapi_connection, pooled.driver_connection
    try:
        if isinstance(adapt, OneTripConnection):
            return await (adapt.send(_ended, work) if end else adapt.send(work))
        if end:
            raise TypeError("only a transaction of Conveyor's own SQLite engine is ended so")
        if not isinstance(aio, aiosqlite.Connection):
            raise TypeError(f"not a connection to a SQLite file through aiosqlite: {aio!r}")
        return await aio._execute(work, aio._conn)  # type: ignore[no-untyped-call,no-any-return]
    except sqlite3.Error as error:
        raise DBAPIError.instance(
            getattr(work, "__name__", repr(work)), None, error, sqlite3.Error
        ) from error


def _ended(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work`, then its transaction committed; rolled back if either fails."""
    try:
        done = work(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return done


def rows(cursor: sqlite3.Cursor) -> list[Any]:
    """A cursor's rows, each a named tuple of its columns (by the statement's names)."""
    shape = _shape(tuple(d[0] for d in cursor.description))
    return [shape._make(row) for row in cursor.fetchall()]


@cache
def _shape(names: tuple[str, ...]) -> Any:
    return collections.namedtuple("Row", names)


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripDialect")
