"""Reference 000 (JobScope) replayed: ``POST /login`` as ``admin``, Bearer tokens, ``POST /jobs``,
``PATCH /jobs/{id}/status``, and the secure defaults: ``GET /jobs[/{id}]`` need a token and are
scoped to the caller, ``GET /jobs/stats`` is public with counts only, and the documented
``admin`` / ``password`` account does not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.domain.states import JobState
from tests.api.conftest import ADMIN_PASSWORD, Api, api_settings, running_api

JOB = {"type": "generic", "payload": {"title": "resize the logo"}}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(db_url, tmp_path, poll_interval=0.05)) as running:
        yield running


async def jobscope_login(api: Api, username: str, password: str) -> httpx.Response:
    return await api.client.post("/login", json={"username": username, "password": password})


async def bearer(api: Api, username: str, password: str) -> dict[str, str]:
    r = await jobscope_login(api, username, password)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["token"]
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def create(api: Api, headers: dict[str, str], body: Any = None) -> dict[str, Any]:
    r = await api.client.post("/jobs", json=JOB if body is None else body, headers=headers)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


async def patch_status(
    api: Api, job_id: str, status: str, headers: dict[str, str]
) -> httpx.Response:
    return await api.client.patch(
        f"/jobs/{job_id}/status", json={"status": status}, headers=headers
    )


async def completed(api: Api, job_id: str) -> None:
    """Run a worker until the job has completed."""
    worker = api.engine.worker("*", concurrency=2)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 15
    try:
        while (await api.engine.jobs.get(job_id)).state is not JobState.COMPLETED:
            assert time.monotonic() < deadline, "the job did not complete"
            await asyncio.sleep(0.02)
    finally:
        worker.stop(force=True)
        await task


async def test_admin_logs_in_with_the_configured_password_not_the_documented_one(
    api: Api,
) -> None:
    headers = await bearer(api, "admin", ADMIN_PASSWORD)
    r = await api.client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
    # The username may also be the e-mail (contract), and the 004 shape {"email"} works too.
    await bearer(api, "admin@example.com", ADMIN_PASSWORD)
    r = await api.client.post(
        "/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 200 and list(r.json()) == ["token"]

    # The documented default admin / password does not exist.
    r = await jobscope_login(api, "admin", "password")
    assert r.status_code == 401, r.text
    assert "token" not in r.json()
    r = await jobscope_login(api, "nobody", "password")
    assert r.status_code == 401
    r = await api.client.post("/login", json={"password": "password"})
    assert r.status_code == 422


async def test_status_changes_follow_the_roles_and_the_state_machine(api: Api) -> None:
    await api.user("alice@example.com")
    alice = await bearer(api, "alice@example.com", "correct horse battery")
    bob = await api.user("bob@example.com")
    admin = await bearer(api, "admin", ADMIN_PASSWORD)

    # The owner cancels.
    job = await create(api, alice)
    assert job["status"] == "queued" and job["type"] == "generic"
    assert job["payload"] == {"title": "resize the logo", "description": ""}
    r = await patch_status(api, job["id"], "cancelled", alice)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == job["id"] and r.json()["status"] == "cancelled"
    assert (await api.engine.jobs.get(job["id"])).state is JobState.CANCELLED
    # cancelled -> running is not an edge of the state machine, even for an admin.
    r = await patch_status(api, job["id"], "running", admin)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "illegal_transition"
    assert r.json()["error"]["message"] == "a cancelled job cannot become running"
    r = await patch_status(api, job["id"], "cancelled", alice)
    assert r.status_code == 409
    assert r.json()["error"]["message"] == "a cancelled job cannot become cancelled"

    # A non-admin may only cancel; someone else's job is not found, whatever they ask.
    job = await create(api, alice)
    r = await patch_status(api, job["id"], "completed", alice)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == (
        "owners may only cancel their jobs; other changes are for admins"
    )
    for target in ("completed", "cancelled"):
        r = await patch_status(api, job["id"], target, bob)
        assert r.status_code == 404, (target, r.text)
    r = await patch_status(api, "no-such-job", "completed", alice)
    assert r.status_code == 404
    r = await patch_status(api, job["id"], "bogus", alice)
    assert r.status_code == 422
    r = await api.client.patch(f"/jobs/{job['id']}/status", json={"status": "cancelled"})
    assert r.status_code == 401
    assert (await api.engine.jobs.get(job["id"])).state is JobState.QUEUED
    # An admin cancels anyone's job, and may queue it again (cancelled -> queued is an edge).
    r = await patch_status(api, job["id"], "cancelled", admin)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await patch_status(api, job["id"], "queued", admin)
    assert r.status_code == 200 and r.json()["status"] == "queued"

    # A completed job stays completed.
    await completed(api, job["id"])
    for target in ("running", "queued", "cancelled", "failed"):
        r = await patch_status(api, job["id"], target, admin)
        assert r.status_code == 409, (target, r.text)
        assert r.json()["error"]["message"] == f"a completed job cannot become {target}"
    r = await api.client.get(f"/jobs/{job['id']}", headers=alice)
    assert r.json()["status"] == "completed"
    assert r.json()["result"]["title"] == "resize the logo"


async def test_jobs_need_a_token_and_are_scoped_while_stats_are_public_counts(api: Api) -> None:
    r = await api.client.post("/jobs", json=JOB)
    assert r.status_code == 401
    r = await api.client.post("/jobs", json=JOB, headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401
    alice = await api.user("alice@example.com")
    bob = await api.user("bob@example.com")
    r = await api.client.post("/jobs", json={"type": "no-such-type"}, headers=alice)
    assert r.status_code == 422, r.text
    r = await api.client.post("/jobs", json={"type": "generic", "payload": {}}, headers=alice)
    assert r.status_code == 422, r.text

    mine = await create(api, alice)
    theirs = await create(api, bob, {"type": "generic", "payload": {"title": "bob's"}})
    for path in ("/jobs", f"/jobs/{mine['id']}"):
        r = await api.client.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"] == "Bearer"
    r = await api.client.get("/jobs", headers=alice)
    assert r.status_code == 200
    assert [j["id"] for j in r.json()] == [mine["id"]]
    r = await api.client.get(f"/jobs/{mine['id']}", headers=alice)
    assert r.status_code == 200 and r.json()["id"] == mine["id"]
    r = await api.client.get(f"/jobs/{theirs['id']}", headers=alice)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"

    admin = await bearer(api, "admin", ADMIN_PASSWORD)
    r = await api.client.get("/jobs", headers=admin)
    users_jobs = {j["id"] for j in r.json() if j["type"] != "account_mail"}  # codes aside
    assert users_jobs == {mine["id"], theirs["id"]}
    r = await api.client.get(f"/jobs/{theirs['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["payload"]["title"] == "bob's"

    # Stats: public, aggregate counts only.
    await patch_status(api, mine["id"], "cancelled", alice)
    r = await api.client.get("/jobs/stats")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"total", "by_status"}
    assert body["total"] == 2  # the users' jobs; not the account service's mail
    assert body["by_status"] == {s.value: 0 for s in JobState} | {"queued": 1, "cancelled": 1}
    for leak in (mine["id"], theirs["id"], "resize the logo", "bob's", "alice", "generic"):
        assert leak not in r.text


async def test_stats_do_not_tell_whether_an_address_is_registered(api: Api) -> None:
    """Registering a taken address mails its owner (a durable job): the public counts must not
    move, or they would answer "is this address registered?" to anyone."""
    await api.user("carol@example.com")
    before = (await api.client.get("/jobs/stats")).json()
    for address in ("carol@example.com", "nobody@example.com"):
        body = {"email": address, "password": "Another-long-passw0rd"}
        r = await api.client.post("/api/v1/auth/register", json=body)
        assert r.status_code in (201, 202), r.text
        assert (await api.client.get("/jobs/stats")).json() == before, address
