"""Quotas (docs/flow-control.md, "Quotas"): a submit beyond the owner's queued cap is 429
`quota_exceeded` and stores nothing, checked in the transaction that inserts; an admin sets a
user's caps and fair-dispatch weight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from conveyor.store.tables import jobs
from tests.api.conftest import Api, api_settings, running_api
from tests.api.test_security_support import error_of


async def submit(api: Api, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.client.post("/api/v1/jobs", json={"type": "noop", **body}, headers=headers)


async def batch(api: Api, headers: dict[str, str], size: int) -> httpx.Response:
    jobs_ = [{"type": "noop"}] * size
    return await api.client.post("/api/v1/jobs/batch", json={"jobs": jobs_}, headers=headers)


async def stored(api: Api) -> int:
    """Jobs committed (any owner), counted on a connection of its own."""
    async with api.engine.backend.db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(jobs)) or 0)


def assert_over_quota(response: httpx.Response, cap: int) -> None:
    assert response.status_code == 429, response.text
    error = error_of(response)
    assert error["code"] == "quota_exceeded"
    assert f"at most {cap} jobs may wait" in error["message"]
    assert error["details"]["max_queued"] == cap


async def user_id(api: Api, headers: dict[str, str]) -> str:
    me = await api.client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


async def set_flow(api: Api, who: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.client.patch(f"/api/v1/admin/users/{who}", json=body, headers=headers)


@pytest.fixture
async def capped(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app with a default queued quota of 3 per user."""
    async with running_api(api_settings(db_url, tmp_path, quota_max_queued=3)) as running:
        yield running


async def test_a_submit_over_the_queued_quota_is_429_and_stores_nothing(capped: Api) -> None:
    api = capped
    ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
    base = await stored(api)
    assert (await batch(api, ada, 2)).status_code == 201
    # A batch is all or nothing: 2 + 2 > 3, none of the second batch is stored.
    over = await batch(api, ada, 2)
    assert_over_quota(over, 3)
    assert error_of(over)["details"] == {"max_queued": 3, "waiting": 2, "requested": 2}
    assert await stored(api) == base + 2
    # A job scheduled for later waits too: it counts.
    later = await submit(api, ada, run_at="2999-01-01T00:00:00Z")
    assert later.status_code == 201, later.text
    assert_over_quota(await submit(api, ada), 3)
    assert await stored(api) == base + 3
    # Another user's quota is their own.
    assert (await batch(api, bob, 3)).status_code == 201
    # Running or finished jobs no longer wait: a cancelled one frees its place.
    cancelled = await api.client.post(f"/api/v1/jobs/{later.json()['id']}/cancel", headers=ada)
    assert cancelled.status_code == 200, cancelled.text
    assert (await submit(api, ada)).status_code == 201
    assert await stored(api) == base + 7


async def test_a_batch_larger_than_the_cap_is_refused_whole(capped: Api) -> None:
    ada = await capped.user("ada@example.com")
    base = await stored(capped)
    assert_over_quota(await batch(capped, ada, 4), 3)
    assert await stored(capped) == base


async def test_a_request_over_quota_fails_alone_in_its_group(capped: Api) -> None:
    """Concurrent submits share group transactions (services/intake.py): those beyond the cap
    are refused, the others commit, and the cap holds exactly."""
    ada, bob = await capped.user("ada@example.com"), await capped.user("bob@example.com")
    base = await stored(capped)
    answers = await asyncio.gather(
        *(submit(capped, who, payload={"n": n}) for n in range(12) for who in (ada, bob))
    )
    codes = [r.status_code for r in answers]
    assert sorted(codes) == [201] * 6 + [429] * 18, codes
    assert all(error_of(r)["code"] == "quota_exceeded" for r in answers if r.status_code == 429)
    assert await stored(capped) == base + 6


async def test_two_api_processes_at_the_edge_never_exceed_the_cap(
    db_url: str, tmp_path: Path
) -> None:
    """Two apps with pools of their own submit for one user at once: two transactions race
    at the cap, and the owner's row lock (PostgreSQL) or the single writer (SQLite) makes
    the second count what the first inserted."""
    settings = api_settings(db_url, tmp_path, quota_max_queued=5)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(running_api(settings))
        two = await stack.enter_async_context(running_api(settings))
        ada = await one.user("ada@example.com")
        base = await stored(one)
        for _ in range(3):
            answers = await asyncio.gather(
                *(submit(api, ada, payload={"n": n}) for n in range(8) for api in (one, two))
            )
            assert await stored(one) - base <= 5
        created = [r for r in answers if r.status_code == 201]
        assert await stored(one) == base + 5
        assert not created  # the last round found the cap reached


