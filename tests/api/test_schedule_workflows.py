"""A schedule of a workflow template through the API: created and shown with `workflow`,
refused (422, nothing stored) when the template is bad or when both or neither of `type`
and `workflow` are given (docs/workflows.md, "Cron")."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api

TEMPLATE: dict[str, Any] = {
    "name": "nightly",
    "on_dependency_failure": "skip",
    "steps": [
        {"name": "fetch", "type": "noop"},
        {"name": "merge", "type": "noop", "depends_on": ["fetch"], "priority": 5},
    ],
}


async def test_a_schedule_of_a_workflow_is_created_and_shown(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "nightly", "cron": "0 3 * * *", "workflow": TEMPLATE}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    shown = (await api.client.get(f"/api/v1/schedules/{created.json()['id']}", headers=ada)).json()
    assert shown["type"] is None
    assert shown["workflow"]["name"] == "nightly"
    assert shown["workflow"]["on_dependency_failure"] == "skip"
    assert [s["name"] for s in shown["workflow"]["steps"]] == ["fetch", "merge"]
    assert shown["workflow"]["steps"][1]["depends_on"] == ["fetch"]
    assert shown["workflow"]["steps"][1]["priority"] == 5


async def test_a_bad_template_or_both_or_neither_is_refused(api: Api) -> None:
    ada = await api.user("ada@example.com")
    base: dict[str, Any] = {"name": "n", "cron": "* * * * *"}
    cycle = {**TEMPLATE, "steps": [{"name": "a", "type": "noop", "depends_on": ["a"]}]}
    unknown = {**TEMPLATE, "steps": [{"name": "a", "type": "nope"}]}
    for body, field in (
        ({**base, "workflow": cycle}, "steps"),
        ({**base, "workflow": unknown}, "steps.0.type"),
    ):
        refused = await api.client.post("/api/v1/schedules", json=body, headers=ada)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"]["field"] == field
    for body in ({**base, "type": "noop", "workflow": TEMPLATE}, base):
        refused = await api.client.post("/api/v1/schedules", json=body, headers=ada)
        assert refused.status_code == 422, refused.text
    assert (await api.client.get("/api/v1/schedules", headers=ada)).json() == []


async def test_a_workflow_schedules_job_options_are_refused_and_its_cron_changes(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "nightly", "cron": "0 3 * * *", "workflow": TEMPLATE}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    path = f"/api/v1/schedules/{created.json()['id']}"
    for change in ({"type": "noop"}, {"payload": {"a": 1}}, {"queue": "q"}):
        refused = await api.client.patch(path, json=change, headers=ada)
        assert refused.status_code == 422, refused.text
    changed = await api.client.patch(path, json={"cron": "0 4 * * *"}, headers=ada)
    assert changed.status_code == 200 and changed.json()["workflow"]["name"] == "nightly"


async def test_a_nested_template_is_stored_flattened_and_a_bad_step_named_where_declared(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    inner = {"name": "clean", "depends_on": ["fetch"], "steps": [{"name": "a", "type": "noop"}]}
    template = {"name": "n", "steps": [{"name": "fetch", "type": "noop"}, inner]}
    body = {"name": "n", "cron": "0 3 * * *", "workflow": template}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    steps = created.json()["workflow"]["steps"]
    assert [(s["name"], s["depends_on"]) for s in steps] == [("fetch", []), ("clean.a", ["fetch"])]

    bad = {**inner, "steps": [{"name": "a", "type": "nope"}]}
    body = {**body, "workflow": {**template, "steps": [template["steps"][0], bad]}}
    refused = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["field"] == "steps.1.steps.0.type"
    path = f"/api/v1/schedules/{created.json()['id']}"
    refused = await api.client.patch(path, json={"workflow": body["workflow"]}, headers=ada)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["field"] == "steps.1.steps.0.type"
    assert len((await api.client.get("/api/v1/schedules", headers=ada)).json()) == 1


async def test_a_bad_nested_template_for_no_schedule_is_404(api: Api) -> None:
    ada = await api.user("ada@example.com")
    nested = {"name": "n", "depends_on": ["ghost"], "steps": [{"name": "a", "type": "noop"}]}
    change = {"workflow": {"name": "w", "steps": [nested]}}
    answer = await api.client.patch("/api/v1/schedules/nope", json=change, headers=ada)
    assert answer.status_code == 404, answer.text
