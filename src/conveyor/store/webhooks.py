"""Webhook subscriptions, callback secrets and job callbacks; the delivery log is in
`store/webhook_deliveries.py`.

Signing secrets never reach the database: a webhook or callback-secret row keeps a random
nonce, and the secret is derived from it with the server key when it is shown (once, at
creation or rotation) and when a claimed delivery is signed (`signing_secrets`). The nonce
never leaves this module. The derivation itself (`SecretKeys` of net/signing.py) is handed in
by the composition as a `SecretDeriver`, so the store holds no key and imports nothing above
it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.domain.clock import utcnow
from conveyor.domain.ids import uuid7
from conveyor.domain.webhooks import CALLBACK_TARGET, WebhookRecord
from conveyor.errors import NotFound
from conveyor.store.database import Database
from conveyor.store.tables import callback_secrets, job_callbacks, webhook_deliveries, webhooks

WEBHOOK = "webhook"  # purposes of derived secrets: a subscription's, keyed by its id
CALLBACK = "callback"  # and a user's job-callback secret, keyed by the owner id


class SecretDeriver(Protocol):
    """Turns a row's nonce into its signing secret; the purpose and row id are under the MAC,
    so a nonce copied to another row derives nothing that row's receiver accepts."""

    def derive(self, purpose: str, row_id: str, nonce: str) -> str: ...


def new_nonce() -> str:
    """A fresh per-row nonce (256 bits): what the database keeps instead of a secret."""
    return secrets.token_urlsafe(32)


_D = webhook_deliveries


class WebhookStore:
    """Subscriptions and callback secrets: each secret is shown once, and never stored."""

    def __init__(self, db: Database, keys: SecretDeriver) -> None:
        self.db = db
        self.keys = keys

    # ---- subscriptions -------------------------------------------------------------------
    async def create(
        self,
        owner_id: str,
        url: str,
        event_types: Sequence[str],
        *,
        description: str | None = None,
        paused: bool = False,
    ) -> tuple[WebhookRecord, str]:
        """The new subscription and its signing secret (derived, never stored)."""
        now, nonce = utcnow(), new_nonce()
        values = {
            "id": uuid7(), "owner_id": owner_id, "url": url, "event_types": list(event_types),
            "secret_nonce": nonce, "description": description, "paused": paused,
            "created_at": now, "updated_at": now,
        }  # fmt: skip
        async with self.db.write() as conn:
            row = (
                await conn.execute(insert(webhooks).values(**values).returning(*webhooks.c))
            ).one()
        return _webhook(row), self.keys.derive(WEBHOOK, row.id, nonce)

    async def rotate_secret(self, webhook_id: str, owner_id: str | None) -> str:
        """A new signing secret for the subscription; the old one stops signing at once."""
        nonce = new_nonce()
        await self.update(webhook_id, owner_id, secret_nonce=nonce)
        return self.keys.derive(WEBHOOK, webhook_id, nonce)

    async def get(self, webhook_id: str, owner_id: str | None = None) -> WebhookRecord:
        query = select(webhooks).where(webhooks.c.id == webhook_id, *_owned(owner_id))
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound("no such webhook", webhook_id=webhook_id)
        return _webhook(row)

    async def list_webhooks(
        self, owner_id: str | None = None, *, after_id: str | None = None, limit: int = 100
    ) -> list[WebhookRecord]:
        """Newest first; `owner_id=None` lists every owner's (administrators)."""
        query = select(webhooks).where(*_owned(owner_id))
        if after_id is not None:
            query = query.where(webhooks.c.id < after_id)
        query = query.order_by(webhooks.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_webhook(row) for row in await conn.execute(query)]

    async def update(self, webhook_id: str, owner_id: str | None, **values: Any) -> WebhookRecord:
        if "event_types" in values:
            values["event_types"] = list(values["event_types"])
        stmt = (
            update(webhooks)
            .where(webhooks.c.id == webhook_id, *_owned(owner_id))
            .values(**values, updated_at=utcnow())
            .returning(*webhooks.c)
        )
        async with self.db.write() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        if row is None:
            raise NotFound("no such webhook", webhook_id=webhook_id)
        return _webhook(row)

    async def delete(self, webhook_id: str, owner_id: str | None = None) -> None:
        """The subscription and its delivery log (pending deliveries are never sent)."""
        async with self.db.write() as conn:
            await conn.execute(delete(_D).where(_D.c.webhook_id == webhook_id, *_owned_d(owner_id)))
            done = await conn.execute(
                delete(webhooks).where(webhooks.c.id == webhook_id, *_owned(owner_id))
            )
        if done.rowcount == 0:
            raise NotFound("no such webhook", webhook_id=webhook_id)

    # ---- callback secrets ------------------------------------------------------------------
    async def set_callback_secret(self, owner_id: str) -> tuple[str, datetime]:
        """Create or replace the owner's callback signing secret: the secret and when."""
        now, nonce = utcnow(), new_nonce()
        stmt = self.db.insert(callback_secrets).values(
            owner_id=owner_id, secret_nonce=nonce, created_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[callback_secrets.c.owner_id],
            set_={"secret_nonce": nonce, "created_at": now},
        )
        async with self.db.write() as conn:
            await conn.execute(stmt)
        return self.keys.derive(CALLBACK, owner_id, nonce), now

    async def has_callback_secret(self, owner_id: str) -> bool:
        query = select(func.count()).where(callback_secrets.c.owner_id == owner_id)
        async with self.db.read() as conn:
            return bool(await conn.scalar(query))

    async def callback_urls(self, job_ids: Iterable[str]) -> dict[str, str]:
        """The `callback_url` of those of the jobs that have one: one query for a whole page."""
        wanted = set(job_ids)
        if not wanted:
            return {}
        async with self.db.read() as conn:
            return await job_callback_urls(conn, wanted)


