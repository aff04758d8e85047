"""The RabbitMQ sink: each event as a persistent, confirmed message on a topic exchange.

Topology (declared on connect, restored by aio-pika's robust connection after a loss):
a durable topic exchange `<prefix>conveyor.events`; routing keys `jobs.<type>`; durable
queues `<prefix>jobs.created` (bound to `jobs.created`) and `<prefix>jobs.completed` (bound
to `jobs.completed`, `jobs.failed` and `jobs.cancelled`: every finished job, CloudTask,
CONTRACTS.md 001). Other consumers bind their own queues, e.g. `jobs.#`.

A batch is published on one channel with publisher confirms, all messages in flight at
once, and `deliver` returns only when the broker confirmed every one; anything less raises,
and the relay publishes the batch again: duplicates carry the same `message_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import aio_pika
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
        confirm_timeout: float = 30.0,
    ) -> None:
        self._url = url
        self.exchange_name = f"{prefix}{EXCHANGE}"
        self.queue_names = {f"{prefix}{name}": tuple(keys) for name, keys in queues.items()}
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
        # Not mandatory: a routing key nobody binds (jobs.progress, say) is simply dropped.
        await exchange.publish(
            message,
            schema.routing_key(event),
            mandatory=False,
            timeout=self._confirm_timeout,
        )

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
        channel = await self._connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for queue_name, keys in self.queue_names.items():
            queue = await channel.declare_queue(queue_name, durable=True)
            for key in keys:
                await queue.bind(exchange, routing_key=key)
        log.info("connected to RabbitMQ; publishing to exchange %s", self.exchange_name)
        return exchange

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
