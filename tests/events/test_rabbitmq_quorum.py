"""Quorum queues for the contract queues, a queue of the wrong type, and a queue deleted
under a connected relay, on the real RabbitMQ (both databases).

A queue's type is checked without the management plugin: RabbitMQ answers a declare with
the queue's own `x-queue-type` (DeclareOk) and refuses one with another type (406
PRECONDITION_FAILED), so "declare as quorum succeeds and declare as classic is refused"
proves a quorum queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from conveyor.domain import events as ev
from conveyor.events import Relay, RelayConfig
from conveyor.events.rabbitmq import EXCHANGE, QUEUES, QueueTypeMismatch, RabbitMQSink
from conveyor.events.setup import sinks_from_settings
from conveyor.settings import Settings
from conveyor.store.backend import QueueBackend
from tests.conftest import _missing
from tests.events.conftest import AMQP_URL, finished_jobs, visible_events
from tests.support.processes import eventually

pytestmark = pytest.mark.rabbitmq

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


class Corner:
    """A name prefix of the test's own on the real RabbitMQ; everything under it is deleted
    at the end. Unlike tests/events/conftest.py's broker, it declares nothing up front:
    each test decides which queues exist, and of which type."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.prefix = f"test-{uuid.uuid4().hex[:12]}."

    def name(self, queue: str) -> str:
        return f"{self.prefix}{queue}"

    async def declare(self, queue: str, arguments: dict[str, Any] | None = None) -> None:
        """Declare `<prefix><queue>` (classic without arguments) and bind it as the relay
        does, as a consumer that starts before the relay would."""
        channel = await self.connection.channel()
        try:
            exchange = await channel.declare_exchange(
                self.name(EXCHANGE), aio_pika.ExchangeType.TOPIC, durable=True
            )
            declared = await channel.declare_queue(
                self.name(queue), durable=True, arguments=arguments
            )
            for key in QUEUES[queue]:
                await declared.bind(exchange, routing_key=key)
        finally:
            await channel.close()

    async def delete(self, queue: str) -> None:
        channel = await self.connection.channel()
        try:
            await channel.queue_delete(self.name(queue))
        finally:
            await channel.close()

    async def type_of(self, queue: str) -> str:
        """ "quorum" or "classic", from what RabbitMQ accepts; the queue must exist (a passive
        declare first, so that the check never creates it)."""
        channel = await self.connection.channel()
        await channel.declare_queue(self.name(queue), passive=True)
        found = []
        for kind, arguments in (("quorum", QUORUM), ("classic", None)):
            try:
                await channel.declare_queue(self.name(queue), durable=True, arguments=arguments)
                found.append(kind)
            except aiormq.exceptions.ChannelPreconditionFailed:
                channel = await self.connection.channel()  # the refusal closed it
        with contextlib.suppress(Exception):
            await channel.close()
        assert len(found) == 1, found
        return found[0]

    async def drain(self, queue: str) -> list[AbstractIncomingMessage]:
        """Every message now in the queue, taken off it (a passive declare: any type)."""
        channel = await self.connection.channel()
        declared = await channel.declare_queue(self.name(queue), passive=True)
        messages = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        await channel.close()
        return messages

    async def cleanup(self) -> None:
        channel = await self.connection.channel()
        for queue in QUEUES:
            await channel.queue_delete(self.name(queue))
        await channel.exchange_delete(self.name(EXCHANGE))


@pytest.fixture
async def corner() -> AsyncIterator[Corner]:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        _missing("RabbitMQ", exc)
    made = Corner(connection)
    try:
        yield made
    finally:
        with contextlib.suppress(Exception):
            await made.cleanup()
        await connection.close()


@contextlib.asynccontextmanager
async def relaying(backend: QueueBackend, sink: RabbitMQSink) -> AsyncIterator[Relay]:
    # A stop that hangs ends within two graces and says where each task was (relay.py).
    config = RelayConfig(poll_interval=0.05, batch=50, lease_ttl=0.5, backoff_max=0.5, grace=2)
    relay = Relay(backend, [sink], config)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        assert await asyncio.wait_for(task, 10) == 0


async def caught_up(backend: QueueBackend, last: ev.Position) -> None:
    async def there() -> bool:
        return await backend.cursor("rabbitmq") == last

    await eventually(there, timeout=30, what="the RabbitMQ sink's cursor to reach the end")


def ids(events: list[ev.Event], queue: str) -> list[str]:
    return [str(e.id) for e in events if f"jobs.{e.type}" in QUEUES[queue]]


