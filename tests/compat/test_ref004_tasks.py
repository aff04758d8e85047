"""Reference 004 (Go task manager) replayed: its Postman guide, steps 1-5, with the token sent
bare in ``Authorization`` as the guide does; plus the secure defaults (``role: "admin"`` only
from an admin; with verification on, only verified users use tasks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from conveyor.domain.states import JobState
from tests.api.conftest import Api, api_settings, running_api
from tests.support.engine import processing

EMAIL = "dev@example.com"
PASSWORD = "securepassword123"
TASK = {"title": "Deployment Task", "description": "description here"}
FAST: dict[str, Any] = {"poll_interval": 0.05, "scheduler_interval": 0.05}


@asynccontextmanager
async def reference_api(db_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    """The documented flow: e-mail verification off, unless a test turns it on."""
    values: dict[str, Any] = {"email_verification": False, **FAST, **overrides}
    async with running_api(api_settings(db_url, tmp_path, **values)) as api:
        yield api


async def register(
    api: Api, email: str = EMAIL, headers: dict[str, str] | None = None, **extra: str
) -> httpx.Response:
    body = {"email": email, "password": PASSWORD, **extra}
    return await api.client.post("/register", json=body, headers=headers or {})


async def token_for(api: Api, email: str = EMAIL) -> dict[str, str]:
    """Step 2, and the header as the guide sets it: the bare token, no "Bearer"."""
    r = await api.client.post("/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["token"]
    return {"Authorization": r.json()["token"]}


async def tasks_of(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.client.get("/tasks", headers=headers)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


async def test_registering_an_admin_needs_an_admin(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path) as api:
        # Step 1 exactly as written: anonymous, role admin. Refused, and nobody is created.
        r = await register(api, role="admin")
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == "only an admin can create an admin account"
        r = await api.client.post("/login", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 401

        r = await register(api, role="user")
        assert r.status_code == 201, r.text
        assert r.json() == {"message": "User registered"}
        r = await register(api, "norole@example.com")
        assert r.status_code == 201, r.text
        r = await register(api, "boss@example.com", role="superuser")
        assert r.status_code == 422
        # A user cannot make admins either.
        user = await token_for(api)
        r = await register(api, "boss@example.com", headers=user, role="admin")
        assert r.status_code == 403
        me = await api.client.get("/api/v1/me", headers=user)
        assert me.json()["role"] == "user"

        r = await register(api, "boss@example.com", headers=await api.admin(), role="admin")
        assert r.status_code == 201, r.text
        boss = await token_for(api, "boss@example.com")
        me = await api.client.get("/api/v1/me", headers=boss)
        assert me.status_code == 200, me.text
        assert me.json()["role"] == "admin"
        r = await api.client.get("/api/v1/me", headers=await token_for(api, "norole@example.com"))
        assert r.json()["role"] == "user"


async def test_the_postman_guide(db_url: str, tmp_path: Path) -> None:
    async with reference_api(db_url, tmp_path, task_autocomplete_seconds=1) as api:
        assert (await register(api, role="user")).status_code == 201
        headers = await token_for(api)
        assert (await register(api, "other@example.com")).status_code == 201
        other = await token_for(api, "other@example.com")

        # 3. Create a task: 201, pending.
        r = await api.client.post("/tasks", json=TASK, headers=headers)
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["status"] == "pending" and task["title"] == TASK["title"]
        assert task["description"] == TASK["description"] and isinstance(task["id"], int)
        assert task["completed_at"] is None
        r = await api.client.post("/tasks", json={"title": "theirs"}, headers=other)
        assert r.status_code == 201, r.text
        theirs = r.json()

        # 4. Step A: pending at once; step B: completed after the delay.
        assert [t["status"] for t in await tasks_of(api, headers)] == ["pending"]
        started = time.monotonic()
        async with processing(api.engine):
            while (await tasks_of(api, headers))[0]["status"] != "completed":
                assert time.monotonic() - started < 10, "the task never completed"
                await asyncio.sleep(0.05)
        (done,) = await tasks_of(api, headers)
        assert done["id"] == task["id"] and done["completed_at"] is not None
        assert done["completed_at"] >= task["created_at"]

        # 5. Delete: someone else's is not found; one's own goes.
        r = await api.client.delete(f"/tasks/{theirs['id']}", headers=headers)
        assert r.status_code == 404, r.text
        r = await api.client.delete(f"/tasks/{task['id']}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"message": "Task deleted"}
        assert await tasks_of(api, headers) == []
        r = await api.client.delete(f"/tasks/{task['id']}", headers=headers)
        assert r.status_code == 404
        assert [t["id"] for t in await tasks_of(api, other)] == [theirs["id"]]

        # A pending task deleted: its completion job is cancelled. "Bearer" works as well.
        bearer = {"Authorization": f"Bearer {headers['Authorization']}"}
        r = await api.client.post("/tasks", json={"title": "short-lived"}, headers=bearer)
        assert r.status_code == 201, r.text
        fresh = r.json()
        (record,) = [t for t in await api.engine.tasks.list(None) if t.id == fresh["id"]]
        assert record.job_id is not None
        r = await api.client.delete(f"/tasks/{fresh['id']}", headers=bearer)
        assert r.status_code == 200
        assert (await api.engine.jobs.get(record.job_id)).state is JobState.CANCELLED

        for call in (api.client.get("/tasks"), api.client.post("/tasks", json=TASK)):
            assert (await call).status_code == 401
        r = await api.client.delete("/tasks/0", headers=headers)
        assert r.status_code == 422


async def test_with_verification_on_only_verified_users_use_tasks(
    db_url: str, tmp_path: Path
) -> None:
    async with reference_api(db_url, tmp_path, email_verification=True) as api:
        r = await register(api)
        assert r.status_code == 201, r.text
        headers = await token_for(api)
        r = await api.client.post("/tasks", json=TASK, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == "verify your e-mail address before using jobs"
        r = await api.client.get("/tasks", headers=headers)
        assert r.status_code == 403
        assert await api.engine.tasks.list(None) == []

        code = await api.code_for(EMAIL)
        r = await api.client.post("/api/v1/auth/verify", json={"email": EMAIL, "code": code})
        assert r.status_code == 200, r.text
        r = await api.client.post("/tasks", json=TASK, headers=headers)
        assert r.status_code == 201, r.text
        assert [t["status"] for t in await tasks_of(api, headers)] == ["pending"]
