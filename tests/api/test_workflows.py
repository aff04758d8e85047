"""The workflow routes over HTTP on both databases (docs/workflows.md, "REST API"): submit
(the whole DAG, or nothing, with the problem named), read, list, cancel, retry, delete, the
workflow's event stream, owner scoping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.domain.workflows import MAX_STEPS, WorkflowState
from tests.api.conftest import Api, api_settings, running_api
from tests.support.workflow_door_handlers import MODULE

WORKFLOWS = "/api/v1/workflows"
STREAM = {"Accept": "text/event-stream"}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(
        db_url, tmp_path, handler_modules=MODULE, poll_interval=0.1,
        rate_limit_jobs="100000/minute", allow_private_urls=True,
    )  # fmt: skip
    async with running_api(settings) as running:
        yield running


def diamond(name: str = "diamond", **policy: Any) -> dict[str, Any]:
    return {
        "name": name,
        **policy,
        "steps": [
            {"name": "a", "type": "wf_ok", "payload": {"n": 1}},
            {"name": "b", "type": "wf_ok", "depends_on": ["a"]},
            {"name": "c", "type": "wf_ok", "depends_on": ["a"]},
            {"name": "d", "type": "wf_ok", "depends_on": ["b", "c"]},
        ],
    }


async def submit(api: Api, who: dict[str, str], body: Any, **headers: str) -> httpx.Response:
    return await api.client.post(WORKFLOWS, json=body, headers={**who, **headers})


async def run_all(api: Api) -> None:
    """Every workflow run until it settles: burst workers, again while one is running (a
    burst worker may stop before the finish that releases the next steps has committed)."""
    deadline = time.monotonic() + 60
    while True:
        await api.engine.worker("default", concurrency=4, burst=True).run()
        running = await api.engine.workflows.page(owner_id=None, state=WorkflowState.RUNNING)
        if not running:
            return
        assert time.monotonic() < deadline, f"still running: {running}"
        await asyncio.sleep(0.05)


async def stored(api: Api, who: dict[str, str]) -> tuple[int, int]:
    """(workflows, jobs) the user can see."""
    w = await api.client.get(WORKFLOWS, headers=who, params={"limit": 1000})
    j = await api.client.get("/api/v1/jobs", headers=who, params={"limit": 1000})
    assert w.status_code == 200 and j.status_code == 200, (w.text, j.text)
    return len(w.json()["items"]), len(j.json()["items"])


async def test_submit_a_diamond_read_it_and_run_it(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await submit(api, ada, diamond())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "diamond" and body["state"] == "running"
    assert body["step_count"] == 4
    states = {s["name"]: s["state"] for s in body["steps"]}
    assert states == {"a": "queued", "b": "waiting", "c": "waiting", "d": "waiting"}
    assert body["steps"][0]["name"] == "a" and body["steps"][-1]["name"] == "d"
    edges = {(e["from"], e["to"]) for e in body["edges"]}
    assert edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    # each step is an ordinary job of the owner's
    job = await api.client.get(f"/api/v1/jobs/{body['steps'][0]['job_id']}", headers=ada)
    assert job.status_code == 200 and job.json()["type"] == "wf_ok"
    assert job.json()["workflow_id"] == body["id"] and job.json()["step"] == "a"

    got = await api.client.get(f"{WORKFLOWS}/{body['id']}", headers=ada)
    assert got.status_code == 200
    assert {s["name"]: s["state"] for s in got.json()["steps"]} == states

    await run_all(api)
    done = (await api.client.get(f"{WORKFLOWS}/{body['id']}", headers=ada)).json()
    assert done["state"] == "completed", done
    assert done["settled_at"] is not None
    assert {s["name"]: s["state"] for s in done["steps"]} == dict.fromkeys("abcd", "completed")
    assert done["steps"][0]["result"] == {"got": {"n": 1}}
    assert done["counts"].get("completed") == 4


@pytest.mark.parametrize(
    ("steps", "where", "words"),
    [
        (
            [
                {"name": "a", "type": "wf_ok", "depends_on": ["c"]},
                {"name": "b", "type": "wf_ok", "depends_on": ["a"]},
                {"name": "c", "type": "wf_ok", "depends_on": ["b"]},
            ],
            "steps",
            ["cycle", "a", "b", "c"],
        ),
        (
            [{"name": "a", "type": "wf_ok", "depends_on": ["ghost"]}],
            "steps.0.depends_on",
            ["unknown step", "ghost"],
        ),
        (
            [{"name": "a", "type": "wf_ok"}, {"name": "a", "type": "wf_ok"}],
            "steps.1.name",
            ["duplicate", "a"],
        ),
        (
            [{"name": "a", "type": "wf_ok"}, {"name": "b", "type": "wf_strict", "payload": {}}],
            "steps.1.payload",
            ["n"],
        ),
    ],
    ids=["cycle", "unknown-dependency", "duplicate-name", "bad-payload"],
)
async def test_an_invalid_workflow_is_422_naming_the_problem_and_stores_nothing(
    api: Api, steps: list[dict[str, Any]], where: str, words: list[str]
) -> None:
    ada = await api.user("ada@example.com")
    r = await submit(api, ada, {"name": "bad", "steps": steps})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    text = json.dumps(error)
    assert where in text, error
    for word in words:
        assert word in error["message"] or word in text, (word, error)
    assert await stored(api, ada) == (0, 0)


async def test_more_steps_than_the_maximum_is_422_and_stores_nothing(
    db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(
        db_url, tmp_path, handler_modules=MODULE, max_body_bytes=4_000_000,
        rate_limit_jobs="100000/minute",
    )  # fmt: skip
    async with running_api(settings) as api:
        ada = await api.user("ada@example.com")
        steps = [{"name": f"s{i}", "type": "wf_ok"} for i in range(MAX_STEPS + 1)]
        r = await submit(api, ada, {"name": "huge", "steps": steps})
        assert r.status_code == 422, r.text
        assert f"{MAX_STEPS:,}" in r.json()["error"]["message"]
        assert await stored(api, ada) == (0, 0)


async def test_an_unknown_job_type_is_422(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await submit(api, ada, {"name": "x", "steps": [{"name": "a", "type": "nope"}]})
    assert r.status_code == 422, r.text
    assert "nope" in r.json()["error"]["message"]
    assert await stored(api, ada) == (0, 0)


async def test_an_idempotency_key_answers_the_first_workflow(api: Api) -> None:
    ada = await api.user("ada@example.com")
    first = await submit(api, ada, diamond(), **{"Idempotency-Key": "wf-1"})
    again = await submit(api, ada, diamond(), **{"Idempotency-Key": "wf-1"})
    assert first.status_code == 201, first.text
    assert again.status_code in (200, 201), again.text
    assert again.json()["id"] == first.json()["id"]
    assert await stored(api, ada) == (1, 4)


async def test_an_idempotency_key_reused_for_another_workflow_is_409(api: Api) -> None:
    ada = await api.user("ada@example.com")
    first = await submit(api, ada, diamond(), **{"Idempotency-Key": "wf-2"})
    other = await submit(api, ada, diamond("another"), **{"Idempotency-Key": "wf-2"})
    assert first.status_code == 201, first.text
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await stored(api, ada) == (1, 4)


async def test_another_users_workflow_is_404_and_an_admin_sees_all(api: Api) -> None:
    ada = await api.user("ada@example.com")
    bob = await api.user("bob@example.com")
    admin = await api.admin()
    wid = (await submit(api, ada, diamond())).json()["id"]
    for method, path in [
        ("GET", f"{WORKFLOWS}/{wid}"),
        ("POST", f"{WORKFLOWS}/{wid}/cancel"),
        ("POST", f"{WORKFLOWS}/{wid}/retry"),
        ("DELETE", f"{WORKFLOWS}/{wid}"),
        ("GET", f"{WORKFLOWS}/{wid}/events"),
    ]:
        r = await api.client.request(method, path, headers={**bob, **STREAM})
        assert r.status_code == 404, (method, path, r.text)
    assert (await api.client.get(WORKFLOWS, headers=bob)).json()["items"] == []
    seen = (await api.client.get(WORKFLOWS, headers=admin)).json()["items"]
    assert [w["id"] for w in seen] == [wid]
    assert (await api.client.get(f"{WORKFLOWS}/{wid}", headers=admin)).status_code == 200


async def test_list_filters_by_state_and_pages_newest_first(api: Api) -> None:
    ada = await api.user("ada@example.com")
    ids = [(await submit(api, ada, diamond(f"w{i}"))).json()["id"] for i in range(5)]
    cancelled = (await api.client.post(f"{WORKFLOWS}/{ids[1]}/cancel", headers=ada)).json()
    assert cancelled["state"] == "cancelled"
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(WORKFLOWS, headers=ada, params=params)).json()
        seen += [w["id"] for w in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == list(reversed(ids))
    only = await api.client.get(WORKFLOWS, headers=ada, params={"state": "cancelled"})
    assert [w["id"] for w in only.json()["items"]] == [ids[1]]
    bad = await api.client.get(WORKFLOWS, headers=ada, params={"state": "sideways"})
    assert bad.status_code == 422


async def test_cancel_retry_and_delete(api: Api) -> None:
    ada = await api.user("ada@example.com")
    wid = (await submit(api, ada, diamond())).json()["id"]
    busy = await api.client.delete(f"{WORKFLOWS}/{wid}", headers=ada)
    assert busy.status_code == 409, busy.text  # still running
    early = await api.client.post(f"{WORKFLOWS}/{wid}/retry", headers=ada)
    assert early.status_code == 409, early.text

    cancelled = (await api.client.post(f"{WORKFLOWS}/{wid}/cancel", headers=ada)).json()
    assert cancelled["state"] == "cancelled"
    assert {s["state"] for s in cancelled["steps"]} == {"cancelled"}

    retried = await api.client.post(f"{WORKFLOWS}/{wid}/retry", headers=ada)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "running"
    await run_all(api)
    done = (await api.client.get(f"{WORKFLOWS}/{wid}", headers=ada)).json()
    assert done["state"] == "completed", done

    gone = await api.client.delete(f"{WORKFLOWS}/{wid}", headers=ada)
    assert gone.status_code == 204, gone.text
    assert (await api.client.get(f"{WORKFLOWS}/{wid}", headers=ada)).status_code == 404
    assert await stored(api, ada) == (0, 0)  # its steps went with it


async def test_a_failed_step_fails_the_workflow_and_retry_reruns_it(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {
        "name": "breaks",
        "steps": [
            {"name": "a", "type": "wf_ok"},
            {"name": "b", "type": "wf_fail", "depends_on": ["a"]},
            {"name": "c", "type": "wf_ok", "depends_on": ["b"]},
        ],
    }
    wid = (await submit(api, ada, body)).json()["id"]
    await run_all(api)
    failed = (await api.client.get(f"{WORKFLOWS}/{wid}", headers=ada)).json()
    assert failed["state"] == "failed"
    states = {s["name"]: s["state"] for s in failed["steps"]}
    assert states == {"a": "completed", "b": "failed", "c": "cancelled"}
    b = next(s for s in failed["steps"] if s["name"] == "b")
    assert b["error"]["message"] == "this step always fails"
    assert b["error"]["traceback"] is None  # tracebacks are for administrators
    admin_view = (await api.client.get(f"{WORKFLOWS}/{wid}", headers=await api.admin())).json()
    b_admin = next(s for s in admin_view["steps"] if s["name"] == "b")
    assert b_admin["error"]["traceback"]

    retried = (await api.client.post(f"{WORKFLOWS}/{wid}/retry", headers=ada)).json()
    again = {s["name"]: s["state"] for s in retried["steps"]}
    assert again["a"] == "completed" and again["b"] == "queued" and again["c"] == "waiting"


def messages(text: str) -> list[dict[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            found.append(
                {"id": fields["id"], "event": fields["event"], **json.loads(fields["data"])}
            )
    return found


async def test_the_event_stream_tells_the_steps_and_ends_when_the_workflow_settles(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    other = (await submit(api, ada, diamond("other"))).json()
    wf = (await submit(api, ada, diamond())).json()
    await run_all(api)
    r = await api.client.get(f"{WORKFLOWS}/{wf['id']}/events", headers={**ada, **STREAM})
    assert r.status_code == 200, r.text
    told = messages(r.text)
    step_ids = {s["job_id"] for s in wf["steps"]}
    assert {m["job"]["id"] for m in told} == {*step_ids, wf["id"]}  # not the other workflow's
    assert not {s["job_id"] for s in other["steps"]} & {m["job"]["id"] for m in told}
    last = told[-1]
    assert last["event"] == "workflow" and last["type"] == "workflow"
    assert last["job"] == {
        "id": wf["id"], "type": "diamond", "queue": "", "state": "completed", "attempt": 0
    }  # fmt: skip
    completed = [m for m in told if m["event"] == "completed"]
    assert {m["job"]["id"] for m in completed} == step_ids
    # resuming after the end: nothing more (204 stops an EventSource)
    again = await api.client.get(
        f"{WORKFLOWS}/{wf['id']}/events", headers={**ada, **STREAM, "Last-Event-ID": last["id"]}
    )
    assert again.status_code == 204
    plain = await api.client.get(f"{WORKFLOWS}/{wf['id']}/events", headers=ada)
    assert plain.status_code == 406


async def test_steps_appended_at_run_time_join_the_workflows_stream(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {
        "name": "fan",
        "steps": [
            {"name": "split", "type": "wf_fan_out", "payload": {"width": 3, "before": ["join"]}},
            {"name": "join", "type": "wf_ok", "depends_on": ["split"]},
        ],
    }
    wid = (await submit(api, ada, body)).json()["id"]
    await submit(api, ada, diamond("bystander"))  # the owner's other jobs stay out
    await run_all(api)
    done = (await api.client.get(f"{WORKFLOWS}/{wid}", headers=ada)).json()
    assert done["state"] == "completed" and done["step_count"] == 5
    parts = {s["job_id"] for s in done["steps"] if s["name"].startswith("part-")}
    assert len(parts) == 3
    assert {("part-0", "join"), ("split", "part-0")} <= {
        (e["from"], e["to"]) for e in done["edges"]
    }
    told = messages(
        (await api.client.get(f"{WORKFLOWS}/{wid}/events", headers={**ada, **STREAM})).text
    )
    ours = {s["job_id"] for s in done["steps"]} | {wid}
    assert {m["job"]["id"] for m in told} == ours
    assert {m["job"]["id"] for m in told if m["event"] == "completed"} >= parts
    assert told[-1]["event"] == "workflow"


async def test_sub_workflows_appended_at_run_time_run_as_their_steps(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {
        "name": "files",
        "steps": [
            {"name": "split", "type": "wf_fan_out_nested",
             "payload": {"width": 2, "before": ["join"]}},
            {"name": "join", "type": "wf_seen", "depends_on": ["split"]},
        ],
    }  # fmt: skip
    wid = (await submit(api, ada, body)).json()["id"]
    await run_all(api)
    done = (await api.client.get(f"{WORKFLOWS}/{wid}", headers=ada)).json()
    assert done["state"] == "completed" and done["step_count"] == 6, done
    edges = {(e["from"], e["to"]) for e in done["edges"]}
    for i in range(2):
        assert {("split", f"file-{i}.fetch"), (f"file-{i}.fetch", f"file-{i}.parse"),
                (f"file-{i}.parse", "join")} <= edges  # fmt: skip
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["file-1.parse"]["started_at"] >= steps["file-1.fetch"]["finished_at"]
    assert {"file-0.parse", "file-1.parse", "split"} <= set(steps["join"]["result"]["saw"])


async def test_a_webhook_may_subscribe_to_workflow_events(api: Api) -> None:
    ada = await api.user("ada@example.com")
    r = await api.client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["workflow", "completed"]},
        headers=ada,
    )
    assert r.status_code == 201, r.text
    assert r.json()["events"] == ["workflow", "completed"]


async def test_the_openapi_document_has_the_workflow_routes(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/workflows"])
    assert {"get", "delete"} <= set(paths["/api/v1/workflows/{workflow_id}"])
    assert "post" in paths["/api/v1/workflows/{workflow_id}/cancel"]
    assert "post" in paths["/api/v1/workflows/{workflow_id}/retry"]
    create = paths["/api/v1/workflows"]["post"]
    assert {"201", "422", "429"} <= set(create["responses"])
    assert "WorkflowCreate" in doc["components"]["schemas"]


def nested_etl() -> dict[str, Any]:
    """fetch, then a nested "clean" (a, and b after a nested "deep" of one step), then load."""
    deep = {"name": "deep", "steps": [{"name": "x", "type": "wf_ok", "payload": {"x": 1}}]}
    clean = {
        "name": "clean",
        "depends_on": ["fetch"],
        "on_dependency_failure": "run",
        "steps": [
            {"name": "a", "type": "wf_ok", "payload": {"a": 1}},
            deep,
            {"name": "b", "type": "wf_ok", "depends_on": ["deep"]},
        ],
    }
    return {
        "name": "etl",
        "steps": [
            {"name": "fetch", "type": "wf_ok"},
            clean,
            {"name": "load", "type": "wf_seen", "depends_on": ["clean"]},
        ],
    }


async def test_a_nested_workflow_runs_as_its_steps_and_its_dependents_wait_for_all_of_it(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    r = await submit(api, ada, nested_etl())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["step_count"] == 5
    steps = {s["name"]: s for s in body["steps"]}
    assert {n: s["depends_on"] for n, s in steps.items()} == {
        "fetch": [],
        "clean.a": ["fetch"],  # the nested part's first steps wait for its dependencies
        "clean.deep.x": ["fetch"],
        "clean.b": ["clean.deep.x"],  # "deep": all of it
        "load": ["clean.a", "clean.b"],  # "clean": its last steps
    }
    policies = {n: s["on_dependency_failure"] for n, s in steps.items()}
    assert policies == {"fetch": "cancel", "clean.a": "run", "clean.deep.x": "run",
                        "clean.b": "run", "load": "cancel"}  # fmt: skip

    await run_all(api)
    done = (await api.client.get(f"{WORKFLOWS}/{body['id']}", headers=ada)).json()
    assert done["state"] == "completed", done
    results = {s["name"]: s["result"] for s in done["steps"]}
    assert results["load"] == {"saw": {"clean.a": {"got": {"a": 1}}, "clean.b": {"got": {}}}}
    finished = {s["name"]: s["finished_at"] for s in done["steps"]}
    started = {s["name"]: s["started_at"] for s in done["steps"]}
    assert started["load"] >= max(finished[n] for n in ("clean.a", "clean.b", "clean.deep.x"))
    assert min(started[n] for n in ("clean.a", "clean.deep.x")) >= finished["fetch"]


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        (lambda b: b["steps"][1]["steps"][2].update(depends_on=["fetch"]),
         "steps.1.steps.2.depends_on", "'clean.b' depends on unknown step 'fetch'"),
        (lambda b: b["steps"][1]["steps"][0].update(type="wf_strict"),
         "steps.1.steps.0.payload", "clean.a"),
        (lambda b: b["steps"][1]["steps"][1].update(payload={"x": 1}),
         '"steps", 1, "steps", 1, "payload"]', "Extra inputs"),  # the body's check: its loc
        (lambda b: b["steps"][1].update(depends_on=["load"]), "steps", "cycle"),
    ],
    ids=["unknown-sibling", "bad-nested-payload", "nested-with-a-payload", "cycle-through-a-part"],
)  # fmt: skip
async def test_a_bad_nested_workflow_is_422_naming_where_and_stores_nothing(
    api: Api, change: Any, where: str, words: str
) -> None:
    ada = await api.user("ada@example.com")
    body = nested_etl()
    change(body)
    r = await submit(api, ada, body)
    assert r.status_code == 422, r.text
    text = json.dumps(r.json()["error"])
    assert where in text and words in text, r.json()
    assert await stored(api, ada) == (0, 0)


async def test_a_nested_workflows_steps_count_against_the_jobs_rate_limit(
    db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(
        db_url, tmp_path, handler_modules=MODULE, rate_limit_jobs="4/minute"
    )  # fmt: skip
    async with running_api(settings) as api:
        ada = await api.user("ada@example.com")
        r = await submit(api, ada, nested_etl())  # 3 parts, 5 steps
        assert r.status_code == 429, r.text
        assert await stored(api, ada) == (0, 0)
