"""PATCH /api/v1/schedules/{id} replacing a workflow schedule's template (checked as at
create: a bad one is 422 naming `steps.<i>...` and changes nothing), and a job schedule's
submit `limits` at create and PATCH (docs/workflows.md, "Cron"; docs/flow-control.md,
"Cron fires"). Both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Api, api_settings, running_api

HANDLERS = "tests.support.flow_handlers"
TEMPLATE: dict[str, Any] = {
    "name": "nightly",
    "steps": [{"name": "fetch", "type": "noop"}, {"name": "merge", "type": "noop",
                                                  "depends_on": ["fetch"]}],
}  # fmt: skip


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(api_settings(db_url, tmp_path, handler_modules=HANDLERS)) as running:
        yield running


async def test_a_workflow_schedule_s_template_is_replaced_and_a_bad_one_changes_nothing(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "nightly", "cron": "0 3 * * *", "workflow": TEMPLATE}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    path = f"/api/v1/schedules/{created.json()['id']}"

    new = {"name": "report", "on_dependency_failure": "skip",
           "steps": [{"name": "only", "type": "noop", "priority": 3}]}  # fmt: skip
    changed = await api.client.patch(path, json={"workflow": new, "cron": "0 4 * * *"},
                                     headers=ada)  # fmt: skip
    assert changed.status_code == 200, changed.text
    shown = (await api.client.get(path, headers=ada)).json()
    assert shown["cron"] == "0 4 * * *" and shown["workflow"]["name"] == "report"
    assert shown["workflow"]["on_dependency_failure"] == "skip"
    assert [(s["name"], s["priority"]) for s in shown["workflow"]["steps"]] == [("only", 3)]

    unknown = {"name": "x", "steps": [{"name": "a", "type": "noop"}, {"name": "b", "type": "nope"}]}
    payload = {"name": "x", "steps": [{"name": "a", "type": "partner_sync", "payload": {"x": 1}}]}
    cycle = {"name": "x", "steps": [{"name": "a", "type": "noop", "depends_on": ["a"]}]}
    for template, field in ((unknown, "steps.1.type"), (payload, "steps.0.payload"),
                            (cycle, "steps")):  # fmt: skip
        refused = await api.client.patch(
            path, json={"workflow": template, "cron": "0 5 * * *"}, headers=ada
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"]["field"] == field
    assert (await api.client.get(path, headers=ada)).json() == shown  # nothing changed

    bob = await api.user("bob@example.com")
    other = await api.client.patch(path, json={"workflow": TEMPLATE}, headers=bob)
    assert other.status_code == 404


async def test_a_job_schedule_takes_no_workflow_and_its_limits_are_checked(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "sync", "cron": "0 3 * * *", "type": "partner_sync",
            "limits": {"per_account": "acct-1"}}  # fmt: skip
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    assert created.json()["limits"] == {"per_account": "acct-1"}
    path = f"/api/v1/schedules/{created.json()['id']}"

    refused = await api.client.patch(path, json={"workflow": TEMPLATE}, headers=ada)
    assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == "workflow"
    for limits in ({"nope": "x"}, {"per_account": "k" * 201}):
        refused = await api.client.patch(path, json={"limits": limits}, headers=ada)
        assert refused.status_code == 422, refused.text
        again = await api.client.post(
            "/api/v1/schedules", json={**body, "name": "other", "limits": limits}, headers=ada
        )
        assert again.status_code == 422, again.text
    noop = {"name": "n", "cron": "0 3 * * *", "type": "noop", "limits": {"per_account": "x"}}
    assert (await api.client.post("/api/v1/schedules", json=noop, headers=ada)).status_code == 422
    listed = (await api.client.get("/api/v1/schedules", headers=ada)).json()
    assert [(s["name"], s["limits"]) for s in listed] == [("sync", {"per_account": "acct-1"})]

    changed = await api.client.patch(path, json={"limits": {"partner_api": ""}}, headers=ada)
    assert changed.status_code == 200 and changed.json()["limits"] == {"partner_api": ""}
    cleared = await api.client.patch(path, json={"limits": None}, headers=ada)
    assert cleared.status_code == 200 and cleared.json()["limits"] == {}


async def test_openapi_documents_the_schedule_s_limits_and_template_edit(api: Api) -> None:
    schemas = (await api.client.get("/openapi.json")).json()["components"]["schemas"]
    assert "limits" in schemas["ScheduleCreate"]["properties"]
    assert {"limits", "workflow"} <= set(schemas["ScheduleUpdate"]["properties"])
    assert "limits" in schemas["ScheduleOut"]["properties"]