async def test_an_admin_sets_a_users_quota_and_weight(capped: Api) -> None:
    api = capped
    admin, ada = await api.admin(), await api.user("ada@example.com")
    ada_id = await user_id(api, ada)
    assert (await batch(api, ada, 3)).status_code == 201
    assert_over_quota(await submit(api, ada), 3)

    raised = await set_flow(api, ada_id, admin, max_queued=5, fair_weight=2.5, max_running=4)
    assert raised.status_code == 200, raised.text
    assert {k: raised.json()[k] for k in ("max_queued", "fair_weight", "max_running")} == {
        "max_queued": 5,
        "fair_weight": 2.5,
        "max_running": 4,
    }
    assert (await batch(api, ada, 2)).status_code == 201
    assert_over_quota(await submit(api, ada), 5)

    lowered = await set_flow(api, ada_id, admin, max_queued=1)
    assert lowered.json()["max_queued"] == 1 and lowered.json()["fair_weight"] == 2.5
    assert_over_quota(await submit(api, ada), 1)
    # 0 is no cap at all; null is the server's default again.
    assert (await set_flow(api, ada_id, admin, max_queued=0)).json()["max_queued"] == 0
    assert (await batch(api, ada, 10)).status_code == 201
    back = await set_flow(api, ada_id, admin, max_queued=None, fair_weight=None)
    assert back.json()["max_queued"] is None and back.json()["fair_weight"] == 1.0
    assert_over_quota(await submit(api, ada), 3)
    listed = await api.client.get("/api/v1/admin/users", headers=admin)
    mine = next(u for u in listed.json() if u["id"] == ada_id)
    assert mine["max_running"] == 4 and mine["max_queued"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"fair_weight": 0},
        {"fair_weight": -1},
        {"fair_weight": 1000.5},
        {"max_queued": -1},
        {"max_running": 2**40},
        {"max_queued": 1.5},
    ],
)
async def test_flow_settings_out_of_range_are_refused(api: Api, body: dict[str, Any]) -> None:
    admin, ada = await api.admin(), await api.user("ada@example.com")
    ada_id = await user_id(api, ada)
    refused = await set_flow(api, ada_id, admin, **body)
    assert refused.status_code == 422, refused.text
    me = await api.client.get("/api/v1/admin/users?limit=1000", headers=admin)
    mine = next(u for u in me.json() if u["id"] == ada_id)
    assert (mine["fair_weight"], mine["max_queued"], mine["max_running"]) == (1.0, None, None)


async def test_only_an_admin_changes_flow_settings(api: Api) -> None:
    ada, bob = await api.user("ada@example.com"), await api.user("bob@example.com")
    refused = await set_flow(api, await user_id(api, ada), bob, max_queued=1000)
    assert refused.status_code == 403, refused.text
    refused = await set_flow(api, await user_id(api, ada), ada, max_queued=0)
    assert refused.status_code == 403, refused.text


async def test_an_uncapped_user_pays_no_extra_statement(api: Api) -> None:
    """No quota anywhere: a submit runs no lock and no count (only the insert's statements);
    the same submit under a cap does run them (what the filter looks for is there to see)."""
    ada = await api.user("ada@example.com")
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = api.engine.backend.db.writer.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert (await submit(api, ada)).status_code == 201
        ada_id = await user_id(api, ada)
        assert (await set_flow(api, ada_id, await api.admin(), max_queued=10)).status_code == 200
        seen.clear()
        assert (await submit(api, ada)).status_code == 201
        capped = list(seen)
        seen.clear()
        assert (await set_flow(api, ada_id, await api.admin(), max_queued=0)).status_code == 200
        seen.clear()
        assert (await submit(api, ada)).status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert any(s.startswith("SELECT") and "count(" in s for s in capped), capped
    quota = [s for s in seen if "FOR UPDATE" in s or (s.startswith("SELECT") and "count(" in s)]
    assert not quota, seen
