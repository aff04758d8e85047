"""Connections: one async engine per database, with SQLite's single-writer discipline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import asyncpg
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_, greenlet_spawn

from conveyor.errors import ConfigurationError, Unavailable
from conveyor.store.drivers.sqlite_dbapi import DRIVER as SQLITE_DRIVER
from conveyor.store.drivers.sqlite_dbapi import deferred_begin

log = logging.getLogger("conveyor.store")

Dialect = Literal["sqlite", "postgresql"]
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A process frozen inside a transaction (SIGSTOP, a debugger, a stuck host) would hold its row
# locks, which SKIP LOCKED claims and the rescuer pass over forever: the server ends such
# sessions after a while, and their work is then rescued like a dead worker's. Set by a
# statement on each new pooled connection, not as a startup parameter: PgBouncer refuses a
# startup parameter it does not know ("unsupported startup parameter"), and with it in
# `ignore_startup_parameters` the setting would silently not apply.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
# A statement whose client has gone (a request's deadline ends its connection, a process is
# killed) runs on until the server next writes to the socket: a lock wait or a long query
# outlives its caller, holding its locks and a backend. PostgreSQL 14+ looks for a vanished
# client this often while a statement runs, and ends it (set like the above, on each new
# pooled connection; 0 turns it off, and so does a server that lacks it).
CLIENT_CHECK_INTERVAL_MS = 1_000
CONNECT_TIMEOUT_S = 5.0  # opening a PostgreSQL connection, in any process
REQUEST_TIMEOUT_S = 1.5  # one database operation of a request (`Database.request_path`)
RETRY_AFTER_S = 1  # what a 503 for an unreachable database tells the client to wait

# Seconds each database operation may take in this context: set for request paths only (the
# API's requests and what they start), None for workers, the scheduler and the relay, whose
# big batches and pruning slices must not fail for taking long.
_budget: ContextVar[float | None] = ContextVar("conveyor_db_budget", default=None)
# The driver connections the current bounded operation holds: ended at its deadline.
_held: ContextVar[list[Any] | None] = ContextVar("conveyor_db_held", default=None)


def async_url(url: str) -> tuple[Dialect, str]:
    """Map the user's URL (``sqlite:///...``, ``postgresql://...``) to the async driver's."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # aiosqlite under SQLAlchemy, one thread trip per statement (drivers/sqlite_dbapi.py)
        return "sqlite", parsed.set(drivername=f"sqlite+{SQLITE_DRIVER}").render_as_string(False)
    if backend in ("postgresql", "postgres"):
        return "postgresql", parsed.set(drivername="postgresql+asyncpg").render_as_string(False)
    raise ConfigurationError(f"unsupported database URL scheme: {parsed.drivername}")


def search_path(schema: str) -> dict[str, str]:
    """The session setting that puts Conveyor's tables in `schema` (none for "")."""
    return {"search_path": schema} if schema else {}


def plain_postgres_dsn(url: str, settings: Mapping[str, str] | None = None) -> str:
    """The libpq-style DSN asyncpg's own connect() takes (for LISTEN and advisory locks).

    Several hosts (a highly available database without a virtual IP) come in SQLAlchemy's
    form, ``?host=a:5432&host=b:5432``, which its asyncpg dialect hands to the pool as lists;
    asyncpg's own DSN parser would keep only the last ``host=``, so they are rewritten as
    its lists, ``?host=a,b&port=5432,5432`` (a host without a port gets the URL's, else 5432):
    LISTEN and leadership then try the hosts in the same order as the pool, with the same
    ``target_session_attrs``. `settings`: session settings, as query parameters."""
    parsed = make_url(url).set(drivername="postgresql")
    if settings:
        parsed = parsed.update_query_dict(dict(settings))
    hosts = parsed.query.get("host")
    if isinstance(hosts, tuple):
        default = str(parsed.port or 5432)
        pairs = [_host_port(h, default) for h in hosts]
        parsed = parsed.update_query_dict(
            {"host": ",".join(h for h, _ in pairs), "port": ",".join(p for _, p in pairs)}
        )
    return parsed.render_as_string(False)


