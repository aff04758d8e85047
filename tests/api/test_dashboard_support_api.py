"""The REST side of the dashboard's services: search and sort, bulk, queues, workers."""

from __future__ import annotations

from typing import Any

from conveyor.domain.jobs import ErrorInfo, Outcome
from conveyor.domain.states import JobState
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

    params: dict[str, str | int] = {"sort": "-priority", "limit": 2}
    first = (await api.client.get("/api/v1/jobs", params=params, headers=ada)).json()
    assert [j["priority"] for j in first["items"]] == [7, 3]
    assert first["total"] == 3 and first["next_offset"] == 2 and first["next_cursor"] is None
    rest = await api.client.get("/api/v1/jobs", params={**params, "offset": 2}, headers=ada)
    assert [j["id"] for j in rest.json()["items"]] == [low]
    assert rest.json()["next_offset"] is None

    bad = await api.client.get("/api/v1/jobs", params={"sort": "payload"}, headers=ada)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "sort"
    mixed: dict[str, str] = {"sort": "priority", "cursor": low}
    assert (await api.client.get("/api/v1/jobs", params=mixed, headers=ada)).status_code == 422


async def fail_all(api: Api, queue: str = "default") -> None:
    """What a worker would do: run every queued job of `queue` once and fail it."""
    backend = api.engine.backend
    claimed = await backend.claim("w", [queue], 1000, 30)
    error = ErrorInfo("E", "boom")
    await backend.finish("w", [Outcome(j.id, j.attempt, "failed", error=error) for j in claimed])


async def test_bulk_retry_by_filter_and_ids_within_the_callers_jobs(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    mine = [await submit(api, ada, payload={"n": n}) for n in range(3)]
    theirs = await submit(api, bob)
    await fail_all(api)

    everything = {"action": "retry", "filter": {"states": ["failed"]}, "ids": None}
    r = await api.client.post("/api/v1/jobs/bulk", json=everything, headers=ada)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 3, "changed": 3, "skipped": 0}
    assert (await api.engine.jobs.get(theirs)).state is JobState.FAILED

    by_ids = {"action": "cancel", "ids": [*mine, theirs]}
    r = await api.client.post("/api/v1/jobs/bulk", json=by_ids, headers=ada)
    assert r.json() == {"matched": 4, "changed": 3, "skipped": 1}
    assert (await api.engine.jobs.get(theirs)).state is JobState.FAILED

    admin = await api.admin()
    scoped = {"action": "retry", "filter": {"owner_id": (await _me(api, bob))}}
    r = await api.client.post("/api/v1/jobs/bulk", json=scoped, headers=admin)
    assert r.json() == {"matched": 1, "changed": 1, "skipped": 0}
    assert (await api.engine.jobs.get(theirs)).state is JobState.QUEUED


async def _me(api: Api, headers: dict[str, str]) -> str:
    r = await api.client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    user_id: str = r.json()["id"]
    return user_id


async def test_bulk_refuses_both_or_neither_selection_and_unknown_actions(api: Api) -> None:
    ada = await api.user("ada@example.com")
    for body in (
        {"action": "retry"},
        {"action": "retry", "filter": {}, "ids": ["x"]},
        {"action": "explode", "ids": ["x"]},
        {"action": "retry", "filter": {"owner": "x"}},
    ):
        r = await api.client.post("/api/v1/jobs/bulk", json=body, headers=ada)
        assert r.status_code == 422, (body, r.text)


ROUTES = [
    ("GET", "/api/v1/queues", None),
    ("POST", "/api/v1/queues/mail/pause", None),
    ("POST", "/api/v1/queues/mail/resume", None),
    ("GET", "/api/v1/workers", None),
    ("POST", "/api/v1/jobs/bulk", {"action": "retry", "filter": {"states": ["failed"]}}),
    ("GET", "/api/v1/jobs?sort=-priority&text=x", None),
]
# route -> status for (anonymous, user, admin)
EXPECTED = {
    "/api/v1/queues": (401, 200, 200),
    "/api/v1/queues/mail/pause": (401, 403, 200),
    "/api/v1/queues/mail/resume": (401, 403, 200),
    "/api/v1/workers": (401, 403, 200),
    "/api/v1/jobs/bulk": (401, 200, 200),
    "/api/v1/jobs?sort=-priority&text=x": (401, 200, 200),
}


