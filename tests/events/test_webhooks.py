"""The webhooks sink end to end: real jobs, a real worker and relay, a receiver on loopback.

Every request the receiver gets is checked against the secret shown once at creation (or the
callback secret); it answers 500 a few times, and the retries (same event id) and the final
success show in the delivery log over the API. Without ALLOW_PRIVATE_URLS nothing reaches a
private address: registration is refused, and a name that resolves private at send time fails
the delivery. Redelivered batches add no rows; user B sees nothing of user A's.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from conveyor.domain import events as ev
from conveyor.domain.webhooks import Settled
from conveyor.events.config import RelayConfig
from conveyor.events.relay import Relay
from conveyor.events.setup import webhook_sink
from conveyor.events.webhooks import DispatchConfig, backoff, retry_after
from conveyor.net import Resolver
from conveyor.net.signing import SecretKeys, verify
from conveyor.runtime import Engine
from conveyor.store.backend import QueueBackend
from conveyor.store.webhook_deliveries import WebhookDeliveryStore
from conveyor.store.webhooks import WebhookStore
from tests.api.conftest import Api, api_settings, running_api
from tests.events.conftest import finished_jobs
from tests.net.world import PUBLIC, FakeDns, LoopbackServer, Seen, respond
from tests.support.engine import processing
from tests.support.processes import Cluster, eventually

FAST = {
    "webhook_backoff_initial": 0.05,
    "webhook_backoff_max": 0.2,
    "webhook_poll_interval": 0.05,
    "webhook_max_attempts": 5,
    "webhook_timeout": 5.0,
}
KEY = "a-secret-key-for-the-relay-processes"  # their SECRET_KEY: it derives the secrets


class Receiver:
    """Answers 500 to the first `failures` requests of each event id, then 200; a path in
    `fixed` always gets its status. Each answer takes `delay` seconds."""

    def __init__(self, failures: int = 0, fixed: dict[str, int] | None = None, delay: float = 0):
        self.failures = failures
        self.fixed = fixed or {}
        self.delay = delay
        self.tries: dict[tuple[str, str], int] = {}

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        key = (seen.path, seen.headers.get("x-conveyor-event-id", ""))
        self.tries[key] = self.tries.get(key, 0) + 1
        status = 500 if self.tries[key] <= self.failures else 200
        await asyncio.sleep(self.delay)
        await respond(writer, self.fixed.get(seen.path, status), b"ok")


@asynccontextmanager
async def receiving(
    failures: int = 0, fixed: dict[str, int] | None = None, delay: float = 0
) -> AsyncIterator[LoopbackServer]:
    server = await LoopbackServer(Receiver(failures, fixed, delay)).start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def relaying(engine: Engine, resolver: Resolver | None = None) -> AsyncIterator[Relay]:
    """The relay with only the webhooks sink, paced for tests, stopped afterwards."""
    sink = webhook_sink(engine.settings, engine.backend.db, resolver)
    relay = Relay(engine.backend, [sink], RelayConfig(poll_interval=0.05, lease_ttl=2.0))
    running = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        assert await running == 0


@pytest.fixture
async def private_api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """An app that may call loopback (ALLOW_PRIVATE_URLS), with fast webhook retries."""
    settings = api_settings(db_url, tmp_path, allow_private_urls=True, **FAST)
    async with running_api(settings) as running:
        yield running


async def deliveries(api: Api, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def settled(api: Api, path: str, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The log at `path` once it holds `count` deliveries, none of them pending."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        found[:] = await deliveries(api, path, headers)
        return len(found) >= count and all(d["state"] != "pending" for d in found)

    await eventually(done, timeout=30, what=f"{count} settled deliveries at {path}")
    return found


async def created_events(engine: Engine, count: int) -> list[ev.Event]:
    return await created_events_of(engine.backend, count)


async def created_events_of(backend: QueueBackend, count: int) -> list[ev.Event]:
    """At least `count` events of users' jobs, once readable (PostgreSQL's horizon may lag);
    not those of the account mail (verification codes) the system queued."""
    found: list[ev.Event] = []

    async def there() -> bool:
        events = await backend.read_events(ev.Position(), 10_000)
        found[:] = [event for event in events if event.job_type != "account_mail"]
        return len(found) >= count

    await eventually(there, timeout=30, what=f"{count} events")
    return found


def webhook_stores(backend: QueueBackend) -> tuple[WebhookStore, WebhookDeliveryStore]:
    """The subscriptions and the delivery log, deriving secrets as the relay processes do."""
    keys = SecretKeys(KEY)
    return WebhookStore(backend.db, keys), WebhookDeliveryStore(backend.db, keys)


def attempts(outcome: str) -> float:
    found = REGISTRY.get_sample_value("conveyor_webhook_attempts_total", {"outcome": outcome})
    return found or 0.0


def signed(secret: str, requests: Sequence[Seen]) -> bool:
    return all(verify(secret, r.headers["x-conveyor-signature"], r.body) for r in requests)


# ---- the whole path ------------------------------------------------------------------------------
async def test_real_jobs_reach_a_subscription_and_a_callback_signed_with_retries(
    private_api: Api,
) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    async with receiving(failures=2) as server:
        base = f"http://127.0.0.1:{server.port}"
        r = await api.client.post(
            "/api/v1/webhooks",
            json={"url": f"{base}/hook", "events": ["created", "completed"]},
            headers=alice,
        )
        assert r.status_code == 201, r.text
        hook, hook_secret = r.json(), r.json()["secret"]
        r = await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
        assert r.status_code == 201, r.text
        callback_secret = r.json()["secret"]
        jobs = [{"type": "noop", "callback_url": f"{base}/done?job={i}"} for i in range(3)]
        before = {outcome: attempts(outcome) for outcome in ("delivered", "retrying")}
        async with processing(api.engine), relaying(api.engine):
            r = await api.client.post("/api/v1/jobs/batch", json={"jobs": jobs}, headers=alice)
            assert r.status_code == 201, r.text
            ids = {job["id"] for job in r.json()}
            log = await settled(api, f"/api/v1/webhooks/{hook['id']}/deliveries", alice, 6)
            for job_id in ids:
                await settled(api, f"/api/v1/jobs/{job_id}/deliveries", alice, 3)

    # 3 jobs x (created, completed) to the subscription; each answered 500 twice, then 200.
    assert sorted(d["event_type"] for d in log) == ["completed"] * 3 + ["created"] * 3
    assert {d["job_id"] for d in log} == ids
    for delivery in log:
        assert delivery["state"] == "delivered", delivery
        assert delivery["attempts"] == 3 and delivery["last_status"] == 200
        assert delivery["next_attempt_at"] is None and delivery["finished_at"] is not None
    hook_requests = [s for s in server.seen if s.path == "/hook"]
    assert len(hook_requests) == 18  # every event three times, with the same event id
    by_event: dict[str, list[Seen]] = {}
    for seen in hook_requests:
        by_event.setdefault(seen.headers["x-conveyor-event-id"], []).append(seen)
    assert len(by_event) == 6
    for tries in by_event.values():
        assert [t.headers["x-conveyor-attempt"] for t in tries] == ["1", "2", "3"]
        assert len({t.body for t in tries}) == 1  # the same body each time
    assert signed(hook_secret, hook_requests)
    assert not signed(callback_secret, hook_requests)

    body = json.loads(hook_requests[-1].body)
    assert body["schema"] == "conveyor.event/1" and body["job"]["id"] in ids
    assert hook_requests[-1].headers["x-conveyor-event-type"] == body["type"]
    assert str(body["event_id"]) == hook_requests[-1].headers["x-conveyor-event-id"]

    # The metric moved: 9 deliveries (6 events, 3 callbacks), each after two retries.
    assert attempts("delivered") - before["delivered"] == 9
    assert attempts("retrying") - before["retrying"] == 18
    # Callbacks: only the terminal event, signed with the callback secret.
    callbacks = [s for s in server.seen if s.path == "/done"]
    assert {json.loads(s.body)["type"] for s in callbacks} == {"completed"}
    assert {json.loads(s.body)["job"]["id"] for s in callbacks} == ids
    assert len(callbacks) == 9 and signed(callback_secret, callbacks)
    # Later reads never show a secret.
    r = await api.client.get(f"/api/v1/webhooks/{hook['id']}", headers=alice)
    assert r.status_code == 200 and "secret" not in r.json()
    r = await api.client.get("/api/v1/webhooks", headers=alice)
    assert [w["id"] for w in r.json()["items"]] == [hook["id"]]
    assert "secret" not in r.json()["items"][0]


async def test_a_receiver_that_keeps_failing_is_given_up_on_and_a_4xx_is_not_retried(
    private_api: Api,
) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    async with receiving(failures=100, fixed={"/gone": 410}) as server:
        base = f"http://127.0.0.1:{server.port}"
        hooks = []
        for path in ("/down", "/gone"):
            r = await api.client.post(
                "/api/v1/webhooks",
                json={"url": f"{base}{path}", "events": ["created"]},
                headers=alice,
            )
            hooks.append(r.json())
        async with processing(api.engine), relaying(api.engine):
            await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=alice)
            (down,) = await settled(api, f"/api/v1/webhooks/{hooks[0]['id']}/deliveries", alice, 1)
            (gone,) = await settled(api, f"/api/v1/webhooks/{hooks[1]['id']}/deliveries", alice, 1)
    assert down["state"] == "failed" and down["attempts"] == FAST["webhook_max_attempts"]
    assert down["last_status"] == 500 and "gave up after 5 attempts" in down["last_error"]
    assert [s.path for s in server.seen].count("/down") == FAST["webhook_max_attempts"]
    assert gone["state"] == "failed" and gone["attempts"] == 1 and gone["last_status"] == 410
    assert [s.path for s in server.seen].count("/gone") == 1
    path = f"/api/v1/webhooks/{hooks[0]['id']}/deliveries"
    for state, count in (("failed", 1), ("pending", 0), ("delivered", 0)):
        assert len(await deliveries(api, f"{path}?state={state}", alice)) == count


# ---- the SSRF guard ------------------------------------------------------------------------------
async def test_no_delivery_to_a_private_address_without_the_setting(
    db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(db_url, tmp_path, **FAST)  # ALLOW_PRIVATE_URLS off (the default)
    async with running_api(settings) as api, receiving() as server:
        alice = await api.user("alice@example.com")
        loopback = f"http://127.0.0.1:{server.port}/hook"
        for url in (loopback, "http://127.0.0.1/hook", "http://[::1]/x", "http://10.0.0.7/x"):
            r = await api.client.post("/api/v1/webhooks", json={"url": url}, headers=alice)
            assert r.status_code == 422, (url, r.text)
        r = await api.client.post(
            "/api/v1/webhooks", json={"url": "ftp://a.example/"}, headers=alice
        )
        assert r.status_code == 422
        await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
        job = {"type": "noop", "callback_url": "http://127.0.0.1/cb"}
        r = await api.client.post("/api/v1/jobs", json=job, headers=alice)
        assert r.status_code == 422, r.text
        r = await api.client.post("/api/v1/jobs/batch", json={"jobs": [job]}, headers=alice)
        assert r.status_code == 422, r.text

        # A name that is public when registered and loopback when sent (DNS rebinding).
        dns = FakeDns({"hooks.example": [[PUBLIC], ["127.0.0.1"]]})
        api.engine.webhooks.resolver = dns
        r = await api.client.post(
            "/api/v1/webhooks", json={"url": "http://hooks.example/hook"}, headers=alice
        )
        assert r.status_code == 201, r.text
        hook = r.json()
        r = await api.client.patch(
            f"/api/v1/webhooks/{hook['id']}", json={"url": loopback}, headers=alice
        )
        assert r.status_code == 422, r.text  # a changed URL is checked again
        async with processing(api.engine), relaying(api.engine, dns):
            r = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=alice)
            path = f"/api/v1/webhooks/{hook['id']}/deliveries"
            log = await settled(api, path, alice, 3)  # created, started, completed
    assert server.seen == []
    for delivery in log:
        assert delivery["state"] == "failed" and delivery["attempts"] == 1, delivery
        assert "127.0.0.1" in delivery["last_error"] and delivery["last_status"] is None


async def test_callbacks_need_a_callback_secret_first(private_api: Api) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    job = {"type": "noop", "callback_url": "http://127.0.0.1:9/cb"}
    r = await api.client.post("/api/v1/jobs", json=job, headers=alice)
    assert r.status_code == 422 and "callback-secret" in r.json()["error"]["message"]
    r = await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
    first = r.json()["secret"]
    r = await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
    assert r.json()["secret"] != first  # rotated
    r = await api.client.post("/api/v1/jobs", json=job, headers=alice)
    assert r.status_code == 201, r.text


# ---- who sees what -------------------------------------------------------------------------------
async def test_user_b_cannot_see_or_change_user_a_webhooks_or_deliveries(
    private_api: Api,
) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    bob = await api.user("bob@example.com")
    r = await api.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=alice
    )
    hook = r.json()
    r = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=alice)
    job_id = r.json()["id"]
    for method, path in [
        ("GET", f"/api/v1/webhooks/{hook['id']}"),
        ("DELETE", f"/api/v1/webhooks/{hook['id']}"),
        ("GET", f"/api/v1/webhooks/{hook['id']}/deliveries"),
        ("GET", f"/api/v1/jobs/{job_id}/deliveries"),
    ]:
        r = await api.client.request(method, path, headers=bob)
        assert r.status_code == 404, (method, path, r.text)
    r = await api.client.patch(f"/api/v1/webhooks/{hook['id']}", json={"paused": True}, headers=bob)
    assert r.status_code == 404
    r = await api.client.get("/api/v1/webhooks", headers=bob)
    assert r.json()["items"] == []
    admin = await api.admin()
    r = await api.client.get("/api/v1/webhooks", headers=admin)
    assert [w["id"] for w in r.json()["items"]] == [hook["id"]]

    r = await api.client.patch(
        f"/api/v1/webhooks/{hook['id']}",
        json={"paused": True, "events": ["failed", "all"]},
        headers=alice,
    )
    assert r.status_code == 200 and r.json()["paused"] and r.json()["events"] == ["*"]
    r = await api.client.delete(f"/api/v1/webhooks/{hook['id']}", headers=alice)
    assert r.status_code == 204
    r = await api.client.get(f"/api/v1/webhooks/{hook['id']}", headers=alice)
    assert r.status_code == 404


# ---- at least once, no duplicates --------------------------------------------------------------
async def test_a_redelivered_batch_adds_no_delivery_rows(private_api: Api) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    r = await api.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=alice
    )
    hook = r.json()
    r = await api.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/p", "paused": True}, headers=alice
    )
    paused = r.json()
    await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * 4}, headers=alice
    )
    sink = webhook_sink(api.engine.settings, api.engine.backend.db)
    events = await created_events(api.engine, 4)
    assert len(events) == 4
    assert await sink.store.fan_out(events, lambda e: b"{}") == 4
    # The relay crashed before saving its cursor: the same batch comes again, and again.
    await sink.deliver(events)
    await sink.deliver(events[1:])
    log = await deliveries(api, f"/api/v1/webhooks/{hook['id']}/deliveries", alice)
    assert sorted(d["event_id"] for d in log) == sorted(e.id for e in events)
    assert await deliveries(api, f"/api/v1/webhooks/{paused['id']}/deliveries", alice) == []


async def test_two_dispatchers_never_claim_the_same_delivery(private_api: Api) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    await api.client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=alice)
    await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * 40}, headers=alice
    )
    one = webhook_sink(api.engine.settings, api.engine.backend.db).store
    events = await created_events(api.engine, 40)
    await one.fan_out(events, lambda e: b"{}")
    other = webhook_sink(api.engine.settings, api.engine.backend.db).store
    lease = datetime.now(UTC) + timedelta(minutes=1)
    claimed: list[int] = []
    for _ in range(20):  # rounds of concurrent claims: a row locked by one is skipped by all
        batches = await asyncio.gather(*(s.claim(8, lease, [], 100) for s in (one, other) * 3))
        claimed += [d.id for batch in batches for d in batch]
    assert len(claimed) == len(set(claimed)) == 40
    assert await one.claim(8, lease, [], 100) == []  # all leased


async def test_one_endpoint_holds_at_most_its_share_of_a_claim(private_api: Api) -> None:
    api = private_api
    alice = await api.user("alice@example.com")
    for url in ("http://127.0.0.1:9/slow", "http://127.0.0.2:9/ok"):
        await api.client.post("/api/v1/webhooks", json={"url": url}, headers=alice)
    await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * 10}, headers=alice
    )
    store = webhook_sink(api.engine.settings, api.engine.backend.db).store
    events = await created_events(api.engine, 10)
    assert await store.fan_out(events, lambda e: b"{}") == 20
    lease = datetime.now(UTC) + timedelta(minutes=1)
    first = await store.claim(10, lease, [], 3)
    assert sorted(d.endpoint for d in first) == ["127.0.0.1:9"] * 3 + ["127.0.0.2:9"] * 3
    rest = await store.claim(10, lease, ["127.0.0.1:9"], 3)
    assert {d.endpoint for d in rest} == {"127.0.0.2:9"}


# ---- the retry schedule --------------------------------------------------------------------------
def test_backoff_doubles_with_jitter_and_honours_a_longer_retry_after() -> None:
    config = DispatchConfig(backoff_initial=2.0, backoff_max=60.0)
    for attempt, base in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)]:
        delay = backoff(attempt, config)
        assert base / 2 <= delay <= base
    assert backoff(1, config, retry_after=30.0) == 30.0
    assert retry_after("120") == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None


# ---- a relay process killed mid-delivery ---------------------------------------------------------
@pytest.mark.slow
async def test_a_killed_relay_adds_no_duplicate_rows_and_the_next_one_delivers_all(
    backend: QueueBackend, cluster: Cluster
) -> None:
    settings = {
        "allow_private_urls": "true", "relay_batch": "10", "relay_poll_interval": "0.05",
        "relay_lease_seconds": "1", "webhook_timeout": "2", "webhook_poll_interval": "0.05",
        "webhook_backoff_initial": "0.05", "webhook_backoff_max": "0.2", "secret_key": KEY,
    }  # fmt: skip
    hooks, store = webhook_stores(backend)
    async with receiving(delay=0.02) as server:
        _, secret = await hooks.create("system", f"http://127.0.0.1:{server.port}/hook", ["*"])
        await finished_jobs(backend, 40)  # 120 events: created, started, completed
        first = cluster.spawn("results-1", ["results"], settings)
        await eventually(lambda: len(server.seen) >= 30, timeout=60, what="some deliveries")
        first.send(signal.SIGKILL)  # mid-stream: attempts in flight, batches not yet saved
        assert await first.wait_exit(10) == -signal.SIGKILL
        second = cluster.spawn("results-2", ["results"], settings)

        async def all_delivered() -> bool:
            done = await store.deliveries(state="delivered", limit=1000)
            return len(done) >= 120

        await eventually(all_delivered, timeout=90, what="every delivery, after the restart")
        second.send(signal.SIGTERM)
        assert await second.wait_exit(15) == 0
    rows = await store.deliveries(limit=1000)
    assert len(rows) == len({r.event_id for r in rows}) == 120  # one row per event
    assert all(r.state == "delivered" for r in rows)
    received = Counter(s.headers["x-conveyor-event-id"] for s in server.seen)
    assert set(received) == {str(r.event_id) for r in rows}
    assert signed(secret, server.seen)
    # Only attempts in flight when the relay died are seen twice (at most its concurrency).
    assert sum(n - 1 for n in received.values()) <= 16


@pytest.mark.slow
async def test_two_relay_processes_send_each_delivery_once(
    backend: QueueBackend, cluster: Cluster
) -> None:
    settings = {
        "allow_private_urls": "true", "relay_poll_interval": "0.05",
        "webhook_poll_interval": "0.05", "webhook_concurrency": "8", "secret_key": KEY,
    }  # fmt: skip
    hooks, store = webhook_stores(backend)
    async with receiving(delay=0.01) as server:
        await hooks.create("system", f"http://127.0.0.1:{server.port}/hook", ["*"])
        cluster.spawn("results-1", ["results"], settings)
        cluster.spawn("results-2", ["results"], settings)
        await asyncio.sleep(1.0)  # both up: one fans out, both send
        await finished_jobs(backend, 60)

        async def all_delivered() -> bool:
            return len(await store.deliveries(state="delivered", limit=1000)) >= 180

        await eventually(all_delivered, timeout=90, what="every delivery")
    received = Counter(s.headers["x-conveyor-event-id"] for s in server.seen)
    assert len(received) == 180 and set(received.values()) == {1}  # each sent exactly once
    senders = Counter(s.headers["x-conveyor-delivery"] for s in server.seen)
    assert len(senders) == 180


async def test_finished_deliveries_are_pruned_after_retention_and_pending_ones_kept(
    backend: QueueBackend,
) -> None:
    hooks, store = webhook_stores(backend)
    await hooks.create("system", "http://127.0.0.1:9/a", ["*"])
    await finished_jobs(backend, 3)
    events = await created_events_of(backend, 9)
    assert await store.fan_out(events, lambda e: b"{}") == 9
    lease = datetime.now(UTC) + timedelta(minutes=1)
    claimed = await store.claim(9, lease, [], 9)
    outcomes = [Settled(d.id, d.attempt, "delivered", status=200) for d in claimed[:4]]
    outcomes += [Settled(d.id, d.attempt, "failed", error="no") for d in claimed[4:6]]
    await store.settle(outcomes)
    await store.release(claimed[6:])
    assert await store.prune(datetime.now(UTC) - timedelta(hours=1)) == 0  # not old enough
    assert await store.prune(datetime.now(UTC) + timedelta(seconds=1), batch=2) == 6
    left = await store.deliveries()
    assert [d.state for d in left] == ["pending"] * 3 and all(d.attempts == 0 for d in left)


async def test_a_workflows_end_reaches_a_subscription_to_workflow_events(
    private_api: Api,
) -> None:
    """A subscription to `workflow` gets the workflow's settled event (its id in
    X-Conveyor-Job, the `workflow` object in the body) and none of the steps' events."""
    api = private_api
    alice = await api.user("alice@example.com")
    async with receiving() as server:
        hook = await api.client.post(
            "/api/v1/webhooks",
            json={"url": f"http://127.0.0.1:{server.port}/wf", "events": ["workflow"]},
            headers=alice,
        )
        assert hook.status_code == 201, hook.text
        body = {
            "name": "pair",
            "steps": [
                {"name": "a", "type": "noop"},
                {"name": "b", "type": "noop", "depends_on": ["a"]},
            ],
        }
        async with processing(api.engine), relaying(api.engine):
            r = await api.client.post("/api/v1/workflows", json=body, headers=alice)
            assert r.status_code == 201, r.text
            wid = r.json()["id"]
            log = await settled(api, f"/api/v1/webhooks/{hook.json()['id']}/deliveries", alice, 1)

    assert [(d["event_type"], d["job_id"], d["state"]) for d in log] == [
        ("workflow", wid, "delivered")
    ]
    (seen,) = [s for s in server.seen if s.path == "/wf"]
    assert seen.headers["x-conveyor-event-type"] == "workflow"
    assert seen.headers["x-conveyor-job"] == wid
    message = json.loads(seen.body)
    assert message["workflow"] == {
        "id": wid, "name": "pair", "owner_id": message["job"]["owner_id"], "state": "completed"
    }  # fmt: skip
    assert message["job"]["id"] == wid and message["job"]["state"] == "completed"