def _host_port(spec: str, default: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host, port)."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, rest.removeprefix(":") or default
    host, colon, port = spec.rpartition(":")
    return (host, port) if colon and port.isdigit() else (spec, default)


class Database:
    """The engines of one process.

    On SQLite every write goes through one connection opened with ``BEGIN IMMEDIATE``, so
    writers queue in the pool instead of failing with "database is locked"; other processes
    wait on the busy timeout. Reads use a separate pool and see WAL snapshots.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_synchronous: str = "FULL",
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        application_name: str = "conveyor",
        schema: str = "",
    ):
        _quiet_drivers()
        # One pooled connection `raw` kept back between uses (`_raw_checkout`), with the time
        # it was last given back.
        self._spare: tuple[Any, float] | None = None
        self.url = url
        # PostgreSQL: the pool's sessions carry it; dedicated ones (LISTEN, leadership) add
        # what they are for. PgBouncer passes it on to the server.
        self.application_name = application_name
        self.request_timeout = request_timeout
        # PostgreSQL: every session's search_path (CONVEYOR_DATABASE_SCHEMA); "": the default
        self.schema = schema
        self.dialect, driver_url = async_url(url)
        if self.dialect == "sqlite":
            self.writer = create_async_engine(
                driver_url, pool_size=1, max_overflow=0, pool_timeout=300
            )
            self.reader = create_async_engine(driver_url, pool_size=4, max_overflow=4)
            _configure_sqlite(self.writer, sqlite_synchronous, immediate=True)
            _configure_sqlite(self.reader, sqlite_synchronous, immediate=False)
        else:
            # Up to 2 * pool_size connections, all kept once opened: no overflow. Overflow
            # connections are closed on return whenever the pool is full, so a burst of
            # concurrent requests above pool_size connected and closed a connection (TLS
            # attempt, startup, type codecs: ~0.4 transactions and ~1 ms of CPU each) per
            # request; now a burst waits for a pooled connection instead (docs/deploy.md).
            self.writer = create_async_engine(
                driver_url,
                pool_size=2 * pool_size,
                max_overflow=0,
                connect_args={
                    "server_settings": {"application_name": application_name} | search_path(schema),
                    "timeout": connect_timeout,
                },
            )
            _set_up_postgres_session(self.writer)
            _ping_on_checkout(self.writer)
            _replace_read_only_sessions(self.writer)
            self.reader = self.writer

    def insert(self, table: Any) -> Any:
        """The dialect's INSERT construct, which knows ``ON CONFLICT``."""
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    @property
    def engine(self) -> AsyncEngine:
        return self.writer

    @contextmanager
    def request_path(self) -> Iterator[None]:
        """Bound every database operation started in this context (and in the tasks it
        creates) by `request_timeout`: waiting for a pooled connection, connecting, and its
        statements. At the deadline the operation's connection is ended (on a partition the
        server cannot answer, so its own statement_timeout never fires, and a connection
        in an unknown state must not go back to the pool) and `Unavailable` is raised, which
        the API answers 503 with Retry-After. Workers, the scheduler and the relay run
        unbounded: their long statements are not request paths."""
        token = _budget.set(self.request_timeout)
        try:
            yield
        finally:
            _budget.reset(token)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; unreachable databases surface as `Unavailable`.

        Callbacks registered with `after_commit` run once it committed (not on rollback)."""
        async with _Guarded():
            async with self.writer.begin() as conn:
                conn.info.pop(_AFTER_COMMIT, None)  # info outlives a checkout: start clean
                yield conn
                callbacks: list[Callable[[], None]] = conn.info.pop(_AFTER_COMMIT, [])
            for callback in callbacks:
                callback()

    def raw(self, *, transaction: bool = False) -> _RawBlock:
        """The database driver's own connection (asyncpg's) of a pooled connection, for the
        named statements of the hot path: no SQLAlchemy layer per statement, one pool.

        One statement runs in its own implicit transaction: one round trip and one commit.
        Only several statements that must commit together ask for `transaction`.
        """
        return _RawBlock(self, transaction)

    async def _give_back(self, pooled: Any, clean: bool) -> None:
        """A connection `raw` used, back: kept as the spare (`_keep_spare`), else to the
        pool; one that was closed (at a deadline, by the network) is not reusable."""
        if pooled.driver_connection.is_closed():
            await greenlet_spawn(pooled.invalidate)
            await greenlet_spawn(pooled.close)
        elif not (clean and self._keep_spare(pooled)):
            await greenlet_spawn(pooled.close)  # back to the pool

    async def _raw_checkout(self) -> Any:
        """A pooled connection for `raw`: the spare one when it is fresh, else the pool's.

        A checkout and a check-in each cross into SQLAlchemy's pool through a greenlet: about
        a third of a single submit's client CPU (measured, bench/README). So the last
        connection `raw` used, given back cleanly outside a request path, is kept back as a
        spare and handed out again without the pool. Within `FRESH_S` of its last use it is
        taken as is (as the pool's checkout would); older, it is pinged first, like the
        pool's checkout. Request paths always use the pool: their deadline
        (`request_path`) needs the pool's checkout hook to know their connections."""
        spare, self._spare = self._spare, None
        if spare is not None:
            pooled, returned = spare
            usable = _budget.get() is None and not pooled.driver_connection.is_closed()
            if usable and time.monotonic() - returned >= FRESH_S:
                try:
                    await pooled.driver_connection.fetchrow(";")
                except Exception:
                    usable = False
            if usable:
                return pooled
            await greenlet_spawn(pooled.invalidate)
            await greenlet_spawn(pooled.close)
        return await self.writer.raw_connection()  # the pool's own, no Connection

    def _keep_spare(self, pooled: Any) -> bool:
        """Keep `pooled` as the spare (see `_raw_checkout`) if there is none yet."""
        raw = pooled.driver_connection
        if self._spare is not None or _budget.get() is not None or raw.is_in_transaction():
            return False
        self._spare = (pooled, time.monotonic())
        return True

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with _Guarded(), self.reader.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            await greenlet_spawn(spare[0].close)
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


_AFTER_COMMIT = "conveyor.after_commit"


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run `callback` once the transaction `conn` belongs to (a `Database.write`) commits;
    once per transaction however often it is asked. Wake-ups use it, so that whoever they
    wake can already read what woke them."""
    callbacks: list[Callable[[], None]] = conn.info.setdefault(_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


def _set_up_postgres_session(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        await_(_set_up_session(dbapi_connection.driver_connection))


async def _set_up_session(raw: Any) -> None:
    """The SETs of a new pooled session, one message. The client check only where the
    server has it: PostgreSQL 14+ (asyncpg knows the version from the connection's start)
    on a system that can report a closed socket (not Windows: the SET is refused there, and
    the session goes without it)."""
    idle = f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    if raw.get_server_version() < (14, 0):
        await raw.execute(idle)
        return
    try:
        await raw.execute(
            f"{idle}; SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"
        )
    except asyncpg.InvalidParameterValueError:
        await raw.execute(idle)


_RETURNED_AT = "conveyor.returned_at"
FRESH_S = 1.0  # a connection back in the pool for less than this is not pinged


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling in one round trip: a pooled connection that has sat
    idle (long enough for the server to have restarted meanwhile) is pinged, and replaced if
    it died, before anyone uses it. SQLAlchemy's `pool_pre_ping` on asyncpg costs three
    (BEGIN, ping, ROLLBACK). A connection returned within `FRESH_S` is not pinged: the hot
    path cycles its connections many times a second, and a ping on each claim and finish
    doubled their round trips (one failed statement per connection a restart kills
    mid-burst is what the callers already retry). One this process closed itself (a
    request's deadline, `_deadline`) is replaced without a round trip, however fresh.

    A bounded operation's deadline ends the connections it holds: each is its own from
    checkout to check-in, not after. Its timer fires on its own, so it could end a connection
    already given back (and maybe handed to another operation since), or the operation could
    finish its COMMIT while the timer closed its socket; the driver then forgets the
    transaction, the pool's reset finds nothing to roll back, and the closed connection went
    back as good: the next request within `FRESH_S` failed with "connection is closed"."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED_AT] = time.monotonic()
        held = _held.get()
        if held is not None and dbapi_connection is not None:  # no longer its deadline's
            driver = dbapi_connection.driver_connection
            held[:] = [c for c in held if c is not driver]

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver.is_closed():  # ended while in the pool: the pool opens a new one
            raise DisconnectionError("a pooled connection is closed")
        held = _held.get()
        if held is not None:  # a bounded operation: its deadline ends this connection
            held.append(driver)
        if time.monotonic() - record.info.get(_RETURNED_AT, -FRESH_S) < FRESH_S:
            return
        try:
            await_(driver.fetchrow(";"))
        except Exception as exc:
            raise DisconnectionError("a pooled connection is gone") from exc


def _replace_read_only_sessions(engine: AsyncEngine) -> None:
    """A write refused because the server is read-only (a standby, or a demoted primary:
    around a failover the address may lead to one for a while) counts as a disconnect, so
    SQLAlchemy drops that connection and every other one the pool held then, and the next
    ones are opened where the address leads now (`raw` does the same for its own)."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: Any) -> None:
        if is_read_only(context.original_exception):
            context.is_disconnect = True


def _configure_sqlite(engine: AsyncEngine, synchronous: str, *, immediate: bool) -> None:
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigurationError(f"bad SQLite synchronous mode: {synchronous}")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # A workflow step settled by the release trigger fires it again for its own
        # dependents (migration 0016, docs/workflows.md).
        cursor.execute("PRAGMA recursive_triggers = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if immediate:
            _wait_for_writers(conn)
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        if not deferred_begin(conn.connection.dbapi_connection, begin):
            conn.exec_driver_sql(begin)

    @event.listens_for(engine.sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        """Roll back a connection SQLAlchemy throws away (a task cancelled inside its
        statement does that) before it is closed: its close alone left a statement of the
        open transaction unfinished, so the file's write lock stayed with the discarded
        connection and every later write of the process waited out the busy timeout, then
        failed (tests/store/test_database_cancel.py)."""
        with suppress(Exception):  # gone already, or not closable from here
            dbapi_connection.rollback()


_BUSY_TIMEOUT = "conveyor.busy_timeout_ms"


def _wait_for_writers(conn: Any) -> None:
    """How long this write waits for another process's write lock: the request's budget on a
    request path (a locked database answers 503 in time), the long busy timeout elsewhere.
    Set only when it changes: one connection serves both kinds in `conveyor run`."""
    budget = _budget.get()
    wanted = SQLITE_BUSY_TIMEOUT_MS if budget is None else max(1, int(budget * 1000))
    if conn.info.get(_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS) != wanted:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {wanted}")
        conn.info[_BUSY_TIMEOUT] = wanted


class SessionPooling(ConfigurationError):
    """The dedicated sessions are not the client's own: a connection pooler in transaction
    or statement mode (PgBouncer's `pool_mode = transaction`) hands one server session to
    other clients between statements. LISTEN would hear nothing and an advisory lock would
    be shared (two leaders), so Conveyor refuses rather than run that way."""

    def __init__(self, seen: str) -> None:
        super().__init__(
            "the database connection goes through a pooler that shares server sessions "
            f"between clients ({seen}): PgBouncer's pool_mode must be `session` for "
            "Conveyor (LISTEN, advisory-lock leadership and prepared statements need their "
            "own session); see docs/operations.md 'Connection budgets and PgBouncer'"
        )


# SQLSTATEs of asyncpg's named prepared statements meeting another client's on a server
# session a pooler shares (duplicate_prepared_statement, invalid_sql_statement_name).
_SHARED_SESSION_SQLSTATES = ("42P05", "26000")


def shared_session(exc: BaseException) -> bool:
    """Whether an error is a prepared statement another client's session already had (or no
    longer has): the mark of a pooler in transaction mode."""
    for error in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if getattr(error, "sqlstate", None) in _SHARED_SESSION_SQLSTATES:
            return True
    return False


_CONNECTION_WORDS = (
    "connect", "closed", "database is locked", "terminat", "refused", "reset", "unable to open",
    "accepting connections", "shutting down", "starting up",
)  # fmt: skip
# SQLSTATE classes that mean "the server is away", not "your statement is wrong":
# connection exceptions, insufficient resources, operator intervention, no such database,
# and a server that takes no writes (a standby: the primary is elsewhere, or failing over).
_READ_ONLY_SQLSTATE = "25006"
_OUTAGE_SQLSTATES = ("08", "53", "57P", "3D000", _READ_ONLY_SQLSTATE)


def is_read_only(exc: BaseException) -> bool:
    """Whether a write was refused because the server is read-only (SQLSTATE 25006)."""
    for error in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if (
            getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        ) == _READ_ONLY_SQLSTATE:
            return True
    return False


def is_outage(exc: BaseException) -> bool:
    """Whether an error means the database is unreachable (503) rather than a bug (500)."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    for error in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
        # InternalClientError: asyncpg's protocol met a message it did not expect, such as
        # a terminated session's FATAL arriving as a statement starts; that session is gone.
        if type(error).__name__ in (
            "InterfaceError", "ConnectionDoesNotExistError", "InternalClientError",
        ):  # fmt: skip
            return True
    text = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, (OperationalError, DBAPIError)) and any(
        word in text for word in _CONNECTION_WORDS
    )


@asynccontextmanager
async def _deadline(budget: float) -> AsyncIterator[None]:
    """The deadline of one operation on a request path (`Database.request_path`), `budget`
    seconds away. At the deadline the driver connections the operation checked out are
    terminated (no network round trip: a partitioned server cannot answer a cancel or a
    rollback) and the operation is cancelled, so its clean-up fails at once instead of
    waiting on the network too; the pool replaces those connections on their next use."""
    held: list[Any] = []
    token = _held.set(held)
    loop = asyncio.get_running_loop()
    ending = loop.call_later(budget, _terminate, held)
    try:
        async with asyncio.timeout(budget):
            yield
    except TimeoutError as exc:
        log.warning("database did not answer within %.1f s: connection dropped", budget)
        # Not "nothing was changed": a commit already sent may have reached the server.
        raise Unavailable(
            "the database did not answer in time; retry (a submission with an idempotency key"
            " is stored once however often it is sent)",
            retry_after=RETRY_AFTER_S,
        ) from exc
    finally:
        ending.cancel()
        _held.reset(token)


class _Guarded:
    """What every database operation runs in: its deadline on a request path (`_deadline`;
    nothing outside one), and its errors translated (`_translate`). A class rather than
    two generator-based context managers: it wraps every statement of the hot path, where
    those cost a single submit a few microseconds of CPU each."""

    __slots__ = ("_deadline",)

    async def __aenter__(self) -> None:
        budget = _budget.get()
        self._deadline = None if budget is None else _deadline(budget)
        if self._deadline is not None:
            await self._deadline.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Raises the error's translation, or the deadline's `Unavailable`; never swallows
        one (the block's own error goes on when this returns)."""
        if self._deadline is None:
            _translate(exc)
            return
        try:
            _translate(exc)
        except BaseException as translated:
            await self._deadline.__aexit__(type(translated), translated, translated.__traceback__)
            raise
        await self._deadline.__aexit__(kind, exc, tb)


class _RawBlock:
    """`Database.raw`'s block: the guarded checkout (`_Guarded`), the transaction if asked,
    and the connection given back however the block ends (a class, as `_Guarded` is)."""

    __slots__ = ("_db", "_guard", "_pooled", "_transaction", "_tx")

    def __init__(self, db: Database, transaction: bool) -> None:
        self._db = db
        self._transaction = transaction
        self._guard = _Guarded()
        self._tx: Any = None

    async def __aenter__(self) -> Any:
        await self._guard.__aenter__()
        try:
            self._pooled = await self._db._raw_checkout()
            raw = self._pooled.driver_connection
            if self._transaction:
                await self._begin(raw)
        except BaseException as exc:
            await self._guard.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return raw

    async def _begin(self, raw: Any) -> None:
        transaction = raw.transaction()
        try:
            await transaction.__aenter__()
        except BaseException as exc:
            await self._end(exc)
            raise
        self._tx = transaction

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._end(exc)
        except BaseException as ending:
            await self._guard.__aexit__(type(ending), ending, ending.__traceback__)
            raise
        await self._guard.__aexit__(kind, exc, tb)

    async def _end(self, exc: BaseException | None) -> None:
        """Commit or roll back (in a transaction), then give the connection back; one with
        a server that takes no writes, or whose state is unknown after a network or protocol
        failure, is ended, not reused. Raises a failed commit's (or rollback's) error."""
        pooled = self._pooled
        raw = pooled.driver_connection
        clean = False
        try:
            if self._tx is not None:
                tb = None if exc is None else exc.__traceback__
                await self._tx.__aexit__(None if exc is None else type(exc), exc, tb)
            clean = exc is None
        except Exception as failed:
            _end_if_broken(raw, failed)
            raise
        else:
            if isinstance(exc, Exception):
                _end_if_broken(raw, exc)
        finally:
            await self._db._give_back(pooled, clean)


def _end_if_broken(raw: Any, exc: Exception) -> None:
    """End `raw` if `exc` says its server takes no writes or its state is unknown."""
    if (is_read_only(exc) or is_outage(exc)) and not raw.is_closed():
        raw.terminate()


def _terminate(connections: list[Any]) -> None:
    for connection in connections:
        terminate = getattr(connection, "terminate", None)  # asyncpg's: closes the socket
        if terminate is not None and not connection.is_closed():
            terminate()


class _OutageLog:
    """Say once per process that the database went away and once that it is back: a worker
    or an API process makes many attempts a second during an outage."""

    since: float | None = None

    @classmethod
    def failed(cls, exc: Exception) -> None:
        if cls.since is None:
            cls.since = time.monotonic()
            log.warning("database unavailable: %s (said once until it is back)", exc)
        else:
            log.debug("database unavailable: %s", exc)

    @classmethod
    def answered(cls) -> None:
        if cls.since is not None:
            log.info("database available again after %.1fs", time.monotonic() - cls.since)
            cls.since = None


def _translate(exc: BaseException | None) -> None:
    """Raise what an operation's error means for its caller: `Unavailable` (503) for an
    unreachable database, `SessionPooling` for a pooler that shares sessions; any other
    error is left as it is. No error: the outage log hears the database is back."""
    if exc is None:
        if _OutageLog.since is not None:
            _OutageLog.answered()
        return
    if not isinstance(exc, Exception):
        return
    if shared_session(exc):
        raise SessionPooling(str(getattr(exc, "orig", exc)).splitlines()[0]) from exc
    if not is_outage(exc):
        return
    _OutageLog.failed(exc)
    raise Unavailable(
        "the database is not reachable; nothing was changed", retry_after=RETRY_AFTER_S
    ) from exc


def _quiet_drivers() -> None:
    """The database libraries log every statement below these levels (aiosqlite twice), which
    would drown a DEBUG log; the store's own logger says what matters."""
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
