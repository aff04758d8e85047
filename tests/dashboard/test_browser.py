"""The dashboard in a real browser (Chromium via Playwright) against a real server with a
worker: sign in and out, live updates without reloading, filters, bulk retry, cancelling a
scheduled job, users kept apart (pages and SSE), CSRF. Every test also checks that the
page asked nothing of any other host."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from conveyor.domain.events import Position
from conveyor.domain.states import JobState
from conveyor.services.jobs import Submission
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD
from tests.conftest import fresh_database
from tests.dashboard.browser import Tab, chromium, tab
from tests.dashboard.conftest import Served
from tests.support.processes import eventually

pytestmark = pytest.mark.slow
LIVE = 10_000  # ms a live change may take to show


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The browser tests run on SQLite (the routes' tests cover both databases)."""
    with fresh_database("sqlite", request, tmp_path) as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as opened:
        yield opened


async def _user(served: Served, email: str) -> str:
    user = await served.api.engine.accounts.create_user(email, PASSWORD)
    return user.id


async def test_sign_in_and_out(served: Served, browser: Browser) -> None:
    async with tab(browser, served.base) as t:
        await t.goto("/dashboard/jobs")
        await expect(t.page).to_have_url(re.compile(r"/dashboard/login\?next="))
        await t.page.get_by_label("E-mail or username").fill(ADMIN_EMAIL)
        await t.page.get_by_label("Password").fill("wrong password!")
        await t.page.get_by_role("button", name="Sign in").click()
        await expect(t.page.get_by_role("alert")).to_contain_text("Wrong e-mail")
        await t.page.get_by_label("E-mail or username").fill("admin")  # the username works too
        await t.page.get_by_label("Password").fill(ADMIN_PASSWORD)
        await t.page.get_by_role("button", name="Sign in").click()
        await expect(t.page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
        cookies = {c["name"]: c for c in await t.context.cookies()}
        session = cookies["conveyor_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        await t.page.get_by_role("button", name="Sign out").click()
        await expect(t.page.get_by_role("status")).to_have_text("You are signed out.")
        await t.goto("/dashboard/")
        await expect(t.page).to_have_url(re.compile(r"/dashboard/login"))


async def test_job_from_the_api_appears_live_and_completes(
    served: Served, browser: Browser
) -> None:
    await _user(served, "live@example.com")
    headers = await served.api.login("live@example.com")
    async with tab(browser, served.base) as t:
        await t.sign_in("live@example.com", PASSWORD)
        await t.page.evaluate("window.notReloaded = true")
        await expect(t.page.locator("[data-total=completed]")).to_have_text("0")
        await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
        body = {"type": "sleep", "payload": {"seconds": 1.0, "steps": 4}}
        r = await served.api.client.post("/api/v1/jobs", json=body, headers=headers)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        await expect(t.page.locator("[data-total=completed]")).to_have_text("1", timeout=LIVE)
        assert await t.page.evaluate("window.notReloaded") is True

        await t.goto("/dashboard/jobs")
        await t.page.evaluate("window.notReloaded = true")
        await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
        r = await served.api.client.post("/api/v1/jobs", json=body, headers=headers)
        second = r.json()["id"]
        row = t.page.locator(f"tr[data-job='{second}']")
        await expect(row).to_be_visible(timeout=LIVE)
        await expect(row.locator(".state")).to_have_text("completed", timeout=LIVE)
        await expect(t.page.locator(f"tr[data-job='{job_id}'] .state")).to_have_text("completed")
        assert await t.page.evaluate("window.notReloaded") is True

        slow = {"type": "sleep", "payload": {"seconds": 3.0, "steps": 3}}
        r = await served.api.client.post("/api/v1/jobs", json=slow, headers=headers)
        await t.goto(f"/dashboard/jobs/{r.json()['id']}")
        await t.page.evaluate("window.notReloaded = true")
        progress = t.page.locator("[data-progress]")
        await expect(progress).to_have_attribute("value", "33", timeout=LIVE)
        await expect(progress).to_have_attribute("value", "100", timeout=LIVE)
        await expect(t.page.locator("[data-region=status] .state")).to_have_text(
            "completed", timeout=LIVE
        )
        await expect(t.page.locator("[data-timeline] li.ev-completed")).to_have_count(1)
        assert await t.page.evaluate("window.notReloaded") is True


async def test_overview_keeps_up_with_a_burst(served: Served, browser: Browser) -> None:
    """500 jobs at once: thousands of events, coalesced into a few re-reads; the page ends
    showing every one completed, without a reload."""
    headers = await served.api.admin()
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
        await t.page.evaluate("window.notReloaded = true")
        batch = {"jobs": [{"type": "noop", "payload": {"i": i}} for i in range(500)]}
        r = await served.api.client.post("/api/v1/jobs/batch", json=batch, headers=headers)
        assert r.status_code == 201, r.text
        completed = t.page.locator("[data-total=completed]")
        await expect(completed).to_have_text("500", timeout=30_000)
        assert await t.page.evaluate("window.notReloaded") is True
    summaries = [u for u in t.requests if "/dashboard/summary" in u]
    assert len(summaries) < 100, len(summaries)  # one per event would be thousands


async def test_filter_the_jobs_table(served: Served, browser: Browser) -> None:
    jobs = served.api.engine.jobs
    red = await jobs.submit(Submission("noop", {"colour": "red-42"}, tags=("paint",)))
    blue = await jobs.submit(Submission("noop", {"colour": "blue-7"}))
    late = await jobs.submit(Submission("sleep", {"seconds": 0}, run_at=_in_an_hour()))
    await eventually(_finished(served, red.id, blue.id), timeout=10, what="the noop jobs")
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await t.goto("/dashboard/jobs")
        rows = t.page.locator("tbody tr[data-job]")
        await expect(rows).to_have_count(3)
        await t.page.get_by_label("Text in id or payload").fill("RED-42")
        await t.page.get_by_role("button", name="Apply filters").click()
        await expect(rows).to_have_count(1)
        await expect(t.page.locator(f"tr[data-job='{red.id}']")).to_be_visible()
        await t.goto("/dashboard/jobs")
        await t.page.get_by_label("scheduled").check()
        await t.page.get_by_role("button", name="Apply filters").click()
        await expect(rows).to_have_count(1)
        await expect(t.page.locator(f"tr[data-job='{late.id}']")).to_be_visible()
        await t.goto("/dashboard/jobs?tag=paint")
        await expect(rows).to_have_count(1)
        await t.goto("/dashboard/jobs")
        await t.page.get_by_label("Type").select_option("sleep")
        await t.page.get_by_role("button", name="Apply filters").click()
        await expect(rows).to_have_count(1)
        await t.page.get_by_role("link", name="Created").click()  # sort by creation time
        await expect(t.page).to_have_url(re.compile("sort="))
        assert blue.id not in await t.page.content()


async def test_bulk_retry_all_matching_failed_jobs(served: Served, browser: Browser) -> None:
    engine = served.api.engine
    failing = Submission("sleep", {"seconds": 0, "steps": 1, "fail": True, "permanent": True})
    failed = [await engine.jobs.submit(failing) for _ in range(30)]  # more than one page
    kept = await engine.jobs.submit(Submission("noop", {}))
    ids = [j.id for j in failed]
    await eventually(_in_state(served, JobState.FAILED, *ids), timeout=20, what="failures")
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await t.goto("/dashboard/jobs?state=failed")
        await expect(t.page.locator("[data-total-jobs]")).to_have_text("30")
        await t.page.get_by_label(re.compile("all 30 matching")).check()
        await t.page.get_by_role("button", name="Retry", exact=True).click()
        await expect(t.page.get_by_role("heading", name="Retry 30 jobs?")).to_be_visible()
        await t.page.get_by_role("button", name="Yes, retry 30 jobs").click()
        await expect(t.page.get_by_role("status")).to_have_text(
            "Retry: 30 matched, 30 changed, 0 skipped."
        )
    for job_id in ids:  # each was queued again after it failed (it then fails once more)
        events = await engine.backend.read_events(Position(), 100, job_id=job_id)
        kinds = [e.type for e in events]
        assert "queued" in kinds[kinds.index("failed") :], kinds
    assert (await engine.jobs.get(kept.id)).state is JobState.COMPLETED


async def test_bulk_cancel_of_checked_rows(served: Served, browser: Browser) -> None:
    engine = served.api.engine
    jobs = [await engine.jobs.submit(Submission("noop", {}, run_at=_in_an_hour())) for _ in "abc"]
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await t.goto("/dashboard/jobs?state=scheduled")
        for job in jobs[:2]:
            await t.page.get_by_label(f"Select job {job.id}").check()
        await expect(t.page.locator("[data-selected]")).to_have_text("2")
        await t.page.get_by_role("button", name="Cancel", exact=True).click()
        await t.page.get_by_role("button", name="Yes, cancel 2 jobs").click()
        await expect(t.page.get_by_role("status")).to_have_text(
            "Cancel: 2 matched, 2 changed, 0 skipped."
        )
        await expect(t.page.locator("tbody tr[data-job]")).to_have_count(1)  # still filtered
    states = [(await engine.jobs.get(j.id)).state for j in jobs]
    assert states == [JobState.CANCELLED, JobState.CANCELLED, JobState.SCHEDULED]


async def test_cancel_a_scheduled_job_from_its_page(served: Served, browser: Browser) -> None:
    user_id = await _user(served, "sched@example.com")
    engine = served.api.engine
    job = await engine.jobs.submit(Submission("noop", {}, run_at=_in_an_hour()), user_id)
    async with tab(browser, served.base) as t:
        await t.sign_in("sched@example.com", PASSWORD)
        await t.goto(f"/dashboard/jobs/{job.id}")
        await expect(t.page.locator("[data-region=status] .state")).to_have_text("scheduled")
        await t.page.get_by_role("button", name="Cancel job").click()
        await expect(t.page.get_by_role("status")).to_have_text("The job is cancelled.")
        await expect(t.page.locator("[data-region=status] .state")).to_have_text("cancelled")
        await expect(t.page.locator("[data-timeline] li.ev-cancelled")).to_have_count(1)
    assert (await engine.jobs.get(job.id)).state is JobState.CANCELLED


async def test_users_do_not_see_each_others_jobs(served: Served, browser: Browser) -> None:
    await _user(served, "a@example.com")
    await _user(served, "b@example.com")
    headers_a = await served.api.login("a@example.com")
    headers_b = await served.api.login("b@example.com")
    client = served.api.client
    async with tab(browser, served.base) as a, tab(browser, served.base) as b:
        await a.sign_in("a@example.com", PASSWORD)
        await b.sign_in("b@example.com", PASSWORD)
        await b.page.evaluate(_COLLECT_EVENTS)
        await _until(b, "window.streamOpen === true", "B's stream to open")
        mine_a = []
        for _ in range(3):
            r = await client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers_a)
            mine_a.append(r.json()["id"])
        r = await client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers_b)
        mine_b = r.json()["id"]
        done = f"window.seen.some(e => e.job === '{mine_b}' && e.type === 'completed')"
        await _until(b, done, "B's own job to complete on B's stream")
        await eventually(_finished(served, *mine_a), timeout=10, what="A's jobs")
        await asyncio.sleep(0.5)  # A's events, had they leaked, would have arrived by now
        seen = await b.page.evaluate("window.seen")
        assert {e["job"] for e in seen} == {mine_b}
        await b.goto("/dashboard/jobs")
        await expect(b.page.locator("tbody tr[data-job]")).to_have_count(1)
        await a.goto("/dashboard/jobs")
        await expect(a.page.locator("tbody tr[data-job]")).to_have_count(3)
        await b.goto(f"/dashboard/jobs/{mine_a[0]}")
        await expect(b.page.get_by_role("heading", name="Not found")).to_be_visible()


