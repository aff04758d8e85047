"""Sinks and relay pacing from the settings: the one place that knows which sinks exist.

A new sink (webhooks, say) plugs in here: build it when its setting is present and append
it to the list. Its `name` must stay stable, since it keys the sink's cursor.
"""

from __future__ import annotations

from conveyor.events.config import RelayConfig
from conveyor.events.sinks import Sink
from conveyor.settings import Settings


def sinks_from_settings(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.amqp_url:
        from conveyor.events.rabbitmq import RabbitMQSink  # aio-pika only when used

        sinks.append(RabbitMQSink(settings.amqp_url, prefix=settings.amqp_prefix))
    return sinks


def relay_config(settings: Settings) -> RelayConfig:
    return RelayConfig(
        poll_interval=settings.relay_poll_interval,
        batch=settings.relay_batch,
        backoff_max=settings.relay_backoff_max,
        retention=settings.events_retention_seconds,
        lease_ttl=settings.relay_lease_seconds,
    )
