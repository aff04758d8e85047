"""Seeing limits (docs/flow-control.md): `GET /api/v1/limits` per limit and key, scoped to
the caller's own jobs unless an admin asks, and a queued job's `waiting_reason`.

The limit definitions are stored by the service's own sync, as at start; the jobs
come through the normal submit of a type that declares limits (tests/support/flow_handlers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from conveyor import metrics
from conveyor.store.tables import jobs, rate_buckets
from tests.api.conftest import Api, api_settings, running_api
from tests.metrics.samples import Samples

HANDLERS = "tests.support.flow_handlers"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(db_url, tmp_path, handler_modules=HANDLERS)
    async with running_api(settings) as running:
        await define_limits(running)
        yield running


async def define_limits(api: Api) -> None:
    """As an API process does at start (server.py): the registry's limits stored."""
    await api.engine.jobs.define_limits()


async def submit(api: Api, headers: dict[str, str], customer: str) -> str:
    body = {"type": "per_customer", "payload": {"customer": customer}}
    r = await api.client.post("/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def mark_running(api: Api, job_id: str) -> None:
    """As a claim would leave it (the claim itself is not what is tested here)."""
    async with api.engine.backend.db.write() as conn:
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(state="running"))


async def empty_bucket(api: Api, name: str, key: str) -> None:
    row = {"name": name, "key": key, "tokens": 0.0, "refreshed_at": datetime.now(UTC)}
    async with api.engine.backend.db.write() as conn:
        await conn.execute(insert(rate_buckets), [row])


async def limits(api: Api, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await api.client.get("/api/v1/limits", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def counts(body: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(k["name"], k["key"]): (k["running"], k["ready"]) for k in body["keys"]}


async def reason(api: Api, headers: dict[str, str], job_id: str) -> dict[str, Any] | None:
    r = await api.client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert r.status_code == 200, r.text
    found: dict[str, Any] | None = r.json()["waiting_reason"]
    return found


async def scene(api: Api) -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """Ada: three acme jobs, one running; Bob: one acme, one zeta. The admin, Ada, Bob and
    the job ids (ada's acme x3, bob's acme, bob's zeta)."""
    admin = await api.admin()
    ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
    ids = [await submit(api, ada, "acme") for _ in range(3)]
    ids += [await submit(api, bob, "acme"), await submit(api, bob, "zeta")]
    await mark_running(api, ids[0])
    return admin, ada, bob, ids


async def test_an_admin_sees_every_key_and_a_user_only_their_own(api: Api) -> None:
    admin, ada, bob, _ = await scene(api)
    await empty_bucket(api, "customer_calls", "acme")
    everything = await limits(api, admin)
    assert counts(everything) == {
        ("customer_calls", "acme"): (1, 3),
        ("customer_calls", "zeta"): (0, 1),
        ("customer_slots", "acme"): (1, 3),
        ("customer_slots", "zeta"): (0, 1),
    }
    assert {d["name"]: d["kind"] for d in everything["limits"]} == {
        "customer_calls": "rate",
        "customer_slots": "concurrency",
        "quota.running": "concurrency",  # the running quota's own limit (no default cap here)
        "per_account": "concurrency",  # partner_sync's submit limits are stored too
        "partner_api": "rate",
    }
    by_key = {(k["name"], k["key"]): k for k in everything["keys"]}
    acme_calls = by_key[("customer_calls", "acme")]
    assert acme_calls["capacity"] == 2 and 0 <= acme_calls["tokens"] < 1  # refilled to now
    assert by_key[("customer_calls", "zeta")]["tokens"] is None  # no bucket yet
    assert by_key[("customer_slots", "acme")]["max_running"] == 1
    assert everything["next_cursor"] is None

    # A user sees the keys of their own jobs, counting only their own jobs.
    assert counts(await limits(api, ada)) == {
        ("customer_calls", "acme"): (1, 2),
        ("customer_slots", "acme"): (1, 2),
    }
    assert counts(await limits(api, bob)) == {
        ("customer_calls", "acme"): (0, 1),
        ("customer_calls", "zeta"): (0, 1),
        ("customer_slots", "acme"): (0, 1),
        ("customer_slots", "zeta"): (0, 1),
    }


async def test_limits_come_a_page_at_a_time(api: Api) -> None:
    admin, *_ = await scene(api)
    seen: list[tuple[str, str]] = []
    cursor = None
    for _ in range(10):
        page = await limits(api, admin, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += list(counts(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 4
    # A cursor is a position in (limit, key) order: past the end, the page is empty.
    assert counts(await limits(api, admin, cursor="zzz/")) == {}
    assert list(counts(await limits(api, admin, cursor="customer_calls/zeta"))) == [
        ("customer_slots", "acme"),
        ("customer_slots", "zeta"),
    ]
    too_many = await api.client.get("/api/v1/limits", params={"limit": 501}, headers=admin)
    assert too_many.status_code == 422


async def test_a_queued_job_says_why_it_waits(api: Api) -> None:
    admin, ada, bob, ids = await scene(api)
    # Ada's second acme job: customer_slots holds 1 for acme, and one is running.
    held = await reason(api, ada, ids[1])
    assert held is not None and (held["kind"], held["limit"], held["key"]) == (
        "limit",
        "customer_slots",
        "acme",
    )
    assert "1 of 1 running" in held["message"]
    # Bob's zeta job: nothing holds it but its turn.
    turn = await reason(api, bob, ids[4])
    assert turn is not None and turn["kind"] == "turn"
    # A rate limit out of tokens.
    await empty_bucket(api, "customer_calls", "zeta")
    rated = await reason(api, bob, ids[4])
    assert rated is not None and (rated["kind"], rated["limit"], rated["key"]) == (
        "rate",
        "customer_calls",
        "zeta",
    )
    # Its owner's running quota: Bob may run one job at a time, and one runs.
    me = await api.client.get("/api/v1/me", headers=bob)
    patched = await api.client.patch(
        f"/api/v1/admin/users/{me.json()['id']}", json={"max_running": 1}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    fresh = await submit(api, bob, "omega")
    assert (await reason(api, bob, fresh))["kind"] == "turn"  # type: ignore[index]
    await mark_running(api, ids[3])
    quota = await reason(api, bob, fresh)
    assert quota is not None and quota["kind"] == "quota", quota
    # A running job does not wait.
    assert await reason(api, ada, ids[0]) is None


async def test_jobs_without_limits_show_nothing(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=ada)
    assert r.status_code == 201
    assert (await limits(api, ada))["keys"] == []


async def test_the_limits_route_needs_a_user(api: Api) -> None:
    r = await api.client.get("/api/v1/limits")
    assert r.status_code == 401


async def test_metrics_count_jobs_per_limit_name_not_per_key(api: Api) -> None:
    """The refresh the app runs in the background, then a scrape: one series per limit."""
    admin, *_ = await scene(api)
    engine = api.engine
    await metrics.refresh_database_gauges(
        engine.queues.counts, engine.workers.list_alive, engine.flow.limit_totals
    )
    r = await api.client.get("/metrics", headers=admin)
    assert r.status_code == 200, r.text
    s = Samples(r.text)
    assert s.get("conveyor_limit_running_jobs", limit="customer_slots") == 1
    assert s.get("conveyor_limit_ready_jobs", limit="customer_slots") == 4
    assert s.get("conveyor_limit_ready_jobs", limit="customer_calls") == 4
    assert s.label_values("conveyor_limit_ready_jobs", "limit") >= {
        "customer_slots",
        "customer_calls",
    }
    assert "acme" not in s.label_values("conveyor_limit_ready_jobs", "limit")
