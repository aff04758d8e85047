"""Request and response bodies of the webhooks API (subscriptions, callback secret, log)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from conveyor.api.schemas import Strict
from conveyor.domain.webhooks import DeliveryRecord, WebhookRecord

EventTypeName = Literal[
    "created", "started", "progress", "retrying", "completed", "failed", "cancelled", "queued",
    "skipped", "waiting", "workflow", "*", "all",
]  # fmt: skip


class WebhookCreate(Strict):
    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/hooks"])
    events: list[EventTypeName] = Field(
        default_factory=lambda: list[EventTypeName](["*"]),
        min_length=1,
        max_length=10,
        description="Event types to receive; `*` (or `all`, the default) for every type.",
    )
    description: str | None = Field(None, max_length=200)
    paused: StrictBool = False


class WebhookUpdate(Strict):
    url: str | None = Field(None, min_length=1, max_length=2048)
    events: list[EventTypeName] | None = Field(None, min_length=1, max_length=10)
    description: str | None = Field(None, max_length=200)
    paused: StrictBool | None = Field(None, description="Paused: no new deliveries are made.")


class WebhookOut(BaseModel):
    id: str
    owner_id: str
    url: str
    events: list[str]
    description: str | None
    paused: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, w: WebhookRecord) -> WebhookOut:
        return cls(
            id=w.id, owner_id=w.owner_id, url=w.url, events=list(w.event_types),
            description=w.description, paused=w.paused, created_at=w.created_at,
            updated_at=w.updated_at,
        )  # fmt: skip


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signs every delivery. Shown once: store it now.")


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class CallbackSecretOut(BaseModel):
    secret: str = Field(description="Signs your jobs' callbacks. Shown once: store it now.")
    created_at: datetime


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    event_type: str
    target: str = Field(description="The webhook's id, or `callback` (the job's callback_url).")
    webhook_id: str | None
    job_id: str
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="The receiver's last HTTP status, if any.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried.")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=d.id, event_id=d.event_id, event_type=d.event_type, target=d.target,
            webhook_id=d.webhook_id, job_id=d.job_id, url=d.url, state=d.state,
            attempts=d.attempts, last_status=d.last_status, last_error=d.last_error,
            next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
            created_at=d.created_at, updated_at=d.updated_at, finished_at=d.finished_at,
        )  # fmt: skip


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None = Field(None, description="Pass as `cursor` for the next page.")
