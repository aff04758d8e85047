"""The queued quota on the compat doors (docs/flow-control.md, "Quotas"): every door that
stores jobs checks the owner's cap in the transaction that inserts, answers 429 in its own
error shape, and stores nothing over it. Both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from conveyor.store.tables import jobs, users
from tests.api.conftest import Api, api_settings, running_api

VISITS = {"count": 1, "visits": [{"store_id": "RP00001", "image_url": ["https://e.com/a.jpg"]}]}
# Each door that stores a job: its path and a body it accepts.
DOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "jobscope": ("/jobs", {"type": "generic", "payload": {"title": "resize"}}),  # 000 and 001
    "store_visits": ("/api/jobs", VISITS),  # 002
    "django": ("/api/jobs/", {"title": "resize"}),  # 003
    "tasks": ("/tasks", {"title": "resize", "description": ""}),  # 004: a task and its job
}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(db_url, tmp_path, quota_max_queued=1, store_visit_delay="0")
    async with running_api(settings) as running:
        yield running


async def owned(api: Api, email: str) -> int:
    """The user's jobs stored, whatever their state."""
    mine = select(users.c.id).where(users.c.email == email).scalar_subquery()
    query = select(func.count()).select_from(jobs).where(jobs.c.owner_id == mine)
    async with api.engine.backend.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def post(api: Api, door: str, headers: dict[str, str]) -> httpx.Response:
    path, body = DOORS[door]
    return await api.client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_submit_over_the_queued_quota_is_429_in_the_door_s_shape(
    api: Api, door: str
) -> None:
    email = f"{door}@example.com"
    headers = await api.user(email)
    first = await post(api, door, headers)
    assert first.status_code == 201, first.text
    assert await owned(api, email) == 1
    over = await post(api, door, headers)
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    if door == "store_visits":  # reference 002's shape: {"error": "<message>"}
        assert isinstance(error, str) and "quota exceeded" in error
    else:  # the other references' doors answer errors in the primary API's shape
        assert error["code"] == "quota_exceeded"
        assert error["details"] == {"max_queued": 1, "waiting": 1, "requested": 1}
    assert await owned(api, email) == 1  # nothing stored
    if door == "tasks":  # nor the task the job would have completed
        listed = await api.client.get("/tasks", headers=headers)
        assert len(listed.json()) == 1, listed.text


async def test_a_user_s_own_cap_counts_on_the_compat_doors(api: Api) -> None:
    headers = await api.user("own@example.com")
    async with api.engine.backend.db.write() as conn:
        await conn.execute(
            update(users).where(users.c.email == "own@example.com").values(max_queued=3)
        )
    headers = await api.login("own@example.com")  # the cap is read with the caller's account
    for door in ("jobscope", "django", "store_visits"):
        r = await post(api, door, headers)
        assert r.status_code == 201, (door, r.text)
    r = await post(api, "tasks", headers)
    assert r.status_code == 429, r.text
    assert await owned(api, "own@example.com") == 3
