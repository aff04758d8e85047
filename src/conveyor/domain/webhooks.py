"""Webhook subscriptions and their deliveries, as the services and the dispatcher see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from conveyor.domain import events as ev

ALL_TYPES = "*"
CALLBACK_TARGET = "callback"
# What a job's callback_url receives: the end of the job, however it ended.
CALLBACK_TYPES = frozenset({ev.COMPLETED, ev.FAILED, ev.CANCELLED})
DeliveryState = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    owner_id: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    paused: bool
    created_at: datetime
    updated_at: datetime

    def wants(self, event: ev.Event) -> bool:
        """Whether this subscription takes `event`: its type, and no older than itself."""
        typed = ALL_TYPES in self.event_types or event.type in self.event_types
        return typed and event.created_at >= self.created_at


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    event_id: int
    event_type: str
    target: str
    webhook_id: str | None
    job_id: str
    owner_id: str
    url: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery: everything one attempt needs. `attempt` counts this one."""

    id: int
    event_id: int
    event_type: str
    job_id: str
    target: str
    url: str
    endpoint: str
    body: bytes
    attempt: int
    secret: str | None


@dataclass(frozen=True, slots=True)
class Settled:
    """How one attempt ended: delivered, failed for good, or pending again at `retry_at`."""

    id: int
    attempt: int
    state: DeliveryState
    status: int | None = None
    error: str | None = None
    retry_at: datetime | None = None


def endpoint_of(url: str) -> str:
    """`host:port` of a URL: what the per-endpoint cap counts."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"[:300]
