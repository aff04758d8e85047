"""The primary flow a person follows: register, verify, submit, watch it complete."""

from __future__ import annotations

import asyncio

from conveyor.domain.states import JobState
from tests.api.conftest import Api


async def test_register_verify_submit_and_read_back(api: Api) -> None:
    headers = await api.user("ada@example.com")
    me = (await api.client.get("/api/v1/me", headers=headers)).json()
    assert me["email"] == "ada@example.com" and me["verified"] and me["role"] == "user"

    r = await api.client.post(
        "/api/v1/jobs", json={"type": "sleep", "payload": {"seconds": 0}}, headers=headers
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["owner_id"] == me["id"]

    worker = api.engine.worker(concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            current = (await api.client.get(f"/api/v1/jobs/{job['id']}", headers=headers)).json()
            if current["state"] == JobState.COMPLETED:
                break
            await asyncio.sleep(0.05)
        result = await api.client.get(f"/api/v1/jobs/{job['id']}/result", headers=headers)
        assert result.status_code == 200
        assert result.json()["result"] == {"slept": 0.0, "attempt": 1}
    finally:
        worker.stop(force=True)
        await task
