"""Enqueue on a connection the caller holds: their transaction, not one of ours.

The library door (conveyor/library/enqueue.py) enqueues inside the user's own transaction,
on whatever connection their application holds: asyncpg, psycopg 3 (sync or async), a
SQLAlchemy connection or session (sync or async), or a Django database alias. Each runs
the PostgreSQL driver's own statements (`insert_with`: the named SQL and the rows the
server writes); only how a statement is sent differs, and the one translation of the
parameter style ($n to psycopg's and Django's %(pN)s) is `pyformat`. A SQLAlchemy
connection to Conveyor's SQLite file runs the SQLite driver's statements (its `insert_with`),
and so does the caller's own `sqlite3` connection to it (`_sqlite3`: SQLAlchemy runs them on
it, and commit, rollback and close stay the caller's).

A sync caller runs the same coroutine as an async one: its statements never suspend (each
is a blocking call), so the coroutine completes at its first step (`run_sync`).

Rolled back, the caller's transaction takes the jobs and their events with it; committed,
the jobs' NOTIFY (in `enqueue`) wakes idle workers. A duplicate (idempotency or unique key)
inserts nothing and aborts nothing: ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import weakref
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, create_engine, event, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from conveyor.domain import events as ev
from conveyor.domain.jobs import Enqueued, NewJob
from conveyor.errors import ConveyorError, InvalidInput
from conveyor.store.driver import StoredWorkflow
from conveyor.store.drivers.pg_sessions import EVENTS_CHANNEL
from conveyor.store.drivers.postgres import SQL, Run, insert_with, insert_workflow_with
from conveyor.store.drivers.sqlite import insert_with as sqlite_insert
from conveyor.store.drivers.sqlite import insert_workflow_with as sqlite_workflow
from conveyor.store.drivers.sqlite_sessions import WakeSockets
from conveyor.store.flow import count_waiting
from conveyor.store.jobs import InsertRows
from conveyor.store.tables import users
from conveyor.store.workflows import WorkflowRows

T = TypeVar("T")
_DOLLAR = re.compile(r"\$(\d+)")


class UnsupportedConnection(InvalidInput):
    """Conveyor cannot enqueue on this kind of connection."""

    code = "unsupported_connection"


@functools.cache
def _pyformat_sql(sql: str) -> str:
    return _DOLLAR.sub(lambda m: f"%(p{m.group(1)})s", sql.replace("%", "%%"))


def pyformat(sql: str, args: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """A named statement ($n, asyncpg's style) in the style of psycopg and Django's cursors,
    with its arguments by name (a parameter used twice is sent once)."""
    return _pyformat_sql(sql), {f"p{i}": value for i, value in enumerate(args, start=1)}


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (its awaits are blocking calls)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a sync connection's enqueue waited for something")  # pragma: no cover


class Foreign:
    """A caller's connection, in its open transaction, as the store's statements need it:
    `run` sends the PostgreSQL driver's named statements ($n), `core` runs Core statements
    (an AsyncConnection, or what acts as one). Made by `opened` / `aopened`."""

    def __init__(self, dialect: str, core: Any, run: Run | None = None, schema: str = "") -> None:
        self.dialect = dialect
        self._core = cast(AsyncConnection, core)
        self._run = run
        self._schema = schema

    async def enqueue(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Insert `new_jobs` with their events; the duplicates' stored jobs answered."""
        if self._run is None:
            return await _on_sqlite(self._core, new_jobs)
        return await self._in_schema(_enqueue_statements(self._run, new_jobs))

    async def insert_workflow(self, rows: WorkflowRows) -> StoredWorkflow | None:
        """Insert a workflow (the rows WorkflowService's transaction inserts, by the same
        statements: the drivers' `insert_workflow_with`); the stored one its idempotency
        key names instead, nothing inserted (ON CONFLICT DO NOTHING: nothing aborted)."""
        if self._run is None:
            found, _ = await sqlite_workflow(self._core, rows, ev.CREATED)
            return found
        return await self._in_schema(insert_workflow_with(self._run, rows, ev.CREATED))

    async def _in_schema(self, statements: Coroutine[Any, Any, T]) -> T:
        """`statements` run with Conveyor's schema (if it has one) first on the search_path."""
        if not self._schema or self._run is None:
            return await statements
        ((before, _),) = await self._run(SQL["schema_enter"], (self._schema,))
        try:
            done = await statements
        except ConveyorError:  # a refusal: the caller's transaction goes on, as it was
            await self._run(SQL["schema_leave"], (before,))
            raise
        # Not on a database error: the transaction is then aborted, and its end restores it.
        await self._run(SQL["schema_leave"], (before,))
        return done

    async def waiting_counts(self, caps: Mapping[str, int]) -> dict[str, int]:
        """The queued quota's count (store/flow.py), in the caller's transaction."""
        return await count_waiting(self._core, self.dialect, caps)

    async def owner_caps(self, owner_id: str) -> tuple[int | None, int | None]:
        """The owner's own queued and running caps (None: the settings' defaults)."""
        query = select(users.c.max_queued, users.c.max_running).where(users.c.id == owner_id)
        found = (await self._core.execute(query)).all()
        return (found[0][0], found[0][1]) if found else (None, None)


async def _on_sqlite(conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
    """The SQLite driver's enqueue statements (Core) in `conn`'s transaction. Workers in
    other processes see the commit (they watch the file's data_version)."""
    rows = InsertRows.of(new_jobs)
    done, _ = await sqlite_insert(conn, rows.rows, rows.callbacks, ev.CREATED, rows.limits)
    return rows.answers(new_jobs, done)


async def _enqueue_statements(run: Run, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
    rows = InsertRows.of(new_jobs)
    # A key found reused (or a unique job gone meanwhile) refuses the whole batch after its
    # other jobs were inserted: those are taken back to a savepoint, only when a batch can
    # be refused so (a single job inserted nothing; a batch without keys is never refused).
    guarded = len(new_jobs) > 1 and any(j.idempotency_key or j.unique_key for j in new_jobs)
    if guarded:
        await run(SQL["caller_savepoint"], ())
    done = await insert_with(run, rows.rows, rows.callbacks, ev.CREATED, True, rows.limits)
    try:
        answers = rows.answers(new_jobs, done)
    except ConveyorError:
        if guarded:
            await run(SQL["caller_savepoint_undo"], ())
            await run(SQL["caller_savepoint_done"], ())
        raise
    if guarded:
        await run(SQL["caller_savepoint_done"], ())
    # The caller's transaction may have written already (its id assigned before the
    # statement took the events lock): its events are keyed again as the Core writers key
    # theirs, after the lock (rekey_events).
    if done.ids:
        await run(SQL["rekey_events"], (sorted(done.ids), ev.CREATED, EVENTS_CHANNEL))
    return answers


class _SyncCore:
    """A sync SQLAlchemy connection as the async one the Core statements expect; its
    `execute` never suspends (`run_sync` drives the statements)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)

    async def one_trip(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """The SQLite driver's raw statements on the sqlite3 connection underneath (the
        caller's, borrowed: `_sqlite3`), in its transaction (drivers/sqlite_dbapi.py), begun
        as a statement would begin it (autobegin), for the caller's commit to end it."""
        if not self._conn.in_transaction():
            self._conn.begin()
        return work(cast(sqlite3.Connection, self._conn.connection.driver_connection))


class _CoreOnRun:
    """Core statements sent through `run` (asyncpg, psycopg, Django): compiled as for
    asyncpg ($n, the named statements' style), with Conveyor's schema named in them. Their
    parameters go as given, without SQLAlchemy's bind processing: statements with plain
    values only (ids, counts), one row at a time (what the quota's reads are)."""

    _DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

    def __init__(self, run: Run, schema: str) -> None:
        self._run = run
        self._translate = {None: schema} if schema else None

    async def execute(self, statement: Any, parameters: Any = None) -> _Rows:
        compiled = statement.compile(
            dialect=self._DIALECT,
            schema_translate_map=self._translate,
            render_schema_translate=self._translate is not None,
            compile_kwargs={"render_postcompile": True},
        )
        values = compiled.construct_params()
        rows = await self._run(str(compiled), [values[n] for n in compiled.positiontup or ()])
        keys = (
            list(statement.selected_columns.keys())
            if hasattr(statement, "selected_columns")
            else []
        )
        return _Rows(keys, rows)


@functools.cache
def _row_type(keys: tuple[str, ...]) -> Any:
    return namedtuple("_Row", keys, rename=True)


class _Rows(list[Any]):
    """A result's rows with their columns by name, as SQLAlchemy's rows have them."""

    def __init__(self, keys: Sequence[str], rows: Sequence[Any]) -> None:
        named = _row_type(tuple(keys)) if keys else None
        super().__init__(named(*row) if named else tuple(row) for row in rows)

    def all(self) -> list[Any]:
        return list(self)


# ---- sync connections ------------------------------------------------------------------------
@contextmanager
def opened(conn: object, schema: str = "") -> Iterator[Foreign]:
    """The transaction `conn` holds, for the store's statements: a psycopg `Connection`, a
    SQLAlchemy `Connection` or `Session` (PostgreSQL, or Conveyor's SQLite file), a
    `sqlite3.Connection` (Conveyor's SQLite file), or a Django database alias (a str).
    Drive its coroutines with `run_sync`."""
    if isinstance(conn, str):
        with _django(conn, schema) as foreign:
            yield foreign
        return
    if isinstance(conn, Session):
        conn = conn.connection()
    if isinstance(conn, Connection):
        yield _sqlalchemy(conn, _SyncCore, _sqlalchemy_sync, schema)
        return
    if isinstance(conn, sqlite3.Connection):
        with _sqlite3(conn) as borrowed:
            yield Foreign("sqlite", _SyncCore(borrowed))
        return
    if _module(conn) == "psycopg" and not _is_async_psycopg(conn):
        run = _psycopg_sync(conn)
        with _psycopg_transaction(conn):
            yield Foreign("postgresql", _CoreOnRun(run, schema), run, schema)
        return
    raise _unsupported(conn, "enqueue")


@contextmanager
def _sqlite3(conn: sqlite3.Connection) -> Iterator[Connection]:
    """The caller's sqlite3 connection as a SQLAlchemy one for the SQLite driver's Core
    statements (its dialect compiles them and applies their bind processors), borrowed:
    the statements run in the caller's transaction (Python's sqlite3 opens one before the
    first INSERT, unless isolation_level is None: then the caller's BEGIN holds them; docs/
    library.md), and nothing here commits, rolls back or closes it."""
    engine = create_engine("sqlite://", creator=lambda: _Borrowed(conn), poolclass=NullPool)
    try:
        with engine.connect() as borrowed:
            yield borrowed
    finally:
        engine.dispose()


class _Borrowed:
    """A sqlite3 connection lent to SQLAlchemy: its commit, rollback and close (which the
    pool and the Connection call on return) do nothing, and SQLAlchemy's SQL functions
    are not added to it; everything else is the caller's connection's."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None

    def close(self) -> None:
        return None

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextmanager
def _django(alias: str, schema: str) -> Iterator[Foreign]:
    """On a Django database alias: in its `atomic()` block, or in one of its own (no
    savepoint: nothing here fails half-way that a savepoint would undo)."""
    from django.db import connections, transaction

    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise UnsupportedConnection(
            f"Django database {alias!r} is {connection.vendor}; Conveyor enqueues on PostgreSQL"
        )

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        with connection.cursor() as cursor:
            cursor.execute(*pyformat(sql, args))
            return cursor.fetchall() if cursor.description else []

    refused: ConveyorError | None = None
    with transaction.atomic(using=alias, savepoint=False):
        try:
            yield Foreign("postgresql", _CoreOnRun(run, schema), run, schema)
        except ConveyorError as exc:
            # A refusal leaves nothing of ours written (above): raised once the block is
            # left, so Django does not mark the caller's `atomic()` for rollback.
            refused = exc
    if refused is not None:
        raise refused


def _sqlalchemy(
    conn: Any, core: Callable[[Any], Any], send: Callable[[Any], Run], schema: str
) -> Foreign:
    """A SQLAlchemy connection (sync or async): Core statements on it (naming Conveyor's
    schema), named ones through its DBAPI cursor; SQLite's enqueue is all Core."""
    if conn.dialect.name == "sqlite":
        _ring_on_commit(conn.sync_connection if isinstance(conn, AsyncConnection) else conn)
        return Foreign("sqlite", core(conn))
    run = send(conn)
    if schema:
        conn = conn.execution_options(schema_translate_map={None: schema})
    return Foreign("postgresql", core(conn), run, schema)


# Connections whose caller enqueued on Conveyor's SQLite file in the transaction under way
# (the file's path), and those already listened to: `_ring_on_commit`.
_to_ring: weakref.WeakKeyDictionary[Connection, str] = weakref.WeakKeyDictionary()
_listened: weakref.WeakSet[Connection] = weakref.WeakSet()


def _ring_on_commit(conn: Connection | None) -> None:
    """Once the caller commits, ring the listeners of Conveyor's file, this process's too:
    Conveyor's own commits ring them (drivers/sqlite_sessions.py `WakeSockets`), a caller's
    would otherwise be seen at the next `data_version` look (every 50 ms). Once per
    transaction however many enqueues it holds; a rollback rings nothing. A plain `sqlite3`
    connection has no commit hook: its jobs wait for that look (docs/library.md)."""
    path = conn.engine.url.database if conn is not None else None
    if conn is None or not path:
        return
    _to_ring[conn] = path
    if conn not in _listened:  # once per Connection, whatever its transactions
        _listened.add(conn)
        event.listen(conn, "commit", _committed)
        event.listen(conn, "rollback", _rolled_back)


def _committed(conn: Connection) -> None:
    if (path := _to_ring.pop(conn, None)) is not None:
        wake = WakeSockets(path)
        with contextlib.suppress(OSError):
            wake.ring(mine_too=True)
        wake.close()


def _rolled_back(conn: Connection) -> None:
    _to_ring.pop(conn, None)


def _sqlalchemy_sync(conn: Connection) -> Run:
    paramstyle = _paramstyle(conn.dialect)

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        result = conn.exec_driver_sql(*_sent(paramstyle, sql, args))
        return result.all() if result.returns_rows else []

    return run


def _psycopg_sync(conn: Any) -> Run:
    from psycopg.rows import tuple_row

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        cursor = conn.cursor(row_factory=tuple_row)
        cursor.execute(*pyformat(sql, args))
        return cursor.fetchall() if cursor.description else []

    return run


@contextmanager
def _psycopg_transaction(conn: Any) -> Iterator[None]:
    """An autocommit psycopg connection outside a transaction gets one for the enqueue (its
    statements stay together); otherwise the caller's transaction holds them."""
    from psycopg.pq import TransactionStatus

    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            yield
    else:
        yield


# ---- async connections -----------------------------------------------------------------------
@asynccontextmanager
async def aopened(conn: object, schema: str = "") -> AsyncIterator[Foreign]:
    """`opened` for async connections: an asyncpg connection, a psycopg `AsyncConnection`,
    or a SQLAlchemy `AsyncConnection` or `AsyncSession`."""
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    if isinstance(conn, AsyncConnection):
        yield _sqlalchemy(conn, lambda c: c, _sqlalchemy_async, schema)
        return
    module = _module(conn)
    if module == "asyncpg":
        run: Run = functools.partial(_asyncpg_fetch, conn)
        outside = not conn.is_in_transaction()  # type: ignore[attr-defined]
        async with conn.transaction() if outside else nullcontext():  # type: ignore[attr-defined]
            yield Foreign("postgresql", _CoreOnRun(run, schema), run, schema)
        return
    if module == "psycopg" and _is_async_psycopg(conn):
        async with _psycopg_async(conn, schema) as foreign:
            yield foreign
        return
    raise _unsupported(conn, "aenqueue")


async def _asyncpg_fetch(conn: Any, sql: str, args: Sequence[Any]) -> Sequence[Any]:
    return await conn.fetch(sql, *args)  # type: ignore[no-any-return]


@asynccontextmanager
async def _psycopg_async(conn: Any, schema: str) -> AsyncIterator[Foreign]:
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(*pyformat(sql, args))
        return await cursor.fetchall() if cursor.description else []

    foreign = Foreign("postgresql", _CoreOnRun(run, schema), run, schema)
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        async with conn.transaction():
            yield foreign
    else:
        yield foreign


def _sqlalchemy_async(conn: AsyncConnection) -> Run:
    paramstyle = _paramstyle(conn.dialect)

    async def run(sql: str, args: Sequence[Any]) -> Sequence[Any]:
        result = await conn.exec_driver_sql(*_sent(paramstyle, sql, args))
        return result.all() if result.returns_rows else []

    return run


# ---- what kind of connection -----------------------------------------------------------------
def _paramstyle(dialect: Any) -> str:
    if dialect.name != "postgresql":
        raise UnsupportedConnection(
            f"a SQLAlchemy connection to {dialect.name}; Conveyor enqueues on PostgreSQL"
        )
    if dialect.paramstyle not in ("numeric_dollar", "pyformat"):
        raise UnsupportedConnection(
            f"SQLAlchemy's {dialect.driver} driver (use asyncpg, psycopg or psycopg2)"
        )
    return str(dialect.paramstyle)


def _sent(paramstyle: str, sql: str, args: Sequence[Any]) -> tuple[str, Any]:
    """What `exec_driver_sql` takes for a named statement under this DBAPI's style."""
    if paramstyle == "numeric_dollar":
        return sql, tuple(args)
    return pyformat(sql, args)


def _module(conn: object) -> str:
    return type(conn).__module__.partition(".")[0]


def _is_async_psycopg(conn: object) -> bool:
    from psycopg import AsyncConnection as PsycopgAsync

    return isinstance(conn, PsycopgAsync)


def _unsupported(conn: object, call: str) -> UnsupportedConnection:
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    return UnsupportedConnection(
        f"{call} cannot use a {kind}: give enqueue a psycopg Connection, a SQLAlchemy "
        "Connection or Session (PostgreSQL, or Conveyor's SQLite file), a sqlite3 connection "
        "to Conveyor's SQLite file, or a Django database alias; aenqueue an asyncpg or "
        "psycopg AsyncConnection, or a SQLAlchemy AsyncConnection or AsyncSession"
    )
