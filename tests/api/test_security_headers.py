"""Answers that carry a credential are never cached (`Cache-Control: no-store`), and no
answer may be content-sniffed by a browser (`X-Content-Type-Options: nosniff`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import PASSWORD, Api, api_settings, running_api


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(db_url, tmp_path, allow_private_urls=True)) as running:
        yield running


async def credential_answers(api: Api) -> dict[str, httpx.Response]:
    client = api.client
    auth = await api.user("ada@example.com")
    signed_in = await client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    refresh = signed_in.json()["refresh_token"]
    django = await client.post(
        "/api/login/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    hook = await client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=auth)
    return {
        "login": signed_in,
        "refresh": await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh}),
        "API key": await client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=auth),
        "webhook": hook,
        "webhook secret": await client.post(
            f"/api/v1/webhooks/{hook.json()['id']}/secret", headers=auth
        ),
        "callback secret": await client.post("/api/v1/webhooks/callback-secret", headers=auth),
        "000 login": await client.post(
            "/login", json={"username": "ada@example.com", "password": PASSWORD}
        ),
        "001 register": await client.post(
            "/auth/register", json={"email": "bob@example.com", "password": PASSWORD}
        ),
        "001 login": await client.post(
            "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        ),
        "003 login": django,
        "003 refresh": await client.post(
            "/api/token/refresh/", json={"refresh": django.json()["refresh"]}
        ),
    }


async def test_answers_with_a_credential_say_no_store(api: Api) -> None:
    answers = await credential_answers(api)
    wrong = [
        f"{what}: {r.status_code} {r.headers.get('cache-control')}"
        for what, r in answers.items()
        if r.status_code >= 300 or r.headers.get("cache-control") != "no-store"
    ]
    assert wrong == []


async def test_every_answer_says_nosniff(api: Api) -> None:
    client = api.client
    auth = await api.user("ada@example.com")
    answers = {
        "200": await client.get("/api/v1/me", headers=auth),
        "401": await client.get("/api/v1/me"),
        "404": await client.get("/api/v1/jobs/nope", headers=auth),
        "422": await client.post("/api/v1/jobs", json={"type": 1}, headers=auth),
        "413": await client.post(
            "/api/v1/jobs", content=b"x" * (api.settings.max_body_bytes + 1), headers=auth
        ),
        "health": await client.get("/health"),
        "openapi": await client.get("/openapi.json"),
        "reference 004": await client.get("/tasks", headers=auth),
        "dashboard": await client.get("/dashboard/login"),
    }
    wrong = [
        f"{what}: {r.status_code} {r.headers.get_list('x-content-type-options')}"
        for what, r in answers.items()
        if r.headers.get_list("x-content-type-options") != ["nosniff"]
    ]
    assert wrong == []
