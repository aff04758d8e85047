"""Reference 003 (Django + Celery) replayed: the README's "API Workflow" steps 1-8, its
permissions and validations, token refresh, scheduled jobs (not before their time, durable
across a restart) and the two documentation URLs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.settings import Settings
from tests.api.conftest import Api, api_settings, running_api
from tests.support.engine import processing

EMAIL = "elyas@example.com"
PASSWORD = "a long enough password"
FAST: dict[str, Any] = {"poll_interval": 0.05, "scheduler_interval": 0.05}


def settings_for(db_url: str, tmp_path: Path) -> Settings:
    return api_settings(db_url, tmp_path, **FAST)


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(settings_for(db_url, tmp_path)) as running:
        yield running


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


async def signed_up(api: Api, email: str = EMAIL) -> dict[str, str]:
    """Steps 1-4: register, read the mailed code, verify it, log in."""
    r = await api.client.post("/api/register/", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    code = await api.code_for(email)
    r = await api.client.post("/api/verify-otp/", json={"email": email, "otp": code})
    assert r.status_code == 200, r.text
    r = await api.client.post("/api/login/", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access"])


async def create(api: Api, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.client.post("/api/jobs/", json=body, headers=headers)


async def jobs_of(api: Api, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = await api.client.get("/api/jobs/", headers=headers)
    assert r.status_code == 200, r.text
    return {job["id"]: job for job in r.json()}


async def wait_for(api: Api, headers: dict[str, str], job_id: str, status: str) -> None:
    deadline = time.monotonic() + 15
    while (await jobs_of(api, headers))[job_id]["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} never became {status}"
        await asyncio.sleep(0.05)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_readme_workflow(api: Api) -> None:
    # 1. Register.
    r = await api.client.post("/api/register/", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 201, r.text
    # 2. Receive the OTP (the test's mail backend keeps it as a real .eml file).
    (mail,) = await api.mails_to(EMAIL)  # exactly one message, to the right address
    assert mail["To"] == EMAIL
    code = await api.code_for(EMAIL)
    assert re.fullmatch(r"\d{6}", code)

    # Not yet verified: signing in works, jobs and results do not.
    r = await api.client.post("/api/login/", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    unverified = bearer(r.json()["access"])
    r = await create(api, unverified, title="too early")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == "verify your e-mail address before using jobs"
    for path in ("/api/jobs/", "/api/job-results/"):
        r = await api.client.get(path, headers=unverified)
        assert r.status_code == 403, path

    # 3. Verify: a wrong code is refused, the right one once.
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await api.client.post("/api/verify-otp/", json={"email": EMAIL, "otp": wrong})
    assert r.status_code in (400, 422), r.text
    r = await api.client.post("/api/verify-otp/", json={"email": EMAIL, "otp": code})
    assert r.status_code == 200, r.text
    r = await api.client.post("/api/verify-otp/", json={"email": EMAIL, "otp": code})
    assert r.status_code in (400, 422), r.text  # single use

    # 4. Log in: an access and a refresh token.
    r = await api.client.post("/api/login/", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access", "refresh"}
    headers = bearer(r.json()["access"])
    r = await api.client.get("/api/jobs/", headers=unverified)
    assert r.status_code == 200  # the earlier token works now: verification is checked live

    # 5. Create a job, and one scheduled for later.
    r = await create(api, headers, title="Monthly report", description="Compile it")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["title"] == "Monthly report" and job["description"] == "Compile it"
    assert job["status"] == "queued" and job["scheduled_time"] is None
    later = datetime.now(UTC) + timedelta(hours=1)
    r = await create(api, headers, title="Later", scheduled_time=later.isoformat())
    assert r.status_code == 201, r.text
    scheduled = r.json()
    assert scheduled["status"] == "scheduled"
    assert moment(scheduled["scheduled_time"]) == later

    # 6.-7. Background processing completes it; the list shows the status.
    async with processing(api.engine):
        await wait_for(api, headers, job["id"], "completed")
    listed = await jobs_of(api, headers)
    assert listed[job["id"]]["status"] == "completed"
    assert listed[scheduled["id"]]["status"] == "scheduled"

    # 8. Results: only the completed job's.
    r = await api.client.get("/api/job-results/", headers=headers)
    assert r.status_code == 200, r.text
    (result,) = r.json()
    assert result["job_id"] == job["id"] and result["title"] == "Monthly report"
    assert result["result"]["message"] == "processed 'Monthly report'"
    assert result["completed_at"] is not None

    # Another user sees none of it.
    other = await signed_up(api, "other@example.com")
    assert await jobs_of(api, other) == {}
    r = await api.client.get("/api/job-results/", headers=other)
    assert r.json() == []


async def test_validation_of_new_jobs(api: Api) -> None:
    headers = await signed_up(api)
    past = datetime.now(UTC) - timedelta(minutes=1)
    r = await create(api, headers, title="Yesterday", scheduled_time=past.isoformat())
    assert r.status_code == 400, r.text
    assert r.json() == {"scheduled_time": ["The scheduled time cannot be in the past."]}
    r = await create(api, headers, title="No zone", scheduled_time="2999-01-01T00:00:00")
    assert r.status_code == 422, r.text
    r = await create(api, headers, description="no title")
    assert r.status_code == 422, r.text
    r = await create(api, {}, title="anonymous")
    assert r.status_code == 401, r.text
    assert await jobs_of(api, headers) == {}


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(api: Api) -> None:
    await signed_up(api)
    r = await api.client.post("/api/login/", json={"email": EMAIL, "password": PASSWORD})
    first = r.json()
    r = await api.client.post("/api/token/refresh/", json={"refresh": first["refresh"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert set(second) == {"access", "refresh"}
    assert second["refresh"] != first["refresh"]
    r = await api.client.get("/api/jobs/", headers=bearer(second["access"]))
    assert r.status_code == 200

    r = await api.client.post("/api/token/refresh/", json={"refresh": first["refresh"]})
    assert r.status_code == 401, r.text
    # The reuse signed the whole family out: the rotated token is refused too.
    r = await api.client.post("/api/token/refresh/", json={"refresh": second["refresh"]})
    assert r.status_code == 401, r.text
    r = await api.client.post("/api/token/refresh/", json={"refresh": first["access"]})
    assert r.status_code == 401, r.text


async def test_a_scheduled_job_starts_at_its_time_and_survives_a_restart(
    db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    async with running_api(settings) as api:
        headers = await signed_up(api)
        at = datetime.now(UTC) + timedelta(seconds=2)
        r = await create(api, headers, title="At two", scheduled_time=at.isoformat())
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        async with processing(api.engine):
            await asyncio.sleep(0.5)
            assert (await jobs_of(api, headers))[job_id]["status"] == "scheduled"
    assert datetime.now(UTC) < at, "the restart must happen before the job is due"

    async with running_api(settings) as api:
        async with processing(api.engine):
            await wait_for(api, headers, job_id, "completed")
        r = await api.client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["state"] == "completed" and job["attempt"] == 1
        assert moment(job["run_at"]) == at
        assert moment(job["started_at"]) >= at


async def test_the_documentation_urls(api: Api) -> None:
    for path in ("/api/schema/swagger-ui/", "/api/schema/redoc/"):
        r = await api.client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in r.text
