"""Dashboard fixtures: an app on each database with a signed-in httpx client, and a real
server (uvicorn on a free loopback port, with a worker and a scheduler) for the browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor.runtime import Engine
from conveyor.server import create_app
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Api, api_settings, running_api
from tests.support.engine import processing
from tests.support.serving import serving

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TIMEOUT = 10.0


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, login: str, password: str) -> str:
    """Sign in through the dashboard's form; the session's CSRF token."""
    form = await client.get("/dashboard/login")
    assert form.status_code == 200, form.text
    r = await client.post(
        "/dashboard/login",
        data={"login": login, "password": password, "csrf_token": csrf_of(form.text)},
    )
    assert r.status_code == 303, r.text
    page = await client.get("/dashboard/keys")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


@dataclass
class Browserless:
    """An app, and a signed-in client per role."""

    api: Api
    admin: httpx.AsyncClient
    admin_csrf: str
    others: list[httpx.AsyncClient]

    async def client(self) -> httpx.AsyncClient:
        """Another cookie jar on the same app (another browser), closed after the test."""
        transport = httpx.ASGITransport(app=self.api.client._transport.app)  # type: ignore[attr-defined]
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        self.others.append(client)
        return client


@pytest.fixture
async def dash(db_url: str, tmp_path: Path) -> AsyncIterator[Browserless]:
    async with running_api(api_settings(db_url, tmp_path)) as api:
        csrf = await sign_in(api.client, ADMIN_EMAIL, ADMIN_PASSWORD)
        dash = Browserless(api, api.client, csrf, [])
        yield dash
        for client in dash.others:
            await client.aclose()


@dataclass
class Served:
    """The app behind a real socket, processing jobs; `base` is its URL."""

    base: str
    api: Api


@pytest.fixture
async def served(db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    settings = api_settings(db_url, tmp_path, poll_interval=0.2, scheduler_interval=0.2)
    engine = await Engine.open(settings)
    try:
        async with serving(create_app(settings, engine=engine), grace=2) as (_, base):
            client = httpx.AsyncClient(base_url=base, timeout=TIMEOUT, trust_env=False)
            mail = Path(settings.mail_url.removeprefix("file://"))
            async with client, processing(engine):
                yield Served(base, Api(client, engine, settings, mail))
    finally:
        await engine.close()