# ---- what the delivery log reads of subscriptions, inside the log's transaction -------------
async def active_subscriptions(
    conn: AsyncConnection, owners: set[str]
) -> dict[str, list[WebhookRecord]]:
    """The unpaused subscriptions of each of the owners."""
    query = select(webhooks).where(
        webhooks.c.owner_id.in_(sorted(owners)), webhooks.c.paused.is_(False)
    )
    found: dict[str, list[WebhookRecord]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.owner_id, []).append(_webhook(row))
    return found


async def job_callback_urls(conn: AsyncConnection, job_ids: set[str]) -> dict[str, str]:
    """Job id -> `callback_url`, for those of the jobs that have one."""
    if not job_ids:
        return {}
    query = select(job_callbacks.c.job_id, job_callbacks.c.url).where(
        job_callbacks.c.job_id.in_(sorted(job_ids))
    )
    return {row.job_id: row.url for row in await conn.execute(query)}


async def signing_secrets(
    conn: AsyncConnection, rows: Sequence[Any], keys: SecretDeriver
) -> list[str | None]:
    """The signing secret of each claimed delivery row (its subscription's, or its owner's
    callback secret), derived from the nonces; None where there is none to sign with."""
    hook_ids = sorted({r.webhook_id for r in rows if r.webhook_id})
    owners = sorted({r.owner_id for r in rows if r.target == CALLBACK_TARGET})
    found: dict[str, str] = {}
    if hook_ids:
        query = select(webhooks.c.id, webhooks.c.secret_nonce).where(webhooks.c.id.in_(hook_ids))
        for row in await conn.execute(query):
            found[row.id] = keys.derive(WEBHOOK, row.id, row.secret_nonce)
    if owners:
        query = select(callback_secrets).where(callback_secrets.c.owner_id.in_(owners))
        for row in await conn.execute(query):
            found[f"callback:{row.owner_id}"] = keys.derive(
                CALLBACK, row.owner_id, row.secret_nonce
            )
    return [found.get(r.webhook_id if r.webhook_id else f"callback:{r.owner_id}") for r in rows]


def _owned(owner_id: str | None) -> list[Any]:
    return [] if owner_id is None else [webhooks.c.owner_id == owner_id]


def _owned_d(owner_id: str | None) -> list[Any]:
    return [] if owner_id is None else [_D.c.owner_id == owner_id]


def _webhook(row: Any) -> WebhookRecord:
    return WebhookRecord(
        id=row.id, owner_id=row.owner_id, url=row.url, event_types=tuple(row.event_types),
        description=row.description, paused=bool(row.paused), created_at=row.created_at,
        updated_at=row.updated_at,
    )  # fmt: skip
