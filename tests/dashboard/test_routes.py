"""The dashboard's routes over plain HTTP on each database: sign-in and its cookie, CSRF on
every state change, who may see and do what."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from conveyor.domain.states import JobState
from conveyor.services.accounts import User
from conveyor.services.jobs import Submission
from tests.api.conftest import ADMIN_EMAIL, PASSWORD, api_settings, running_api
from tests.dashboard.conftest import Browserless, csrf_of, sign_in
from tests.support.engine import processing
from tests.support.processes import eventually

PAGES = ["/dashboard/", "/dashboard/jobs", "/dashboard/schedules", "/dashboard/queues"]


async def _user(dash: Browserless, address: str) -> tuple[httpx.AsyncClient, str, str]:
    """A verified user signed in with their own client: (client, csrf, user id)."""
    await dash.api.engine.accounts.create_user(address, PASSWORD)
    client = await dash.client()
    csrf = await sign_in(client, address, PASSWORD)
    (user,) = [u for u in await dash.api.engine.accounts.list_users() if u.email == address]
    return client, csrf, user.id


async def test_pages_need_a_session(dash: Browserless) -> None:
    anonymous = await dash.client()
    for path in [*PAGES, "/dashboard/admin/users"]:
        r = await anonymous.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/dashboard/login?next=%2Fdashboard%2F")
    summary = await anonymous.get("/dashboard/summary", headers={"Accept": "application/json"})
    assert summary.status_code == 401
    login = await anonymous.get("/dashboard/login")
    assert login.status_code == 200
    assert 'autocomplete="current-password"' in login.text


async def test_admin_sees_every_page(dash: Browserless) -> None:
    job = await dash.api.engine.jobs.submit(Submission("noop", {}))
    for path in [*PAGES, "/dashboard/admin/users", "/dashboard/keys", f"/dashboard/jobs/{job.id}"]:
        r = await dash.admin.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "<svg" in r.text or path != "/dashboard/"
    summary = await dash.admin.get("/dashboard/summary")
    assert summary.json()["totals"]["queued"] == 1
    assert summary.json()["html"]["throughput"].startswith("<svg")


async def test_session_cookie_attributes(dash: Browserless) -> None:
    client = await dash.client()
    form = await client.get("/dashboard/login")
    data = {"login": ADMIN_EMAIL, "password": "admin-password-123"}
    r = await client.post("/dashboard/login", data={**data, "csrf_token": csrf_of(form.text)})
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("conveyor_session="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= attributes
    assert "secure" not in attributes  # plain http here; https or the setting adds it
    assert any(a.startswith("max-age=") for a in attributes)


async def test_secure_cookie_over_https(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, dashboard_secure_cookies=True)
    async with running_api(settings) as api:
        r = await api.client.get("/dashboard/login")
    assert "secure" in r.headers["set-cookie"].lower()


async def test_wrong_password_and_forged_login_form(dash: Browserless) -> None:
    client = await dash.client()
    form = await client.get("/dashboard/login")
    token = csrf_of(form.text)
    wrong = {"login": ADMIN_EMAIL, "password": "nope-nope-nope", "csrf_token": token}
    r = await client.post("/dashboard/login", data=wrong)
    assert r.status_code == 401
    assert "Wrong e-mail, username or password." in r.text
    assert "conveyor_session" not in r.headers.get("set-cookie", "")
    async with await dash.client() as other:  # a form posted from another site
        data = {"login": ADMIN_EMAIL, "password": "admin-password-123", "csrf_token": token}
        r = await other.post("/dashboard/login", data=data)
        assert r.status_code == 403
        assert "conveyor_session" not in r.headers.get("set-cookie", "")


async def test_post_without_csrf_is_refused_and_changes_nothing(dash: Browserless) -> None:
    engine = dash.api.engine
    job = await engine.jobs.submit(Submission("noop", {}, run_at=None))
    cancel = f"/dashboard/jobs/{job.id}/cancel"
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}), ({}, {"X-CSRF-Token": "x"})):
        r = await dash.admin.post(cancel, data=data, headers=headers)
        assert r.status_code == 403, r.text
        assert (await engine.jobs.get(job.id)).state is JobState.QUEUED
    r = await dash.admin.post("/dashboard/keys", data={"name": "k"})
    assert r.status_code == 403
    assert await engine.accounts.list_api_keys(await _admin(dash)) == []
    r = await dash.admin.post(cancel, data={"csrf_token": dash.admin_csrf})
    assert r.status_code == 303
    assert (await engine.jobs.get(job.id)).state is JobState.CANCELLED


async def _admin(dash: Browserless) -> User:
    (admin,) = [u for u in await dash.api.engine.accounts.list_users() if u.is_admin]
    return admin


async def test_another_users_csrf_token_is_refused(dash: Browserless) -> None:
    client, _, _ = await _user(dash, "b@example.com")
    job = await dash.api.engine.jobs.submit(Submission("noop", {}))
    r = await dash.admin.post(f"/dashboard/jobs/{job.id}/cancel", data={"csrf_token": "0" * 64})
    assert r.status_code == 403
    mine = await client.get("/dashboard/keys")
    r = await dash.admin.post(
        f"/dashboard/jobs/{job.id}/cancel", data={"csrf_token": csrf_of(mine.text)}
    )
    assert r.status_code == 403


async def test_permission_matrix(dash: Browserless) -> None:
    engine = dash.api.engine
    client_a, csrf_a, a_id = await _user(dash, "a@example.com")
    client_b, csrf_b, _ = await _user(dash, "b@example.com")
    job = await engine.jobs.submit(Submission("noop", {"secret": "of-a"}), owner_id=a_id)
    assert (await client_a.get(f"/dashboard/jobs/{job.id}")).status_code == 200
    assert (await client_b.get(f"/dashboard/jobs/{job.id}")).status_code == 404
    listing = await client_b.get("/dashboard/jobs")
    assert job.id not in listing.text and "of-a" not in listing.text
    assert job.id in (await client_a.get("/dashboard/jobs")).text
    assert job.id in (await dash.admin.get("/dashboard/jobs")).text
    r = await client_b.post(f"/dashboard/jobs/{job.id}/cancel", data={"csrf_token": csrf_b})
    assert r.status_code == 404
    assert (await engine.jobs.get(job.id)).state is JobState.QUEUED
    for path in ("/dashboard/admin/users",):
        assert (await client_b.get(path)).status_code == 403
    r = await client_b.post(f"/dashboard/admin/users/{a_id}/disable", data={"csrf_token": csrf_b})
    assert r.status_code == 403
    r = await client_b.post("/dashboard/queues/default/pause", data={"csrf_token": csrf_b})
    assert r.status_code == 403
    counts = (await client_b.get("/dashboard/summary")).json()["totals"]
    assert sum(counts.values()) == 0
    assert (await client_a.get("/dashboard/summary")).json()["totals"]["queued"] == 1
    stream = await client_b.get(f"/dashboard/events?job={job.id}")
    assert stream.status_code == 404
    assert csrf_a != csrf_b


async def test_sign_out_ends_the_session(dash: Browserless) -> None:
    client, csrf, _ = await _user(dash, "c@example.com")
    cookie = client.cookies.get("conveyor_session")
    assert cookie
    r = await client.post("/dashboard/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login"
    assert client.cookies.get("conveyor_session") is None
    client.cookies.set("conveyor_session", cookie, path="/dashboard")  # a stolen copy
    assert (await client.get("/dashboard/jobs")).status_code == 303


async def test_disabling_a_user_ends_their_sessions(dash: Browserless) -> None:
    client, _, user_id = await _user(dash, "d@example.com")
    assert (await client.get("/dashboard/jobs")).status_code == 200
    r = await dash.admin.post(
        f"/dashboard/admin/users/{user_id}/disable", data={"csrf_token": dash.admin_csrf}
    )
    assert r.status_code == 303
    assert (await client.get("/dashboard/jobs")).status_code == 303


async def test_cookie_and_api_tokens_do_not_cross(dash: Browserless) -> None:
    cookie = dash.admin.cookies.get("conveyor_session")
    r = await dash.admin.get("/api/v1/jobs", headers={"Authorization": f"Bearer {cookie}"})
    assert r.status_code == 401
    token = (await dash.api.admin())["Authorization"].removeprefix("Bearer ")
    client = await dash.client()
    client.cookies.set("conveyor_session", token, path="/dashboard")
    assert (await client.get("/dashboard/jobs")).status_code == 303


async def test_unverified_user_gets_a_clear_page(dash: Browserless) -> None:
    api = dash.api
    r = await api.client.post(
        "/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert r.status_code == 202
    client = await dash.client()
    form = await client.get("/dashboard/login")
    data = {"login": "new@example.com", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
    assert (await client.post("/dashboard/login", data=data)).status_code == 303
    page = await client.get("/dashboard/jobs")
    assert page.status_code == 403
    assert "Verify your e-mail address" in page.text
    code = await api.code_for("new@example.com")
    r = await client.post(
        "/dashboard/verify", data={"code": code, "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 303
    assert (await client.get("/dashboard/jobs")).status_code == 200


async def test_schedule_with_bad_payload_gets_a_clear_error(dash: Browserless) -> None:
    form = {"name": "n", "cron": "*/5 * * * *", "timezone": "UTC", "job_type": "noop"}
    r = await dash.admin.post(
        "/dashboard/schedules", data={**form, "payload": "{oops", "csrf_token": dash.admin_csrf}
    )
    assert r.status_code == 422
    assert "not valid JSON" in r.text
    assert await dash.api.engine.backend.list_schedules() == []
    r = await dash.admin.post(
        "/dashboard/schedules", data={**form, "payload": "{}", "csrf_token": dash.admin_csrf}
    )
    assert r.status_code == 303
    page = await dash.admin.get("/dashboard/schedules")
    assert re.search(r"\*/5 \* \* \* \*", page.text)
    (schedule,) = await dash.api.engine.backend.list_schedules()
    for action, paused in (("pause", True), ("resume", False)):
        r = await dash.admin.post(
            f"/dashboard/schedules/{schedule.id}/{action}", data={"csrf_token": dash.admin_csrf}
        )
        assert r.status_code == 303
        assert (await dash.api.engine.backend.list_schedules())[0].paused is paused
    r = await dash.admin.post(
        f"/dashboard/schedules/{schedule.id}/delete", data={"csrf_token": dash.admin_csrf}
    )
    assert await dash.api.engine.backend.list_schedules() == []


async def test_api_key_is_shown_once(dash: Browserless) -> None:
    r = await dash.admin.post("/dashboard/keys", data={"name": "ci", "csrf_token": dash.admin_csrf})
    assert r.status_code == 200
    key = re.search(r'value="(cvk_[^"]+)"', r.text)
    assert key
    check = await dash.admin.get("/api/v1/jobs", headers={"Authorization": f"Bearer {key[1]}"})
    assert check.status_code == 200
    assert key[1] not in (await dash.admin.get("/dashboard/keys")).text


@pytest.mark.parametrize(
    "path", ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"]
)
async def test_static_files(dash: Browserless, path: str) -> None:
    r = await dash.admin.get(path)
    assert r.status_code == 200
    assert "http" not in r.text.split("\n", 3)[-1] or "https://" not in r.text


async def test_bulk_on_selected_rows_is_scoped_to_the_user(dash: Browserless) -> None:
    engine = dash.api.engine
    client, csrf, a_id = await _user(dash, "bulk@example.com")
    mine = [await engine.jobs.submit(Submission("noop", {}, run_at=_later()), a_id) for _ in "ab"]
    theirs = await engine.jobs.submit(Submission("noop", {}, run_at=_later()))
    ids = [mine[0].id, mine[1].id, theirs.id]
    form = {"action": "cancel", "scope": "selected", "ids": ids, "csrf_token": csrf}
    r = await client.post("/dashboard/jobs/bulk", data=form)
    assert r.status_code == 200
    assert "Cancel 3 jobs?" in r.text  # the confirmation page; nothing changed yet
    assert (await engine.jobs.get(mine[0].id)).state is JobState.SCHEDULED
    r = await client.post("/dashboard/jobs/bulk", data={**form, "confirmed": "true"})
    assert r.status_code == 303
    flash = unquote(r.cookies["conveyor_flash"])
    assert "3 matched, 2 changed, 1 skipped" in flash
    assert (await engine.jobs.get(mine[1].id)).state is JobState.CANCELLED
    assert (await engine.jobs.get(theirs.id)).state is JobState.SCHEDULED
    r = await client.post(
        "/dashboard/jobs/bulk?state=scheduled",
        data={"action": "cancel", "scope": "matching", "confirmed": "true"},
    )
    assert r.status_code == 403  # no token
    assert (await engine.jobs.get(theirs.id)).state is JobState.SCHEDULED


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def test_admin_pauses_and_resumes_a_queue(dash: Browserless) -> None:
    queues = dash.api.engine.queues
    r = await dash.admin.post("/dashboard/queues/mail/pause", data={"csrf_token": dash.admin_csrf})
    assert r.status_code == 303
    paused = {q.name: q.paused for q in await queues.overview(None)}
    assert paused["mail"] is True
    page = await dash.admin.get("/dashboard/queues")
    assert "Resume" in page.text and "paused" in page.text
    r = await dash.admin.post("/dashboard/queues/mail/resume", data={"csrf_token": dash.admin_csrf})
    assert r.status_code == 303
    assert {q.name: q.paused for q in await queues.overview(None)}["mail"] is False


async def test_bad_filters_get_a_clear_page(dash: Browserless) -> None:
    r = await dash.admin.get("/dashboard/jobs?sort=password_hash")
    assert r.status_code == 422
    assert "cannot sort by" in r.text
    r = await dash.admin.get("/dashboard/jobs?after=yesterday")
    assert r.status_code == 422
    assert "not a date and time" in r.text
    assert "Sign out" in r.text  # the error page keeps the navigation
    r = await dash.admin.get("/dashboard/jobs?page=0")
    assert r.status_code == 422


async def test_pages_forbid_framing_and_other_origins(dash: Browserless) -> None:
    for path in ("/dashboard/login", "/dashboard/"):
        r = await dash.admin.get(path)
        policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"


async def test_admin_revokes_another_users_key(dash: Browserless) -> None:
    accounts = dash.api.engine.accounts
    client, csrf, user_id = await _user(dash, "keys@example.com")
    owner = await accounts.get_user(user_id)
    record, key = await accounts.create_api_key(owner, "laptop")
    page = await dash.admin.get(f"/dashboard/admin/users/{user_id}/keys")
    assert page.status_code == 200 and "laptop" in page.text and key not in page.text
    revoke = f"/dashboard/admin/users/{user_id}/keys/{record.id}/revoke"
    assert (await client.post(revoke, data={"csrf_token": csrf})).status_code == 403  # not admin
    r = await dash.admin.post(revoke, data={"csrf_token": dash.admin_csrf})
    assert r.status_code == 303
    check = await dash.admin.get("/api/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert check.status_code == 401


async def test_tracebacks_are_for_admins(dash: Browserless) -> None:
    engine = dash.api.engine
    client, _, user_id = await _user(dash, "tb@example.com")
    failing = {"seconds": 0, "steps": 1, "fail": True, "permanent": True}
    job = await engine.jobs.submit(Submission("sleep", failing), user_id)
    async with processing(engine):
        await eventually(lambda: _is_failed(dash, job.id), timeout=10, what="the job to fail")
    own = await client.get(f"/dashboard/jobs/{job.id}")
    assert "asked to fail permanently" in own.text
    assert "Traceback" not in own.text
    admin = await dash.admin.get(f"/dashboard/jobs/{job.id}")
    assert "Traceback (most recent call last)" in admin.text


async def _is_failed(dash: Browserless, job_id: str) -> bool:
    return (await dash.api.engine.jobs.get(job_id)).state is JobState.FAILED


async def test_dashboard_without_a_slash_redirects(dash: Browserless) -> None:
    r = await dash.admin.get("/dashboard")
    assert r.status_code in (307, 308)
    assert r.headers["location"].endswith("/dashboard/")


async def test_sign_in_attempts_are_rate_limited(db_url: str, tmp_path: Path) -> None:
    """The dashboard's sign-in counts against the same per-IP budget as the API's."""
    settings = api_settings(db_url, tmp_path, rate_limit_auth="3/minute")
    async with running_api(settings) as api:
        page = await api.client.get("/dashboard/login")
        statuses = []
        for _ in range(4):  # each answer is a fresh form with a fresh token
            data = {
                "login": ADMIN_EMAIL,
                "password": "wrong-wrong",
                "csrf_token": csrf_of(page.text),
            }
            r = await api.client.post("/dashboard/login", data=data)
            statuses.append(r.status_code)
            if r.status_code == 401:
                page = r
        assert statuses == [401, 401, 401, 429]
        assert "too many requests" in r.text
        api_login = {"email": ADMIN_EMAIL, "password": "admin-password-123"}
        assert (await api.client.post("/api/v1/auth/login", json=api_login)).status_code == 429


async def test_sign_out_everywhere(dash: Browserless) -> None:
    one, csrf, _ = await _user(dash, "every@example.com")
    two = await dash.client()
    await sign_in(two, "every@example.com", PASSWORD)
    login = {"email": "every@example.com", "password": PASSWORD}
    tokens = (await dash.api.client.post("/api/v1/auth/login", json=login)).json()
    r = await one.post("/dashboard/logout-everywhere", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert (await two.get("/dashboard/jobs")).status_code == 303  # the other browser too
    body = {"refresh_token": tokens["refresh_token"]}
    refresh = await dash.api.client.post("/api/v1/auth/refresh", json=body)
    assert refresh.status_code == 401  # and the API session


async def test_api_sign_outs_and_the_dashboard_session(dash: Browserless) -> None:
    """An API logout ends that API session only; the dashboard's "sign out everywhere" ends
    the API sessions' access tokens at once too (issue 14, finding 1)."""
    browser, csrf, _ = await _user(dash, "both@example.com")
    login = {"email": "both@example.com", "password": PASSWORD}
    first = (await dash.api.client.post("/api/v1/auth/login", json=login)).json()
    second = (await dash.api.client.post("/api/v1/auth/login", json=login)).json()
    out = {"refresh_token": first["refresh_token"]}
    assert (await dash.api.client.post("/api/v1/auth/logout", json=out)).status_code == 204
    assert (await browser.get("/dashboard/jobs")).status_code == 200  # the browser stays in

    def me(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert (
        await dash.api.client.get("/api/v1/me", headers=me(second["access_token"]))
    ).status_code == 200
    r = await browser.post("/dashboard/logout-everywhere", data={"csrf_token": csrf})
    assert r.status_code == 303
    ended = await dash.api.client.get("/api/v1/me", headers=me(second["access_token"]))
    assert ended.status_code == 401
