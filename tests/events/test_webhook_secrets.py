"""Webhook and callback signing secrets at rest: the database keeps only nonces.

The secret a user is shown is derived from the row's nonce with the SECRET_KEY, so no column
of any row holds it; a claimed delivery is signed with exactly the shown secret; rotating
gives a new one; and the same rows under another SECRET_KEY derive different secrets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from conveyor.net.signing import SecretKeys
from conveyor.store.database import Database
from conveyor.store.tables import callback_secrets, webhooks
from conveyor.store.webhook_deliveries import WebhookDeliveryStore
from tests.api.conftest import Api
from tests.events.test_webhooks import created_events, private_api

__all__ = ["private_api"]  # the fixture, shared with the sink's own tests


async def stored_values(db: Database) -> list[str]:
    """Every value of every webhooks and callback_secrets row, as text."""
    found: list[str] = []
    async with db.read() as conn:
        for table in (webhooks, callback_secrets):
            for row in await conn.execute(select(table)):
                found += [str(value) for value in row]
    return found


async def claimed_secrets(store: WebhookDeliveryStore, count: int) -> dict[str, str | None]:
    """Claim what is due and give it back: each claimed target's signing secret."""
    lease = datetime.now(UTC) + timedelta(minutes=1)
    claimed = await store.claim(100, lease, [], 100)
    await store.release(claimed)
    assert len(claimed) >= count
    return {d.target: d.secret for d in claimed}


async def test_the_database_holds_no_secret_and_deliveries_sign_with_the_shown_one(
    private_api: Api,
) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    r = await api.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=alice
    )
    assert r.status_code == 201, r.text
    hook_id, hook_secret = r.json()["id"], r.json()["secret"]
    r = await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
    callback_secret = r.json()["secret"]
    assert hook_secret.startswith("whsec_") and hook_secret != callback_secret

    values = await stored_values(api.engine.backend.db)
    assert len(values) > 10
    for secret in (hook_secret, callback_secret):
        body = secret.removeprefix("whsec_")
        assert not any(body in value for value in values), "a secret is stored"

    job: dict[str, Any] = {"type": "noop", "callback_url": "http://127.0.0.1:9/cb"}
    r = await api.client.post("/api/v1/jobs", json=job, headers=alice)
    assert r.status_code == 201, r.text
    await api.client.post(f"/api/v1/jobs/{r.json()['id']}/cancel", headers=alice)
    store = api.engine.webhooks.delivery_log
    events = await created_events(api.engine, 2)  # created, cancelled
    assert await store.fan_out(events, lambda e: b"{}") == 3  # 2 to the hook, 1 callback
    assert await claimed_secrets(store, 2) == {hook_id: hook_secret, "callback": callback_secret}

    # Rotation: new secrets, shown once, and what signs from then on.
    r = await api.client.post(f"/api/v1/webhooks/{hook_id}/secret", headers=alice)
    assert r.status_code == 201, r.text
    rotated = r.json()["secret"]
    assert rotated != hook_secret and r.json()["id"] == hook_id and "secret" in r.json()
    r = await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
    rotated_callback = r.json()["secret"]
    assert rotated_callback != callback_secret
    assert await claimed_secrets(store, 2) == {hook_id: rotated, "callback": rotated_callback}
    bob = await api.user("bob@example.com")
    r = await api.client.post(f"/api/v1/webhooks/{hook_id}/secret", headers=bob)
    assert r.status_code == 404
    assert (await claimed_secrets(store, 2))[hook_id] == rotated  # bob changed nothing

    # The same rows under another SECRET_KEY derive other secrets: the rows alone sign nothing.
    other = WebhookDeliveryStore(api.engine.backend.db, SecretKeys("another-secret-key"))
    elsewhere = await claimed_secrets(other, 2)
    assert elsewhere[hook_id] != rotated and elsewhere["callback"] != rotated_callback
    assert all(s is not None and s.startswith("whsec_") for s in elsewhere.values())


def test_derivation_depends_on_every_input() -> None:
    keys = SecretKeys("k1")
    one = keys.derive("webhook", "id-1", "nonce")
    assert one == SecretKeys("k1").derive("webhook", "id-1", "nonce")  # deterministic
    others = {
        SecretKeys("k2").derive("webhook", "id-1", "nonce"),
        keys.derive("callback", "id-1", "nonce"),
        keys.derive("webhook", "id-2", "nonce"),
        keys.derive("webhook", "id-1", "nonce2"),
        keys.derive("webhook", "id-1\0nonce", ""),
    }
    assert one not in others and len(others) == 5
