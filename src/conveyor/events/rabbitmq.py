"""The RabbitMQ sink: each event as a persistent, confirmed message on a topic exchange.

Topology (declared on connect, restored by aio-pika's robust connection after a loss):
a durable topic exchange `<prefix>conveyor.events`; routing keys `jobs.<type>`; durable
queues `<prefix>jobs.created` (bound to `jobs.created`) and `<prefix>jobs.completed` (bound
to `jobs.completed`, `jobs.failed` and `jobs.cancelled`: every finished job, CloudTask,
CONTRACTS.md 001). Other consumers bind their own queues, e.g. `jobs.#`.

The two queues are classic by default, or quorum queues (`x-queue-type: quorum`: replicated
by Raft across a cluster) with `queue_type="quorum"`. RabbitMQ cannot change the type of a
queue that exists: declaring it with the other type is refused (406 PRECONDITION_FAILED),
which this sink turns into `QueueTypeMismatch`, naming the queue and the way out; the relay
retries with backoff, so deleting the old queue is enough for it to go on
(docs/operations.md "RabbitMQ quorum queues").

A batch is published on one channel with publisher confirms, all messages in flight at
once, and `deliver` returns only when the broker confirmed every one; anything less raises,
and the relay publishes the batch again: duplicates carry the same `message_id`. Messages
whose routing key a contract queue binds are published `mandatory`: if that queue was
deleted while the relay was connected, the broker returns the message instead of dropping
it, and the sink declares its topology again before the batch is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from yarl import URL

from conveyor.domain.events import Event
from conveyor.events import schema

log = logging.getLogger("conveyor.events.rabbitmq")

EXCHANGE = "conveyor.events"
# Each contract queue and the routing keys bound to it. Every finished job reaches
# jobs.completed however it finished; the routing key, the message `type` and the body's
# `type` say how, so a consumer of `jobs.failed` alone still sees only failures.
QUEUES: Mapping[str, tuple[str, ...]] = {
    "jobs.created": ("jobs.created",),
    "jobs.completed": ("jobs.completed", "jobs.failed", "jobs.cancelled"),
}
RECONNECT_INTERVAL = 1  # seconds between attempts after a lost connection
QUEUE_TYPES = ("classic", "quorum")
_CURRENT_TYPE = re.compile(r"current is (?:the value )?'?(\w+)'?")


class QueueTypeMismatch(RuntimeError):
    """A contract queue exists with another type than the one configured. RabbitMQ never
    changes a queue's type in place, so this lasts until an operator acts; the message says
    how."""

    def __init__(self, queue: str, wanted: str, existing: str) -> None:
        self.queue, self.wanted, self.existing = queue, wanted, existing
        super().__init__(
            f"RabbitMQ queue {queue!r} exists as a {existing} queue, but "
            f"CONVEYOR_AMQP_QUEUE_TYPE={wanted}; RabbitMQ cannot change a queue's type. "
            f"Either set CONVEYOR_AMQP_QUEUE_TYPE={existing}, or let consumers drain the "
            f"queue and delete it (rabbitmqctl delete_queue {queue}): the relay declares it "
            f"as {wanted} on its next retry and delivers from its cursor, nothing is lost "
            f"(docs/operations.md, 'RabbitMQ quorum queues')"
        )


class QueueMissing(RuntimeError):
    """The broker returned a mandatory message: the contract queue bound to its routing key
    is gone (deleted while the relay was connected)."""


class RabbitMQSink:
    """Publishes to RabbitMQ; connects on first delivery, so a broker that is down at start
    is one more failed delivery for the relay to retry, not a process that cannot start."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        queues: Mapping[str, Sequence[str]] = QUEUES,
        queue_type: str = "classic",
        confirm_timeout: float = 30.0,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, not {queue_type!r}")
        self._url = url
        self.exchange_name = f"{prefix}{EXCHANGE}"
        self.queue_names = {f"{prefix}{name}": tuple(keys) for name, keys in queues.items()}
        self.queue_type = queue_type
        self._bound = {key for keys in self.queue_names.values() for key in keys}
        self._reported: QueueTypeMismatch | None = None  # said once at ERROR, then WARNING
        self._confirm_timeout = confirm_timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting = asyncio.Lock()

    async def deliver(self, events: Sequence[Event]) -> None:
        exchange = await self._ready()
        published = await asyncio.gather(
            *(self._publish(exchange, event) for event in events), return_exceptions=True
        )
        for outcome in published:
            if isinstance(outcome, QueueMissing):
                await self.close()  # the next delivery declares the topology again
            if isinstance(outcome, BaseException):
                raise outcome

    async def _publish(self, exchange: AbstractExchange, event: Event) -> None:
        message = aio_pika.Message(
            schema.encode(event),
            content_type=schema.CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=schema.message_id(event),
            timestamp=event.created_at,
            type=schema.routing_key(event),
            app_id="conveyor",
        )
        # Mandatory only where a contract queue must take it: a routing key nobody binds
        # (jobs.progress, say) is simply dropped.
        key = schema.routing_key(event)
        try:
            await exchange.publish(
                message, key, mandatory=key in self._bound, timeout=self._confirm_timeout
            )
        except aiormq.exceptions.PublishError as exc:
            raise QueueMissing(
                f"RabbitMQ returned event {message.message_id} ({key}): no queue bound to it; "
                "the contract queues are declared again before the retry"
            ) from exc

    async def _ready(self) -> AbstractExchange:
        async with self._connecting:
            if self._connection is not None and self._connection.is_closed:
                await self.close()  # closed for good (robust reconnection gave up): start over
            if self._exchange is None:
                try:
                    self._exchange = await self._connect()
                except BaseException:
                    await self.close()
                    raise
            return self._exchange

    async def _connect(self) -> AbstractExchange:
        url = URL(self._url)
        if "reconnect_interval" not in url.query:  # aio-pika waits 5 s; the URL may say
            url = url.update_query(reconnect_interval=RECONNECT_INTERVAL)
        self._connection = await aio_pika.connect_robust(
            url,
            timeout=self._confirm_timeout,
            client_properties={"connection_name": "conveyor-relay"},
        )
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for queue_name, keys in self.queue_names.items():
            queue = await self._declare_queue(channel, queue_name)
            for key in keys:
                await queue.bind(exchange, routing_key=key)
        if self._reported is not None:
            log.info("RabbitMQ queue %s is now a %s queue", self._reported.queue, self.queue_type)
            self._reported = None
        log.info(
            "connected to RabbitMQ; publishing to exchange %s (%s queues)",
            self.exchange_name, self.queue_type,
        )  # fmt: skip
        return exchange

    async def _declare_queue(
        self, channel: aio_pika.abc.AbstractChannel, name: str
    ) -> aio_pika.abc.AbstractQueue:
        """Classic queues are declared without arguments, as before the setting existed
        (and as consumers declare them); quorum ones with `x-queue-type`."""
        arguments: dict[str, Any] | None = None
        if self.queue_type != "classic":
            arguments = {"x-queue-type": self.queue_type}
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            text = str(exc)
            if "x-queue-type" not in text:
                raise
            mismatch = QueueTypeMismatch(name, self.queue_type, _existing_type(text))
            if self._reported is None or str(self._reported) != str(mismatch):
                log.error("%s", mismatch)  # once; the relay's retries log a line each
                self._reported = mismatch
            raise mismatch from None

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


def _existing_type(refusal: str) -> str:
    """The type RabbitMQ says the queue has: "... but current is none" (no `x-queue-type`,
    a classic queue) or "... current is 'quorum'"."""
    found = _CURRENT_TYPE.search(refusal)
    existing = found.group(1) if found else "unknown"
    return "classic" if existing == "none" else existing
