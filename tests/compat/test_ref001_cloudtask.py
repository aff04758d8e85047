"""Reference 001 (CloudTask) replayed: its README's curl calls, with and without verification.

``POST /auth/register`` and ``POST /auth/login`` answer ``{"token"}``; ``POST /jobs``
``{"type": "email", "payload": {...}}`` with ``Authorization: Bearer`` answers 201 with the
job; ``GET /jobs[/{id}]`` are the caller's own; ``GET /actuator/health`` is ``{"status": "UP"}``.
Secure default: with e-mail verification on, the register token works once the e-mail is
verified (``email_verification=False`` restores the documented flow).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.domain.states import JobState
from tests.api.conftest import Api, api_settings, running_api

EMAIL = "user@example.com"
PASSWORD = "securePassword123"
# The README's body, as curl sends it.
README_JOB: dict[str, Any] = {
    "type": "email",
    "payload": {"to": "recipient@example.com", "subject": "Hello"},
}
# The same with a body, which Conveyor's `email` job type needs.
EMAIL_JOB: dict[str, Any] = {
    "type": "email",
    "payload": {"to": "recipient@example.com", "subject": "Hello", "text": "Hi there."},
}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(db_url, tmp_path)) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(api: Api, email: str = EMAIL, password: str = PASSWORD) -> str:
    r = await api.client.post("/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["token"]
    token: str = r.json()["token"]
    return token


async def login(api: Api, email: str = EMAIL, password: str = PASSWORD) -> str:
    r = await api.client.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["token"]
    token: str = r.json()["token"]
    return token


async def verify(api: Api, email: str = EMAIL) -> None:
    code = await api.code_for(email)
    r = await api.client.post("/api/v1/auth/verify", json={"email": email, "code": code})
    assert r.status_code == 200, r.text


async def create(api: Api, token: str, body: dict[str, Any] = EMAIL_JOB) -> httpx.Response:
    return await api.client.post("/jobs", json=body, headers=bearer(token))


async def test_the_register_token_works_once_the_email_is_verified(api: Api) -> None:
    token = await register(api)
    r = await create(api, token)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == "verify your e-mail address before using jobs"
    r = await api.client.get("/jobs", headers=bearer(token))
    assert r.status_code == 403
    # Signing in does not get around it.
    r = await create(api, await login(api))
    assert r.status_code == 403

    await verify(api)
    r = await create(api, token)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["type"] == "email" and job["status"] == "queued" and job["id"]
    assert job["payload"] == {**EMAIL_JOB["payload"], "html": None}
    assert (await api.engine.jobs.get(job["id"])).queue == "mail"


async def test_the_readme_flow_with_verification_off(db_url: str, tmp_path: Path) -> None:
    settings = api_settings(db_url, tmp_path, email_verification=False)
    async with running_api(settings) as api:
        r = await api.client.get("/actuator/health")
        assert r.status_code == 200 and r.json() == {"status": "UP"}

        token = await register(api)
        r = await create(api, token)
        assert r.status_code == 201, r.text
        first = r.json()
        assert {"id", "type", "status"} <= set(first)
        assert first["type"] == "email" and first["status"] == JobState.QUEUED

        token = await login(api)
        r = await create(api, token)
        assert r.status_code == 201, r.text
        second = r.json()
        assert await api.mails_to(EMAIL) == []  # no verification code with verification off

        other = await register(api, "other@example.com")
        r = await create(api, other)
        assert r.status_code == 201
        elsewhere = r.json()

        r = await api.client.get("/jobs", headers=bearer(token))
        assert r.status_code == 200
        assert {j["id"] for j in r.json()} == {first["id"], second["id"]}
        r = await api.client.get(f"/jobs/{first['id']}", headers=bearer(token))
        assert r.status_code == 200 and r.json()["id"] == first["id"]
        r = await api.client.get(f"/jobs/{elsewhere['id']}", headers=bearer(token))
        assert r.status_code == 404
        r = await api.client.get(f"/jobs/{first['id']}", headers=bearer(other))
        assert r.status_code == 404
        r = await api.client.get("/jobs", headers=bearer(other))
        assert [j["id"] for j in r.json()] == [elsewhere["id"]]
        r = await api.client.get("/jobs")
        assert r.status_code == 401

        # Bad credentials and a taken e-mail.
        r = await api.client.post("/auth/login", json={"email": EMAIL, "password": "wrong"})
        assert r.status_code == 401 and "token" not in r.text
        r = await api.client.post("/auth/register", json={"email": EMAIL})
        assert r.status_code == 422
        taken = await register(api)  # answers like a new account ...
        r = await create(api, taken)
        assert r.status_code == 401  # ... but its token authenticates nobody


async def test_the_readme_email_body_without_text_is_accepted(api: Api) -> None:
    await register(api)
    await verify(api)
    r = await create(api, await login(api), README_JOB)
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "email"


async def test_a_taken_email_cannot_be_told_from_a_new_one(api: Api) -> None:
    await register(api, "taken@example.com")
    await verify(api, "taken@example.com")
    taken = await register(api, "taken@example.com")
    new = await register(api, "new@example.com")
    answers = [await create(api, token) for token in (taken, new)]
    assert [r.status_code for r in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