async def test_permission_matrix_of_the_new_routes(api: Api) -> None:
    callers = [{}, await api.user("ada@example.com"), await api.admin()]
    for method, path, body in ROUTES:
        got = []
        for headers in callers:
            r = await api.client.request(method, path, json=body, headers=headers)
            got.append(r.status_code)
        assert tuple(got) == EXPECTED[path], (method, path, got)
    assert await api.engine.backend.paused_queues() == []  # the user's pause was refused


async def test_queues_pause_resume_and_counts_per_caller(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    admin = await api.admin()
    await submit(api, ada, queue="mail")
    await submit(api, bob, queue="mail")
    r = await api.client.post("/api/v1/queues/mail/pause", headers=admin)
    assert r.status_code == 200 and r.json()["paused"] is True
    assert r.json()["counts"]["queued"] == 2 and r.json()["oldest_queued_age_s"] >= 0

    mine = {q["name"]: q for q in (await api.client.get("/api/v1/queues", headers=ada)).json()}
    assert mine["mail"]["counts"] == {**dict.fromkeys((s.value for s in JobState), 0), "queued": 1}
    assert mine["mail"]["paused"] is True
    assert await api.engine.backend.claim("w", ["mail"], 10, 30) == []

    bad = await api.client.post("/api/v1/queues/no%20spaces/pause", headers=admin)
    assert bad.status_code == 422
    r = await api.client.post("/api/v1/queues/mail/resume", headers=admin)
    assert r.json()["paused"] is False
    r = await api.client.post("/api/v1/queues/never.used/resume", headers=admin)
    assert r.status_code == 200 and r.json()["paused"] is False
    assert r.json()["counts"]["queued"] == 0
    assert len(await api.engine.backend.claim("w", ["mail"], 10, 30)) == 2


async def test_workers_list_their_running_jobs(api: Api) -> None:
    ada = await api.user("ada@example.com")
    job_id = await submit(api, ada, queue="mail")
    backend = api.engine.backend
    await backend.register_worker("w-1", "host-a", 4242, ["mail"], 3)
    await backend.claim("w-1", ["mail"], 10, 30)
    r = await api.client.get("/api/v1/workers", headers=await api.admin())
    (worker,) = r.json()
    assert (worker["id"], worker["hostname"], worker["pid"]) == ("w-1", "host-a", 4242)
    assert worker["queues"] == ["mail"] and worker["concurrency"] == 3
    assert [(j["id"], j["type"], j["queue"]) for j in worker["current_jobs"]] == [
        (job_id, "noop", "mail")
    ]


async def test_throughput_chart_per_minute_for_the_caller(api: Api) -> None:
    ada = await api.user("ada@example.com")
    await submit(api, ada)
    await fail_all(api)
    r = await api.client.get("/api/v1/throughput", params={"minutes": 3}, headers=ada)
    assert r.status_code == 200
    chart = r.json()
    assert len(chart) == 3
    assert sum(p["enqueued"] for p in chart) == 1 and sum(p["failed"] for p in chart) == 1
    assert {p["failure_rate"] for p in chart if p["failed"]} == {1.0}
    assert (await api.client.get("/api/v1/throughput")).status_code == 401


async def test_queue_names_are_ascii_as_the_schema_says(api: Api) -> None:
    """The schema's `\\w` is ASCII to a client (JSON Schema's regex dialect) while Python read
    it as Unicode, so `aµ` passed the server and failed the documented pattern (found by
    schemathesis' stateful run). A name outside the documented class is refused everywhere."""
    ada = await api.user("ada@example.com")
    admin = await api.admin()
    for name in ("aµ", "é", "q\u0661"):  # a micro sign, a Latin letter, an Arabic-Indic digit
        r = await api.client.post(f"/api/v1/queues/{name}/pause", headers=admin)
        assert r.status_code == 422, (name, r.status_code)
        r = await api.client.post("/api/v1/jobs", json={"type": "noop", "queue": name}, headers=ada)
        assert r.status_code == 422, (name, r.status_code)
    assert await api.engine.backend.paused_queues() == []
    await submit(api, ada, queue="Mail_2.eu-west:1")  # every documented character
