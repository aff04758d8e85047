"""Webhooks: subscriptions, the callback signing secret, and the delivery log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status

from conveyor.api.deps import BIGINT_MAX, NO_STORE, Context, VerifiedUser, owner_scope
from conveyor.api.webhook_schemas import (
    CallbackSecretOut,
    DeliveryOut,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
    WebhookUpdate,
)
from conveyor.domain.webhooks import DeliveryRecord

router = APIRouter(prefix="/api/v1", tags=["webhooks"])
StateQuery = Annotated[Literal["pending", "delivered", "failed"] | None, Query()]
Cursor = Annotated[
    int | None, Query(ge=0, le=BIGINT_MAX, description="`next_cursor` of the previous page.")
]
DeliveryId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, dependencies=[NO_STORE])
async def create_webhook(body: WebhookCreate, user: VerifiedUser, ctx: Context) -> WebhookCreated:
    """Subscribe a URL to your jobs' events. The URL must be public http(s) (the SSRF guard);
    the answer carries the signing `secret`, shown this once."""
    created = await ctx.engine.webhooks.create(
        user.id, body.url, body.events, description=body.description, paused=body.paused
    )
    return WebhookCreated(**WebhookOut.of(created.webhook).model_dump(), secret=created.secret)


@router.get("/webhooks")
async def list_webhooks(
    user: VerifiedUser,
    ctx: Context,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
) -> WebhookPage:
    """Your webhooks, newest first (administrators: everyone's)."""
    size = min(limit, ctx.settings.max_page_size)
    found = await ctx.engine.webhooks.list_webhooks(
        owner_scope(user), after_id=cursor, limit=size + 1
    )
    items = [WebhookOut.of(w) for w in found[:size]]
    return WebhookPage(items=items, next_cursor=items[-1].id if len(found) > size else None)


@router.post(
    "/webhooks/callback-secret", status_code=status.HTTP_201_CREATED, dependencies=[NO_STORE]
)
async def rotate_callback_secret(user: VerifiedUser, ctx: Context) -> CallbackSecretOut:
    """Create (or replace) the secret that signs your jobs' `callback_url` deliveries.
    Shown this once; a new one takes effect for every later attempt at once."""
    secret, created_at = await ctx.engine.webhooks.rotate_callback_secret(user.id)
    return CallbackSecretOut(secret=secret, created_at=created_at)


@router.get("/webhooks/{webhook_id}")
async def get_webhook(webhook_id: str, user: VerifiedUser, ctx: Context) -> WebhookOut:
    return WebhookOut.of(await ctx.engine.webhooks.get(webhook_id, owner_scope(user)))


@router.patch("/webhooks/{webhook_id}")
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, user: VerifiedUser, ctx: Context
) -> WebhookOut:
    """Pause or resume, change the event types, the URL (checked again) or the description."""
    changes: dict[str, Any] = {
        ("event_types" if name == "events" else name): value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name == "description"
    }
    record = await ctx.engine.webhooks.update(webhook_id, owner_scope(user), **changes)
    return WebhookOut.of(record)


@router.post(
    "/webhooks/{webhook_id}/secret", status_code=status.HTTP_201_CREATED, dependencies=[NO_STORE]
)
async def rotate_webhook_secret(
    webhook_id: str, user: VerifiedUser, ctx: Context
) -> WebhookCreated:
    """A new signing secret, shown this once; the old one signs nothing from now on."""
    rotated = await ctx.engine.webhooks.rotate_secret(webhook_id, owner_scope(user))
    return WebhookCreated(**WebhookOut.of(rotated.webhook).model_dump(), secret=rotated.secret)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook_id: str, user: VerifiedUser, ctx: Context) -> Response:
    """The subscription and its delivery log; pending deliveries are not sent."""
    await ctx.engine.webhooks.delete(webhook_id, owner_scope(user))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@dataclass
class LogQuery:
    """The delivery log's filter and page: newest first, `cursor` from the previous page."""

    state: StateQuery = None
    cursor: Cursor = None
    limit: Limit = 50


LogParams = Annotated[LogQuery, Depends()]


@router.get("/webhooks/{webhook_id}/deliveries")
async def webhook_deliveries(
    webhook_id: str, user: VerifiedUser, ctx: Context, query: LogParams
) -> DeliveryPage:
    """The webhook's deliveries, newest first: state, attempts, last answer, next try."""
    size = min(query.limit, ctx.settings.max_page_size)
    found = await ctx.engine.webhooks.deliveries_of_webhook(
        webhook_id, owner_scope(user), state=query.state, after_id=query.cursor, limit=size + 1
    )
    return _page(found, size)


@router.get("/jobs/{job_id}/deliveries")
async def job_deliveries(
    job_id: str, user: VerifiedUser, ctx: Context, query: LogParams
) -> DeliveryPage:
    """Deliveries of the job's events: to your webhooks and to its `callback_url`."""
    size = min(query.limit, ctx.settings.max_page_size)
    found = await ctx.engine.webhooks.deliveries_of_job(
        job_id, owner_scope(user), state=query.state, after_id=query.cursor, limit=size + 1
    )
    return _page(found, size)


@router.post("/webhooks/deliveries/{delivery_id}/retry")
async def retry_delivery(delivery_id: DeliveryId, user: VerifiedUser, ctx: Context) -> DeliveryOut:
    """Send a failed delivery again, due now, its attempts starting over (a full retry
    schedule). Only a failed one (409 otherwise); another user's is 404."""
    return DeliveryOut.of(await ctx.engine.webhooks.retry_delivery(delivery_id, owner_scope(user)))


def _page(found: list[DeliveryRecord], size: int) -> DeliveryPage:
    items = [DeliveryOut.of(d) for d in found[:size]]
    return DeliveryPage(items=items, next_cursor=items[-1].id if len(found) > size else None)
