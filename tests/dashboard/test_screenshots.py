"""Screenshots of the overview, jobs and job pages, on a desktop and a phone-sized screen,
with jobs in every state. `make screenshots` writes them to docs/screenshots/ (the README
shows them); otherwise they go to the test's tmp directory, so the pages are still drawn."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from conveyor.domain.jobs import JobFilter
from conveyor.domain.schedules import NewSchedule
from conveyor.domain.states import JobState
from conveyor.services.jobs import Submission
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.conftest import fresh_database
from tests.dashboard.browser import PHONE, chromium, screenshot_path, tab
from tests.dashboard.conftest import Served
from tests.support.processes import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", request, tmp_path) as url:
        yield url


async def _seed(served: Served) -> str:
    """Jobs in every state on three queues; the id of a failed one with its errors."""
    engine = served.api.engine
    submit = engine.jobs.submit
    user = await engine.accounts.create_user("ada@example.com", "correct horse battery")
    for i in range(24):
        await submit(Submission("noop", {"invoice": f"INV-{1000 + i}"}, tags=("billing",)))
    for i in range(6):
        await submit(Submission("noop", {"report": f"weekly-{i}"}, queue="reports"), user.id)
    failing = {"seconds": 0.2, "steps": 2, "fail": True, "permanent": True}
    for _ in range(3):
        failed = await submit(Submission("sleep", failing, queue="mail", max_attempts=1))
    retrying = {"seconds": 0.1, "steps": 1, "fail": True}
    await submit(Submission("sleep", retrying, queue="mail", max_attempts=5))
    later = datetime.now(UTC) + timedelta(minutes=30)
    for i in range(2):
        await submit(Submission("noop", {"reminder": i}, run_at=later + timedelta(minutes=i)))
    for _ in range(2):
        await submit(Submission("sleep", {"seconds": 120, "steps": 40}, queue="reports"))
    cancelled = await submit(Submission("noop", {}, run_at=later))
    await engine.jobs.cancel(cancelled.id)
    nightly = NewSchedule("nightly report", "0 2 * * *", "noop", {"report": "nightly"})
    await engine.schedules.create(replace(nightly, timezone="Europe/Paris", owner_id=user.id))
    await engine.schedules.create(NewSchedule("every five minutes", "*/5 * * * *", "noop", {}))

    async def settled() -> bool:
        job = await engine.jobs.get(failed.id)
        running = await engine.jobs.page(_running(), limit=5)
        return job.state is JobState.FAILED and running.total == 2

    await eventually(settled, timeout=20, what="the seeded jobs to settle")
    await engine.queues.pause("reports", None)  # its two sleepers go on running
    return failed.id


def _running() -> JobFilter:
    return JobFilter(states=(JobState.RUNNING,))


async def test_screenshots(served: Served, tmp_path: Path) -> None:
    failed_id = await _seed(served)
    async with chromium() as browser:
        await _desktop(browser, served, tmp_path, failed_id)
        await _phone(browser, served, tmp_path, failed_id)


async def _desktop(browser: Browser, served: Served, tmp_path: Path, failed_id: str) -> None:
    async with tab(browser, served.base) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
        await t.page.screenshot(path=screenshot_path(tmp_path, "overview"), full_page=True)
        await t.goto("/dashboard/jobs")
        await expect(t.page.locator("tbody tr[data-job]")).to_have_count(25)
        await t.page.screenshot(path=screenshot_path(tmp_path, "jobs"), full_page=True)
        await t.goto(f"/dashboard/jobs/{failed_id}")
        await t.page.get_by_text("Traceback").first.click()
        await t.page.screenshot(path=screenshot_path(tmp_path, "job"), full_page=True)
        for page in ("schedules", "queues", "admin/users"):
            await t.goto(f"/dashboard/{page}")
            name = page.replace("admin/", "")
            await t.page.screenshot(path=screenshot_path(tmp_path, name), full_page=True)


async def _phone(browser: Browser, served: Served, tmp_path: Path, failed_id: str) -> None:
    async with tab(browser, served.base, PHONE) as t:
        await t.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
        width = await t.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], "the overview scrolls sideways on a phone"
        await t.page.screenshot(path=screenshot_path(tmp_path, "overview-phone"))
        for path, name in (
            ("/dashboard/jobs", "jobs-phone"),
            (f"/dashboard/jobs/{failed_id}", "job-phone"),
        ):
            await t.goto(path)
            await expect(t.page.locator("body[data-live-state=open]")).to_have_count(1)
            await t.page.screenshot(path=screenshot_path(tmp_path, name))