async def test_post_without_csrf_token_is_refused(served: Served, browser: Browser) -> None:
    engine = served.api.engine
    job = await engine.jobs.submit(Submission("noop", {}, run_at=_in_an_hour()))
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        status = await t.page.evaluate(
            """async (url) => (await fetch(url, {method: "POST"})).status""",
            f"/dashboard/jobs/{job.id}/cancel",
        )
        assert status == 403
        form_status = await t.page.evaluate(
            """async (url) => (await fetch(url, {method: "POST",
                 body: new URLSearchParams({csrf_token: "forged"})})).status""",
            f"/dashboard/jobs/{job.id}/cancel",
        )
        assert form_status == 403
    assert (await engine.jobs.get(job.id)).state is JobState.SCHEDULED


# The stream as B's page sees it: EventSource on the cookie-authenticated endpoint.
_COLLECT_EVENTS = """() => {
  window.seen = [];
  const source = new EventSource("/dashboard/events");
  source.onopen = () => { window.streamOpen = true; };
  for (const type of ["created", "started", "progress", "completed", "failed", "queued"]) {
    source.addEventListener(type, (m) => {
      const data = JSON.parse(m.data);
      window.seen.push({type: type, job: data.job.id});
    });
  }
}"""


async def _until(t: Tab, expression: str, what: str) -> None:
    """Poll a page expression (Playwright's wait_for_function evaluates strings with eval,
    which the dashboard's Content-Security-Policy rightly refuses)."""

    async def holds() -> bool:
        return bool(await t.page.evaluate(expression))

    await eventually(holds, timeout=LIVE / 1000, what=what)


