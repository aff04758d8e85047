"""Jobs over HTTP: validation, idempotency, listing, lifecycle calls, stats, job types."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api


async def submit(api: Api, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await api.client.post("/api/v1/jobs", json={"type": "noop", **body}, headers=headers)
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


async def test_payload_is_validated_against_the_job_type(api: Api) -> None:
    headers = await api.user("ada@example.com")
    bad = await api.client.post(
        "/api/v1/jobs", json={"type": "sleep", "payload": {"seconds": -1}}, headers=headers
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["errors"][0]["loc"] == ["seconds"]
    unknown = await api.client.post("/api/v1/jobs", json={"type": "nope"}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_job_type"
    listing = (await api.client.get("/api/v1/jobs", headers=headers)).json()
    assert listing["items"] == []


async def test_idempotency_key_header_returns_the_same_job(api: Api) -> None:
    headers = await api.user("ada@example.com")
    keyed = {**headers, "Idempotency-Key": "order-42"}
    first = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=keyed)
    again = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=keyed)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await api.user("bob@example.com")
    theirs = await api.client.post(
        "/api/v1/jobs", json={"type": "noop"}, headers={**other, "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_list_filters_and_cursor_pagination(api: Api) -> None:
    headers = await api.user("ada@example.com")
    ids = [
        (await submit(api, headers, tags=["even" if i % 2 == 0 else "odd"]))["id"] for i in range(5)
    ]
    await submit(api, headers, queue="mail")
    page = (await api.client.get("/api/v1/jobs?limit=2&queue=default", headers=headers)).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = (
        await api.client.get(
            f"/api/v1/jobs?limit=10&queue=default&cursor={page['next_cursor']}", headers=headers
        )
    ).json()
    assert [j["id"] for j in rest["items"]] == ids[::-1][2:] and rest["next_cursor"] is None
    even = (await api.client.get("/api/v1/jobs?tag=even", headers=headers)).json()["items"]
    assert {j["id"] for j in even} == {ids[0], ids[2], ids[4]}
    queued = (
        await api.client.get("/api/v1/jobs?state=queued&state=running", headers=headers)
    ).json()
    assert len(queued["items"]) == 6


async def test_other_users_jobs_look_missing_and_admins_see_all(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    job = await submit(api, ada)
    for method, path in [
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("POST", f"/api/v1/jobs/{job['id']}/cancel"),
        ("POST", f"/api/v1/jobs/{job['id']}/retry"),
        ("DELETE", f"/api/v1/jobs/{job['id']}"),
        ("GET", f"/api/v1/jobs/{job['id']}/result"),
    ]:
        theirs = await api.client.request(method, path, headers=bob)
        missing = await api.client.request(method, path.replace(job["id"], "0" * 36), headers=bob)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    assert (await api.client.get("/api/v1/jobs", headers=bob)).json()["items"] == []
    admin = await api.admin()
    everyone = (await api.client.get("/api/v1/jobs", headers=admin)).json()["items"]
    assert [j["id"] for j in everyone if j["type"] != "account_mail"] == [job["id"]]


async def test_cancel_retry_delete_and_result_follow_the_state_machine(api: Api) -> None:
    headers = await api.user("ada@example.com")
    job = await submit(api, headers, delay=3600)
    assert job["state"] == "scheduled"
    early = await api.client.get(f"/api/v1/jobs/{job['id']}/result", headers=headers)
    assert early.status_code == 409
    undeletable = await api.client.delete(f"/api/v1/jobs/{job['id']}", headers=headers)
    assert undeletable.status_code == 409
    not_failed = await api.client.post(f"/api/v1/jobs/{job['id']}/retry", headers=headers)
    assert not_failed.status_code == 409
    assert not_failed.json()["error"]["code"] == "illegal_transition"
    cancelled = await api.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
    assert cancelled.json()["state"] == "cancelled"
    twice = await api.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
    assert twice.status_code == 409
    retried = await api.client.post(f"/api/v1/jobs/{job['id']}/retry", headers=headers)
    assert retried.json()["state"] == "queued"
    await api.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
    gone = await api.client.delete(f"/api/v1/jobs/{job['id']}", headers=headers)
    assert gone.status_code == 204
    assert (await api.client.get(f"/api/v1/jobs/{job['id']}", headers=headers)).status_code == 404


async def test_batch_is_all_or_nothing(api: Api) -> None:
    headers = await api.user("ada@example.com")
    good = {"type": "noop"}
    bad = {"type": "sleep", "payload": {"seconds": "x"}}
    refused = await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [good, bad]}, headers=headers
    )
    assert refused.status_code == 422
    assert (await api.client.get("/api/v1/jobs", headers=headers)).json()["items"] == []
    made = await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [good, good, good]}, headers=headers
    )
    assert made.status_code == 201 and len(made.json()) == 3


async def test_stats_and_job_types(api: Api) -> None:
    headers = await api.user("ada@example.com")
    await submit(api, headers)
    await submit(api, headers, queue="mail")
    stats = (await api.client.get("/api/v1/stats", headers=headers)).json()
    assert stats["totals"]["queued"] == 2
    assert {q["queue"] for q in stats["queues"]} == {"default", "mail"}
    types = {t["name"]: t for t in (await api.client.get("/api/v1/job-types")).json()}
    assert {"noop", "sleep", "cpu_hash"} <= set(types)
    assert "seconds" in types["sleep"]["payload_schema"]["properties"]
    schema = (await api.client.get("/openapi.json")).json()
    assert "sleepPayload" in schema["components"]["schemas"]


async def test_schedules_crud_is_scoped_to_the_owner(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    body = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "type": "noop"}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["next_fire_at"] is not None
    path = f"/api/v1/schedules/{schedule['id']}"
    assert (await api.client.get(path, headers=bob)).status_code == 404
    assert (await api.client.post("/api/v1/schedules", json=body, headers=ada)).status_code == 409
    bad = await api.client.post(
        "/api/v1/schedules", json={**body, "name": "x", "cron": "bad"}, headers=ada
    )
    assert bad.status_code == 422
    paused = (await api.client.post(f"{path}/pause", headers=ada)).json()
    assert paused["paused"] is True
    changed = await api.client.patch(
        path, json={"cron": "*/10 * * * *", "paused": False}, headers=ada
    )
    assert changed.json()["cron"] == "*/10 * * * *" and changed.json()["paused"] is False
    assert [s["id"] for s in (await api.client.get("/api/v1/schedules", headers=ada)).json()] == [
        schedule["id"]
    ]
    assert (await api.client.delete(path, headers=bob)).status_code == 404
    assert (await api.client.delete(path, headers=ada)).status_code == 204
