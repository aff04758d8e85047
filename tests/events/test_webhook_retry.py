"""Manual retry of a failed delivery, against a receiver on loopback that fails until told to
succeed: the owner puts it back, due now with its attempts starting over, and the running
dispatcher sends it; anyone else gets 404, and only a failed delivery may be retried."""

from __future__ import annotations

import asyncio

from conveyor.net.signing import verify
from tests.api.conftest import Api
from tests.events.test_webhooks import FAST, deliveries, private_api, relaying, settled
from tests.net.world import LoopbackServer, Seen, respond

__all__ = ["private_api"]  # the fixture, shared with the sink's own tests


class Switch:
    """Answers `status` to every request: 503 until a test sets it to 200."""

    def __init__(self) -> None:
        self.status = 503

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        await respond(writer, self.status, b"")


async def test_the_owner_retries_a_failed_delivery_and_it_is_sent_again(
    private_api: Api,
) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    bob = await api.user("bob@example.com")
    switch = Switch()
    server = await LoopbackServer(switch).start()
    try:
        url = f"http://127.0.0.1:{server.port}/hook"
        r = await api.client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["created"]}, headers=alice
        )
        hook, secret = r.json(), r.json()["secret"]
        log_path = f"/api/v1/webhooks/{hook['id']}/deliveries"
        async with relaying(api.engine):
            await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=alice)
            (failed,) = await settled(api, log_path, alice, 1)
            assert failed["state"] == "failed", failed
            assert failed["attempts"] == FAST["webhook_max_attempts"]
            assert failed["last_status"] == 503
            retry = f"/api/v1/webhooks/deliveries/{failed['id']}/retry"

            r = await api.client.post(retry, headers=bob)
            assert r.status_code == 404, r.text
            r = await api.client.post("/api/v1/webhooks/deliveries/999999/retry", headers=alice)
            assert r.status_code == 404, r.text
            assert len(server.seen) == FAST["webhook_max_attempts"]  # nothing moved

            switch.status = 200
            r = await api.client.post(retry, headers=alice)
            assert r.status_code == 200, r.text
            again = r.json()
            assert again["state"] == "pending" and again["attempts"] == 0
            assert again["next_attempt_at"] is not None and again["finished_at"] is None
            assert again["last_status"] == 503  # what happened last, until the next attempt
            (delivered,) = await settled(api, log_path, alice, 1)

            r = await api.client.post(retry, headers=alice)
            assert r.status_code == 409, r.text  # delivered: nothing to retry
            assert "failed" in r.json()["error"]["message"]
    finally:
        await server.stop()

    assert delivered["id"] == failed["id"] and delivered["state"] == "delivered"
    assert delivered["attempts"] == 1 and delivered["last_status"] == 200
    assert delivered["last_error"] is None
    assert len(server.seen) == FAST["webhook_max_attempts"] + 1
    last = server.seen[-1]
    assert last.headers["x-conveyor-attempt"] == "1"  # the new round's first attempt
    assert last.headers["x-conveyor-event-id"] == str(failed["event_id"])
    assert last.body == server.seen[0].body  # the same event, the same bytes
    assert verify(secret, last.headers["x-conveyor-signature"], last.body)
    assert await deliveries(api, f"{log_path}?state=failed", alice) == []
