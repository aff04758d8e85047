"""Driving Debian's Chromium with Playwright (async API) against a served app.

Playwright's own browser download does not work on this network, so the system's
`chromium` is passed as `executable_path`. Without it the browser tests skip on a laptop
and fail in CI, like the other services (`tests.conftest._missing`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright

from tests.conftest import ROOT, _missing

# Without the background-networking flags Chromium's own connections (updates, sync, field
# trials) are refused on this closed network and slow every start.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS_ENV = "CONVEYOR_SCREENSHOTS"  # `make screenshots` sets it: write docs/screenshots
SCREENSHOT_DIR = ROOT / "docs" / "screenshots"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _missing("Chromium", "no `chromium` on PATH; apt-get install chromium")
    assert path is not None
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Tab:
    """A page in its own browser context (its own cookies), recording every request URL."""

    context: BrowserContext
    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def outside(self) -> list[str]:
        """Requests that went anywhere but the server under test."""
        return [url for url in self.requests if not url.startswith(self.base + "/")]

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def sign_in(self, login: str, password: str) -> None:
        await self.goto("/dashboard/login")
        await self.page.get_by_label("E-mail or username").fill(login)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(self.base + "/dashboard/")


@asynccontextmanager
async def tab(
    browser: Browser, base: str, viewport: dict[str, int] = DESKTOP
) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    opened = Tab(context, page, base)

    def record(request: Request) -> None:
        opened.requests.append(request.url)

    page.on("request", record)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of dangerous buttons
    try:
        yield opened
    finally:
        await context.close()
    assert not opened.outside(), f"requests left the server: {opened.outside()}"
    # No script error and no Content-Security-Policy violation on any page; the 4xx a test
    # provokes on purpose (a refused POST, a missing job) are logged as failed resources.
    unexpected = [e for e in opened.errors if "Failed to load resource" not in e]
    assert not unexpected, f"the pages logged errors: {unexpected}"


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """docs/screenshots/<name>.png under `make screenshots`, else a scratch file."""
    if os.environ.get(SCREENSHOTS_ENV):
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT_DIR / f"{name}.png"
    return tmp_path / f"{name}.png"
