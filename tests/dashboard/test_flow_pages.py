"""The dashboard's side of flow control: the Limits page, a queued job's reason to wait on
its page, and an admin's form for a user's fair-dispatch weight and quotas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.services.jobs import Submission
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, api_settings, running_api
from tests.api.test_limits_view import HANDLERS, define_limits, mark_running
from tests.dashboard.conftest import Browserless, sign_in


@pytest.fixture
async def dash(db_url: str, tmp_path: Path) -> AsyncIterator[Browserless]:
    async with running_api(api_settings(db_url, tmp_path, handler_modules=HANDLERS)) as api:
        await define_limits(api)
        csrf = await sign_in(api.client, ADMIN_EMAIL, ADMIN_PASSWORD)
        dash = Browserless(api, api.client, csrf, [])
        yield dash
        for client in dash.others:
            await client.aclose()


async def test_the_limits_page_shows_each_key_scoped_to_the_user(dash: Browserless) -> None:
    engine = dash.api.engine
    ada = await engine.accounts.create_user("ada@example.com", PASSWORD)
    mine = [
        await engine.jobs.submit(Submission("per_customer", {"customer": c}), owner_id=ada.id)
        for c in ("acme", "acme")
    ]
    await engine.jobs.submit(Submission("per_customer", {"customer": "globex"}))
    await mark_running(dash.api, mine[0].id)

    page = await dash.admin.get("/dashboard/limits")
    assert page.status_code == 200, page.text
    assert "customer_slots" in page.text and "globex" in page.text and "acme" in page.text
    assert "at cap" in page.text  # acme: 1 of 1 running

    client = await dash.client()
    await sign_in(client, "ada@example.com", PASSWORD)
    own = await client.get("/dashboard/limits")
    assert own.status_code == 200 and "acme" in own.text and "globex" not in own.text
    assert 'href="/dashboard/limits"' in own.text  # in the navigation

    job = await client.get(f"/dashboard/jobs/{mine[1].id}")
    assert job.status_code == 200
    assert 'data-waiting="limit"' in job.text and "customer_slots" in job.text
    parts = await client.get(f"/dashboard/jobs/{mine[1].id}/parts")
    assert 'data-waiting=\\"limit\\"' in parts.text or 'data-waiting="limit"' in parts.text


async def test_an_admin_sets_flow_settings_from_the_users_page(dash: Browserless) -> None:
    accounts = dash.api.engine.accounts
    ada = await accounts.create_user("ada@example.com", PASSWORD)
    page = await dash.admin.get("/dashboard/admin/users")
    assert page.status_code == 200 and f"/dashboard/admin/users/{ada.id}/flow" in page.text
    form = {"csrf_token": dash.admin_csrf, "fair_weight": "3", "max_queued": "10"}
    r = await dash.admin.post(f"/dashboard/admin/users/{ada.id}/flow", data=form)
    assert r.status_code == 303, r.text
    saved = await accounts.get_user(ada.id)
    assert (saved.fair_weight, saved.max_queued, saved.max_running) == (3.0, 10, None)
    bad = {"csrf_token": dash.admin_csrf, "fair_weight": "0", "max_queued": "10"}
    r = await dash.admin.post(f"/dashboard/admin/users/{ada.id}/flow", data=bad)
    assert r.status_code == 303
    assert (await accounts.get_user(ada.id)).fair_weight == 3.0  # refused, nothing changed
    back = {"csrf_token": dash.admin_csrf, "fair_weight": "", "max_queued": ""}
    await dash.admin.post(f"/dashboard/admin/users/{ada.id}/flow", data=back)
    saved = await accounts.get_user(ada.id)
    assert (saved.fair_weight, saved.max_queued) == (1.0, None)

    client = await dash.client()
    csrf = await sign_in(client, "ada@example.com", PASSWORD)
    r = await client.post(
        f"/dashboard/admin/users/{ada.id}/flow", data={"csrf_token": csrf, "max_queued": "0"}
    )
    assert r.status_code == 403
    assert (await accounts.get_user(ada.id)).max_queued is None


async def test_the_job_page_lists_its_limit_keys_escaped(dash: Browserless) -> None:
    engine = dash.api.engine
    chosen = {"per_account": "<b>acct</b>", "partner_api": ""}
    done = await engine.jobs.submit(Submission("partner_sync", {}, limits=chosen))
    page = await dash.admin.get(f"/dashboard/jobs/{done.id}")
    assert page.status_code == 200, page.text
    assert "per_account: &lt;b&gt;acct&lt;/b&gt;" in page.text and "<b>acct" not in page.text
    assert "partner_api: (one key)" in page.text
    plain = await engine.jobs.submit(Submission("partner_sync", {}))
    assert "data-limits" not in (await dash.admin.get(f"/dashboard/jobs/{plain.id}")).text
