"""The REST side of the dashboard's services: search and sort, bulk, queues, workers."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api


async def submit(api: Api, headers: dict[str, str], **body: Any) -> str:
    r = await api.client.post("/api/v1/jobs", json={"type": "noop", **body}, headers=headers)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


async def test_list_searches_text_and_sorts_with_offset_pages(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    low = await submit(api, ada, payload={"city": "Lyon"}, priority=1)
    high = await submit(api, ada, payload={"city": "lyonnais"}, priority=7)
    await submit(api, ada, payload={"city": "Paris"}, priority=3)
    await submit(api, bob, payload={"city": "Lyon"})

    r = await api.client.get("/api/v1/jobs", params={"text": "LYON"}, headers=ada)
    assert r.status_code == 200
    assert {j["id"] for j in r.json()["items"]} == {low, high}  # not bob's

    params = {"sort": "-priority", "limit": 2}
    first = (await api.client.get("/api/v1/jobs", params=params, headers=ada)).json()
    assert [j["priority"] for j in first["items"]] == [7, 3]
    assert first["total"] == 3 and first["next_offset"] == 2 and first["next_cursor"] is None
    rest = await api.client.get("/api/v1/jobs", params={**params, "offset": 2}, headers=ada)
    assert [j["id"] for j in rest.json()["items"]] == [low]
    assert rest.json()["next_offset"] is None

    bad = await api.client.get("/api/v1/jobs", params={"sort": "payload"}, headers=ada)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "sort"
    mixed = {"sort": "priority", "cursor": low}
    assert (await api.client.get("/api/v1/jobs", params=mixed, headers=ada)).status_code == 422
