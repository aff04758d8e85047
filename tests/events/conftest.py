"""Events tests: jobs that leave events behind, test sinks, and a private corner of RabbitMQ.

RabbitMQ is the real server (CONVEYOR_TEST_AMQP_URL, default guest on 127.0.0.1:5672):
skipped on a laptop without it, failed in CI. Each test gets its own name prefix for the
exchange and queues, and deletes them at the end, so tests in parallel never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from conveyor.domain import events as ev
from conveyor.domain.jobs import NewJob, Outcome
from conveyor.events.rabbitmq import EXCHANGE, QUEUES
from conveyor.store.backend import QueueBackend
from tests.conftest import _drop, _missing, _pg_admin, pg_url
from tests.support.processes import eventually

AMQP_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def finished_jobs(backend: QueueBackend, count: int) -> list[str]:
    """`count` jobs taken from created to completed: events created, started, completed."""
    made = await backend.enqueue([NewJob(type="noop", payload={"i": i}) for i in range(count)])
    claimed = await backend.claim("w", ["default"], count, 30)
    assert len(claimed) == count
    outcomes = [Outcome(c.id, c.attempt, "completed", result={"ok": c.id}) for c in claimed]
    assert len(await backend.finish("w", outcomes)) == count
    return [m.id for m in made]


async def all_events(backend: QueueBackend) -> list[ev.Event]:
    return await backend.read_events(ev.Position(), 1_000_000)


@asynccontextmanager
async def another_database() -> AsyncIterator[str]:
    """The URL of a private database on the same PostgreSQL server (another application's),
    with a table `batch`; dropped afterwards."""
    name = f"conveyor_other_{uuid.uuid4().hex[:12]}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        other = await asyncpg.connect(pg_url(name))
        try:
            await other.execute("CREATE TABLE batch (n int)")
        finally:
            await other.close()
        yield pg_url(name)
    finally:
        await _drop(name)


@asynccontextmanager
async def writing_elsewhere() -> AsyncIterator[asyncpg.Connection]:
    """A transaction in another database that wrote (it has a transaction id) and stays
    open idle until the block ends: another application's migration or batch update."""
    async with another_database() as url:
        other = await asyncpg.connect(url)
        try:
            async with other.transaction():
                await other.execute("INSERT INTO batch SELECT generate_series(1, 1000)")
                yield other
        finally:
            await other.close()


@asynccontextmanager
async def churning_elsewhere(sessions: int = 4) -> AsyncIterator[None]:
    """Short write transactions, overlapping, in another database until the block ends:
    a busy neighbour on a shared server, whose transactions end all the time."""
    async with another_database() as url:
        stop = asyncio.Event()

        async def churn() -> None:
            other = await asyncpg.connect(url)
            try:
                while not stop.is_set():
                    async with other.transaction():
                        await other.execute("INSERT INTO batch VALUES (1)")
                        await asyncio.sleep(0.001)
            finally:
                await other.close()

        churners = [asyncio.create_task(churn()) for _ in range(sessions)]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*churners)


async def visible_events(backend: QueueBackend, jobs: int) -> list[ev.Event]:
    """Every event, once all of `jobs` finished jobs' events can be read.

    On PostgreSQL, readers see events only once every transaction that may still write
    one below them has ended (docs/events.md), so they may show a moment late.
    """
    found: list[ev.Event] = []

    async def there() -> bool:
        found[:] = await all_events(backend)
        return len(found) >= 3 * jobs

    await eventually(there, timeout=30, what=f"the events of {jobs} jobs")
    return found


@dataclass
class Recorder:
    """A test sink: keeps every batch it accepted; refuses the first `failures` deliveries,
    after hanging on the first `hangs` ones."""

    name: str = "recorder"
    failures: int = 0
    hangs: int = 0
    batches: list[list[ev.Event]] = field(default_factory=list)
    attempts: int = 0
    closed: bool = False

    async def deliver(self, events: Sequence[ev.Event]) -> None:
        self.attempts += 1
        if self.hangs:
            self.hangs -= 1
            await asyncio.Event().wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError(f"{self.name} is down")
        self.batches.append(list(events))

    async def close(self) -> None:
        self.closed = True

    @property
    def ids(self) -> list[int]:
        return [event.id for batch in self.batches for event in batch]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Broker:
    """The test's view of RabbitMQ: its prefix, and a channel to read the queues with."""

    url: str
    prefix: str
    channel: AbstractChannel

    async def drain(self, queue: str) -> list[AbstractIncomingMessage]:
        """Every message now in `<prefix><queue>`, taken off it."""
        declared = await self.channel.declare_queue(f"{self.prefix}{queue}", durable=True)
        messages = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with private_broker() as private:
        yield private


@contextlib.asynccontextmanager
async def private_broker() -> AsyncIterator[Broker]:
    """A name prefix of its own on the real RabbitMQ, its contract queues declared and bound
    as the relay binds them, all deleted afterwards; skipped without a server (failed in CI).
    """
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        _missing("RabbitMQ", exc)
    prefix = f"test-{uuid.uuid4().hex[:12]}."
    try:
        channel = await connection.channel()
        # Declared before any relay runs, as a consumer would: nothing published is missed.
        exchange = await channel.declare_exchange(
            f"{prefix}{EXCHANGE}", aio_pika.ExchangeType.TOPIC, durable=True
        )
        for name, keys in QUEUES.items():
            queue = await channel.declare_queue(f"{prefix}{name}", durable=True)
            for key in keys:
                await queue.bind(exchange, routing_key=key)
        yield Broker(AMQP_URL, prefix, channel)
    finally:
        with contextlib.suppress(Exception):
            cleanup = await connection.channel()
            for name in QUEUES:
                await cleanup.queue_delete(f"{prefix}{name}")
            await cleanup.exchange_delete(f"{prefix}{EXCHANGE}")
        await connection.close()


class Cuttable:
    """A TCP proxy in front of RabbitMQ whose connections the test can cut, like a network
    failure would: the client sees its connection drop and must reconnect by itself."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.transport.abort()
