"""The Python client's side of flow control: an admin's quotas and weight, QuotaExceeded,
the limits listing and a job's waiting_reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import (
    AsyncClient,
    Client,
    Forbidden,
    QuotaExceeded,
    RateLimited,
    ValidationFailed,
)
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_settings
from tests.support.live import PASSWORD, LiveServer, live_server

LATER = 3600.0


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = api_settings(
        db_url, tmp_path, handler_modules="tests.support.flow_handlers", quota_max_queued=2
    )
    with live_server(settings) as s:
        yield s


def test_an_admin_sets_quotas_and_a_user_meets_them(server: LiveServer) -> None:
    ada = server.user("ada@example.com")
    with Client(server.url) as admin, Client(server.url) as c:
        admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        c.login("ada@example.com", PASSWORD)
        c.submit_many([{"type": "sleep", "payload": {"seconds": 0}, "delay": LATER}] * 2)
        with pytest.raises(QuotaExceeded) as caught:
            c.submit("sleep", {"seconds": 0}, delay=LATER)
        assert isinstance(caught.value, RateLimited) and caught.value.status == 429
        assert caught.value.details == {"max_queued": 2, "waiting": 2, "requested": 1}

        user = admin.set_user_flow(ada.id, max_queued=3, fair_weight=4)
        assert (user.max_queued, user.fair_weight, user.max_running) == (3, 4.0, None)
        c.submit("sleep", {"seconds": 0}, delay=LATER)
        assert admin.set_user_flow(ada.id, max_queued=None).max_queued is None
        assert admin.set_user_flow(ada.id).fair_weight == 4.0  # nothing asked, nothing changed
        mine = next(u for u in admin.list_users() if u.id == ada.id)
        assert mine.fair_weight == 4.0
        with pytest.raises(Forbidden):
            c.set_user_flow(ada.id, max_queued=0)
        with pytest.raises(TypeError):
            admin.set_user_flow(ada.id, role="admin")


async def test_the_async_client_lists_limits_and_reasons(server: LiveServer) -> None:
    server.user("bob@example.com")
    server.run(server.engine.queues.pause("parked"))  # its jobs stay ready: nobody claims them
    async with AsyncClient(server.url) as c:
        await c.login("bob@example.com", PASSWORD)
        job = await c.submit("per_customer", {"customer": "acme"}, delay=LATER, queue="parked")
        assert (await c.get(job.id)).waiting_reason is None  # scheduled, not queued
        page = await c.limits()
        assert {(k.name, k.key, k.running, k.ready) for k in page.keys} == set()  # not ready
        ready = await c.submit("per_customer", {"customer": "acme"}, queue="parked")
        page = await c.limits(limit=1)
        assert len(page.keys) == 1 and page.next_cursor is not None
        rest = await c.limits(cursor=page.next_cursor)
        keys = {(k.name, k.key) for k in [*page.keys, *rest.keys]}
        assert keys >= {("customer_slots", "acme"), ("customer_calls", "acme")}
        reason = (await c.get(ready.id)).waiting_reason
        assert reason is not None and reason.kind == "turn"


def test_the_client_submits_under_limits_chosen_at_submit(server: LiveServer) -> None:
    server.user("cy@example.com")
    server.run(server.engine.jobs.define_limits())
    with Client(server.url) as c:
        c.login("cy@example.com", PASSWORD)
        job = c.submit("partner_sync", {}, delay=LATER, limits={"per_account": "acct-9"})
        assert c.get(job.id).limits == {"per_account": "acct-9"}
        with pytest.raises(ValidationFailed):
            c.submit("partner_sync", {}, limits={"nope": "x"})


async def test_the_async_client_submits_under_limits_chosen_at_submit(
    server: LiveServer,
) -> None:
    server.user("di@example.com")
    async with AsyncClient(server.url) as c:
        await c.login("di@example.com", PASSWORD)
        job = await c.submit("partner_sync", {}, delay=LATER, limits={"partner_api": ""})
        assert (await c.get(job.id)).limits == {"partner_api": ""}
        (other,) = await c.submit_many(
            [{"type": "partner_sync", "delay": LATER, "limits": {"per_account": "a"}}]
        )
        assert (await c.get(other.id)).limits == {"per_account": "a"}