def _in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def _finished(served: Served, *ids: str) -> Callable[[], Awaitable[bool]]:
    return _in_state(served, JobState.COMPLETED, *ids)


def _in_state(served: Served, state: JobState, *ids: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        jobs = [await served.api.engine.jobs.get(i) for i in ids]
        return all(j.state is state for j in jobs)

    return check


async def test_pages_are_keyboard_reachable_and_named(served: Served, browser: Browser) -> None:
    """Every control has an accessible name, the first Tab reaches the skip link, and a
    focused control shows an outline. (Queues appear once B2's service is there.)"""
    job = await served.api.engine.jobs.submit(Submission("noop", {}))
    pages = ["/dashboard/", "/dashboard/jobs", f"/dashboard/jobs/{job.id}", "/dashboard/schedules"]
    pages += ["/dashboard/keys", "/dashboard/admin/users"]
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        for path in pages:
            await t.goto(path)
            unnamed = await t.page.evaluate(_UNNAMED_CONTROLS)
            assert unnamed == [], (path, unnamed)
            await t.page.keyboard.press("Tab")
            focused = await t.page.evaluate("document.activeElement.textContent.trim()")
            assert focused == "Skip to content", path
            await t.page.keyboard.press("Tab")
            outline = await t.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", path


# Controls a screen reader could not name: no label, no aria-label, no text.
_UNNAMED_CONTROLS = """() => {
  const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
  const named = (el) => (el.getAttribute("aria-label") || "").trim() ||
    (el.labels && Array.from(el.labels).some((l) => l.textContent.trim())) ||
    (el.textContent || "").trim() || (el.getAttribute("title") || "").trim();
  return Array.from(document.querySelectorAll("a, button, input, select, textarea"))
    .filter((el) => el.type !== "hidden" && visible(el) && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}"""
