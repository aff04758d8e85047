"""The misfire policy through the API: `once` unless given, stored, changed by PATCH, any
other value refused (422) before anything is stored."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_a_schedules_misfire_policy_is_once_unless_given_and_can_be_changed(
    api: Api,
) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "reports", "cron": "* * * * *", "type": "noop"}
    created = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert created.status_code == 201, created.text
    assert created.json()["misfire_policy"] == "once"
    path = f"/api/v1/schedules/{created.json()['id']}"

    for policy in ("all", "skip", "once"):
        changed = await api.client.patch(path, json={"misfire_policy": policy}, headers=ada)
        assert changed.status_code == 200, changed.text
        assert changed.json()["misfire_policy"] == policy
        assert (await api.client.get(path, headers=ada)).json()["misfire_policy"] == policy

    other = {**body, "name": "every-catch-up", "misfire_policy": "all"}
    made = await api.client.post("/api/v1/schedules", json=other, headers=ada)
    assert made.status_code == 201 and made.json()["misfire_policy"] == "all"


async def test_an_unknown_misfire_policy_is_refused(api: Api) -> None:
    ada = await api.user("ada@example.com")
    body = {"name": "r", "cron": "* * * * *", "type": "noop", "misfire_policy": "twice"}
    refused = await api.client.post("/api/v1/schedules", json=body, headers=ada)
    assert refused.status_code == 422
    assert (await api.client.get("/api/v1/schedules", headers=ada)).json() == []
    made = await api.client.post(
        "/api/v1/schedules", json={**body, "misfire_policy": "skip"}, headers=ada
    )
    path = f"/api/v1/schedules/{made.json()['id']}"
    patched = await api.client.patch(path, json={"misfire_policy": "never"}, headers=ada)
    assert patched.status_code == 422
    assert (await api.client.get(path, headers=ada)).json()["misfire_policy"] == "skip"
