"""Sinks and relay pacing from the settings: the one place that knows which sinks exist.

A new sink (webhooks, say) plugs in here: build it when its setting is present and append
it to the list. Its `name` must stay stable, since it keys the sink's cursor.
"""

from __future__ import annotations

from conveyor.events.config import RelayConfig
from conveyor.events.sinks import Sink
from conveyor.events.webhooks import DispatchConfig, Dispatcher, WebhookSink
from conveyor.net import FetchPolicy, Resolver
from conveyor.net.signing import SecretKeys
from conveyor.settings import Settings
from conveyor.store.database import Database
from conveyor.store.webhook_deliveries import WebhookDeliveryStore


def sinks_from_settings(settings: Settings, db: Database | None = None) -> list[Sink]:
    """The configured sinks; the webhooks sink needs the database it keeps deliveries in."""
    sinks: list[Sink] = []
    if settings.amqp_url:
        from conveyor.events.rabbitmq import RabbitMQSink  # aio-pika only when used

        sinks.append(
            RabbitMQSink(
                settings.amqp_url,
                prefix=settings.amqp_prefix,
                queue_type=settings.amqp_queue_type,
            )
        )
    if settings.webhook_enabled and db is not None:
        sinks.append(webhook_sink(settings, db))
    return sinks


def webhook_sink(settings: Settings, db: Database, resolver: Resolver | None = None) -> WebhookSink:
    config = DispatchConfig(
        concurrency=settings.webhook_concurrency,
        per_endpoint=settings.webhook_per_endpoint,
        max_attempts=settings.webhook_max_attempts,
        timeout=settings.webhook_timeout,
        backoff_initial=settings.webhook_backoff_initial,
        backoff_max=settings.webhook_backoff_max,
        poll_interval=settings.webhook_poll_interval,
        retention=settings.webhook_retention_seconds,
    )
    store = WebhookDeliveryStore(db, SecretKeys(settings.resolved_secret_key()))
    policy = FetchPolicy.from_settings(settings)
    return WebhookSink(store, Dispatcher(store, policy, config, resolver))


def relay_config(settings: Settings) -> RelayConfig:
    return RelayConfig(
        poll_interval=settings.relay_poll_interval,
        batch=settings.relay_batch,
        backoff_max=settings.relay_backoff_max,
        retention=settings.events_retention_seconds,
        prune_batch=settings.prune_batch,
        lease_ttl=settings.relay_lease_seconds,
    )