async def test_quorum_queues_carry_the_contract_events(
    backend: QueueBackend, corner: Corner
) -> None:
    """The relay declares both contract queues as quorum queues; they get exactly the
    created and finished events, in order, persistent, as from classic ones."""
    sink = RabbitMQSink(AMQP_URL, prefix=corner.prefix, queue_type="quorum")
    await finished_jobs(backend, 1)  # the first delivery declares the queues...
    async with relaying(backend, sink):
        await caught_up(backend, (await visible_events(backend, 1))[-1].position)
        for queue in QUEUES:
            assert await corner.type_of(queue) == "quorum"
        await finished_jobs(backend, 20)  # ...and these all go through them
        events = await visible_events(backend, 21)
        await caught_up(backend, events[-1].position)
    for queue in QUEUES:
        got = await corner.drain(queue)
        assert [m.message_id for m in got] == ids(events, queue)
        for message in got:
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert f"jobs.{json.loads(message.body)['type']}" in QUEUES[queue]


@pytest.mark.parametrize(("existing", "wanted"), [("classic", "quorum"), ("quorum", "classic")])
async def test_a_queue_of_the_other_type_is_named_once_then_migrated(
    backend: QueueBackend,
    corner: Corner,
    caplog: pytest.LogCaptureFixture,
    existing: str,
    wanted: str,
) -> None:
    """RabbitMQ refuses the declare and closes the channel. The relay says which queue and
    what to do once at ERROR, retries with backoff (one WARNING line each, no traceback, no
    exit), and goes on by itself once the operator deleted the old queue: the migration path
    of docs/operations.md, nothing lost."""
    for queue in QUEUES:
        await corner.declare(queue, QUORUM if existing == "quorum" else None)
    sink = RabbitMQSink(AMQP_URL, prefix=corner.prefix, queue_type=wanted)
    await finished_jobs(backend, 1)
    with caplog.at_level(logging.INFO):
        with pytest.raises(QueueTypeMismatch) as refused:
            await sink.deliver(await visible_events(backend, 1))
        await sink.close()
        text = str(refused.value)
        assert corner.name("jobs.created") in text
        assert f"exists as a {existing} queue" in text and f"AMQP_QUEUE_TYPE={wanted}" in text
        assert "delete" in text and "docs/operations.md" in text

        async with relaying(backend, sink) as relay:

            async def refused_a_few_times() -> bool:
                return relay.lanes[0].failures >= 3

            await eventually(refused_a_few_times, timeout=30, what="three refused deliveries")
            for queue in QUEUES:  # the operator drains and deletes the old queues
                await corner.delete(queue)
            await finished_jobs(backend, 5)
            events = await visible_events(backend, 6)
            await caught_up(backend, events[-1].position)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [text]  # said once, not per retry
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"
    retries = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert len(retries) >= 3 and all("QueueTypeMismatch" in line for line in retries)
    for queue in QUEUES:
        assert await corner.type_of(queue) == wanted
    # Declared after the events were written: the relay's cursor still brings them all.
    for queue in QUEUES:
        assert [m.message_id for m in await corner.drain(queue)] == ids(events, queue)


async def test_a_queue_deleted_under_a_connected_relay_is_declared_again(
    backend: QueueBackend, corner: Corner
) -> None:
    """Contract messages are mandatory: the broker returns them when their queue is gone,
    the batch fails, and the retry declares the queue again; without `mandatory` the broker
    would have confirmed and dropped them."""
    sink = RabbitMQSink(AMQP_URL, prefix=corner.prefix, queue_type="quorum")
    await finished_jobs(backend, 2)
    async with relaying(backend, sink):
        before = await visible_events(backend, 2)
        await caught_up(backend, before[-1].position)
        await corner.delete("jobs.completed")
        await corner.drain("jobs.created")
        await finished_jobs(backend, 5)
        events = await visible_events(backend, 7)
        await caught_up(backend, events[-1].position)
    after = [e for e in events if e.id > before[-1].id]
    assert await corner.type_of("jobs.completed") == "quorum"
    for queue in QUEUES:
        got = [m.message_id for m in await corner.drain(queue)]
        assert set(got) >= set(ids(after, queue))  # a retried batch may repeat some
        assert set(got) <= set(ids(events, queue))


def test_the_setting_chooses_the_queue_type() -> None:
    settings = Settings(amqp_url=AMQP_URL, amqp_queue_type="quorum", webhook_enabled=False)
    (sink,) = sinks_from_settings(settings)
    assert isinstance(sink, RabbitMQSink) and sink.queue_type == "quorum"
    assert Settings().amqp_queue_type == "classic"
    with pytest.raises(ValueError, match="amqp_queue_type"):
        Settings(amqp_queue_type="stream")
