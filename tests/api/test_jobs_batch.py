"""POST /api/v1/jobs/batch reads its stored jobs back in one query, in submission order."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_a_full_batch_comes_back_in_order_with_existing_jobs_in_place(api: Api) -> None:
    headers = await api.user("ada@example.com")
    first = await api.client.post(
        "/api/v1/jobs/batch",
        json={"jobs": [{"type": "noop", "idempotency_key": "once", "tags": ["early"]}]},
        headers=headers,
    )
    assert first.status_code == 201, first.text
    (existing,) = first.json()
    jobs = [{"type": "noop", "payload": {}, "tags": [f"n{i}"]} for i in range(500)]
    jobs[250] = {"type": "noop", "idempotency_key": "once"}

    made = await api.client.post("/api/v1/jobs/batch", json={"jobs": jobs}, headers=headers)

    assert made.status_code == 201, made.text
    out = made.json()
    assert len(out) == 500
    assert [job["tags"] for job in out[:3]] == [["n0"], ["n1"], ["n2"]]
    assert out[250]["id"] == existing["id"] and out[250]["tags"] == ["early"]
    assert out[499]["tags"] == ["n499"] and out[499]["state"] == "queued"
    assert len({job["id"] for job in out}) == 500
