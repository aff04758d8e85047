"""Webhook subscriptions, job callbacks and their delivery log: the use cases every door calls.

A target URL is checked when it is given (scheme, port, and every address its host resolves
to, under the SSRF policy) and again by the dispatcher at every attempt, since DNS may have
changed since. Signing secrets are returned once, at creation or rotation; reads never show
them, and the database holds only the nonces they are derived from (store/webhooks.py). The
delivery log is a store of its own (store/webhook_deliveries.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.domain.events import EVENT_TYPES
from conveyor.domain.webhooks import ALL_TYPES, DeliveryRecord, DeliveryState, WebhookRecord
from conveyor.domain.workflows import WORKFLOW_EVENT
from conveyor.errors import InvalidInput
from conveyor.net import BlockedUrl, FetchFailed, FetchPolicy, Resolver
from conveyor.net.resolve import checked_addresses
from conveyor.net.urls import check_url
from conveyor.store.backend import QueueBackend
from conveyor.store.webhook_deliveries import WebhookDeliveryStore
from conveyor.store.webhooks import WebhookStore

MAX_URL = 2048
ALIASES = {"all": ALL_TYPES}


@dataclass(frozen=True)
class Created:
    """A new subscription and its signing secret: the only time the secret is shown."""

    webhook: WebhookRecord
    secret: str


# A subscription may ask for the job events and for workflows' own (docs/workflows.md).
SUBSCRIBABLE = tuple(dict.fromkeys((*EVENT_TYPES, WORKFLOW_EVENT)))


def event_types(wanted: Sequence[str]) -> tuple[str, ...]:
    """The subscription's types, deduplicated; `*` (or `all`) stands for every type."""
    chosen = [ALIASES.get(name, name) for name in wanted]
    unknown = sorted({name for name in chosen if name not in (*SUBSCRIBABLE, ALL_TYPES)})
    if unknown or not chosen:
        allowed = ", ".join((*SUBSCRIBABLE, "*"))
        raise InvalidInput(f"event types must be among: {allowed}", unknown=unknown)
    return (ALL_TYPES,) if ALL_TYPES in chosen else tuple(dict.fromkeys(chosen))


class WebhookService:
    def __init__(
        self,
        store: WebhookStore,
        delivery_log: WebhookDeliveryStore,
        backend: QueueBackend,
        policy: FetchPolicy,
        resolver: Resolver | None = None,
    ) -> None:
        self.store = store
        self.delivery_log = delivery_log
        self.backend = backend
        self.policy = policy
        self.resolver = resolver  # None: the OS resolver; tests give their own

    async def check_url(self, url: str, field: str = "url") -> str:
        """The URL if it may be called now: 422 (InvalidInput) naming why not."""
        if len(url) > MAX_URL:
            raise InvalidInput(f"{field} is longer than {MAX_URL} characters", field=field)
        try:
            target = check_url(url, self.policy)
            await checked_addresses(target, self.policy, self.resolver)
        except BlockedUrl as exc:
            raise InvalidInput(f"{field}: {exc.message}", field=field, **exc.details) from exc
        except FetchFailed as exc:
            raise InvalidInput(f"{field}: {exc.message}", field=field) from exc
        return url

    # ---- subscriptions -------------------------------------------------------------------
    async def create(
        self,
        owner_id: str,
        url: str,
        types: Sequence[str] = (ALL_TYPES,),
        *,
        description: str | None = None,
        paused: bool = False,
    ) -> Created:
        wanted = event_types(types)
        await self.check_url(url)
        record, secret = await self.store.create(
            owner_id, url, wanted, description=description, paused=paused
        )
        return Created(record, secret)

    async def rotate_secret(self, webhook_id: str, owner_id: str | None) -> Created:
        """A new signing secret for the subscription, replacing the old one at once."""
        secret = await self.store.rotate_secret(webhook_id, owner_id)
        return Created(await self.store.get(webhook_id, owner_id), secret)

    async def list_webhooks(
        self, owner_id: str | None, *, after_id: str | None = None, limit: int = 100
    ) -> list[WebhookRecord]:
        return await self.store.list_webhooks(owner_id, after_id=after_id, limit=limit)

    async def get(self, webhook_id: str, owner_id: str | None) -> WebhookRecord:
        return await self.store.get(webhook_id, owner_id)

    async def update(self, webhook_id: str, owner_id: str | None, **changes: Any) -> WebhookRecord:
        """Change `url`, `event_types`, `description` or `paused`; a new URL is checked."""
        await self.store.get(webhook_id, owner_id)  # 404 before any 422 about the changes
        if "event_types" in changes:
            changes["event_types"] = event_types(changes["event_types"])
        if "url" in changes:
            await self.check_url(changes["url"])
        return await self.store.update(webhook_id, owner_id, **changes)

    async def delete(self, webhook_id: str, owner_id: str | None) -> None:
        await self.store.delete(webhook_id, owner_id)

    # ---- delivery log ----------------------------------------------------------------------
    async def deliveries_of_webhook(
        self,
        webhook_id: str,
        owner_id: str | None,
        *,
        state: DeliveryState | None = None,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRecord]:
        await self.store.get(webhook_id, owner_id)  # someone else's webhook is 404
        return await self.delivery_log.deliveries(
            webhook_id=webhook_id, state=state, after_id=after_id, limit=limit
        )

    async def deliveries_of_job(
        self,
        job_id: str,
        owner_id: str | None,
        *,
        state: DeliveryState | None = None,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRecord]:
        """Every delivery of the job's events: to subscriptions and to its callback_url."""
        await self.backend.get(job_id, owner_id)  # someone else's job is 404
        return await self.delivery_log.deliveries(
            job_id=job_id, state=state, after_id=after_id, limit=limit
        )

    async def retry_delivery(self, delivery_id: int, owner_id: str | None) -> DeliveryRecord:
        """Send a failed delivery again (its attempts start over); the dispatcher's next look,
        within WEBHOOK_POLL_INTERVAL, takes it. 404 for another user's, 409 unless failed."""
        return await self.delivery_log.retry(delivery_id, owner_id)

    # ---- job callbacks ---------------------------------------------------------------------
    async def rotate_callback_secret(self, owner_id: str) -> tuple[str, datetime]:
        """A new secret for the owner's job callbacks, replacing any old one at once."""
        return await self.store.set_callback_secret(owner_id)

    async def callback_urls(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Job id -> `callback_url` for the jobs (already read, so already allowed) that have
        one; the jobs' API output shows it."""
        return await self.store.callback_urls(job_ids)

    async def check_callbacks(self, owner_id: str, urls: Sequence[str]) -> None:
        """Job submission's check: each URL may be called, and callbacks can be signed."""
        for url in dict.fromkeys(urls):
            await self.check_url(url, "callback_url")
        if urls and not await self.store.has_callback_secret(owner_id):
            raise InvalidInput(
                "callbacks are signed with your callback secret: create it first with "
                "POST /api/v1/webhooks/callback-secret",
                field="callback_url",
            )
