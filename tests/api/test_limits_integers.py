"""Integers a database cannot hold (>= 2**63, < -2**63) are refused at the door with a 422,
never passed on to become a 500 (both databases' integers are 64-bit).

The walk reads every operation of the app's own OpenAPI document, so an integer parameter
added later is covered without touching this file.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import api_settings
from tests.api.test_security_support import Served, error_of, serve

BEYOND = (2**63, -(2**63) - 1, 10**30)
MADE_UP_ID = "01a20000-0000-7000-8000-000000000000"


@pytest.fixture
async def served(db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    settings = api_settings(db_url, tmp_path, allow_private_urls=True)
    async with serve(settings) as running:
        yield running


def _is_integer(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "integer":
        return True
    return any(_is_integer(option) for option in schema.get("anyOf", ()))


def integer_parameters(document: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(method, path template, parameter, "path" or "query") of every integer parameter."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] in ("path", "query") and _is_integer(parameter["schema"]):
                    yield method.upper(), path, parameter["name"], parameter["in"]


async def objects_of(served: Served, headers: dict[str, str]) -> dict[str, str]:
    """Real ids of the user's own objects, so that a path resolves and the integer beside it
    reaches whatever would use it (a missing webhook would answer 404 first)."""
    client = served.api.client
    job = await client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
    hook = await client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=headers
    )
    task = await client.post("/tasks", json={"title": "t"}, headers=headers)
    assert (job.status_code, hook.status_code, task.status_code) == (201, 201, 201), hook.text
    return {
        "job_id": job.json()["id"],
        "webhook_id": hook.json()["id"],
        "task_id": str(task.json()["id"]),
    }


def request_for(path: str, name: str, where: str, value: int, ids: dict[str, str]) -> str:
    """The URL with `value` in parameter `name` and every other path id filled in."""
    filled = {**ids, name: str(value)} if where == "path" else ids
    url = re.sub(r"\{(\w+)\}", lambda m: filled.get(m.group(1), MADE_UP_ID), path)
    return f"{url}?{name}={value}" if where == "query" else url


async def test_every_integer_in_a_path_or_query_refuses_what_a_database_cannot_hold(
    served: Served,
) -> None:
    api = served.api
    user = await api.user("ada@example.com")
    admin = await api.admin()
    ids = await objects_of(served, user)
    client = served.client_from("127.0.0.1", raise_app_exceptions=False)
    found = list(integer_parameters(served.app.openapi()))
    named = {(path, name) for _method, path, name, _where in found}
    assert {
        ("/api/v1/webhooks/deliveries/{delivery_id}/retry", "delivery_id"),
        ("/api/v1/webhooks/{webhook_id}/deliveries", "cursor"),
        ("/api/v1/jobs/{job_id}/deliveries", "cursor"),
        ("/api/v1/jobs", "offset"),
    } <= named, "the walk no longer sees the integer parameters it was written for"
    failures: list[str] = []
    for method, path, name, where in found:
        for value in BEYOND:
            url = request_for(path, name, where, value, ids)
            for role, headers in (("user", user), ("admin", admin)):
                r = await client.request(method, url, headers=headers)
                # a user calling an admin route is refused before the input is read
                expected = {422, 403} if role == "user" else {422}
                if r.status_code not in expected:
                    failures.append(f"{role} {method} {url}: {r.status_code} {r.text[:200]}")
                else:
                    error_of(r)
    assert failures == []


async def test_event_positions_beyond_64_bits_are_refused(served: Served) -> None:
    """`after` and `Last-Event-ID` ("xid.id") are integers too, outside the OpenAPI document."""
    api = served.api
    user = await api.user("ada@example.com")
    job = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=user)
    client = served.client_from("127.0.0.1", raise_app_exceptions=False)
    stream = {**user, "Accept": "text/event-stream"}
    url = f"/api/v1/jobs/{job.json()['id']}/events"
    failures: list[str] = []
    for value in BEYOND[::2]:
        for position in (f"{value}", f"1.{value}", f"{value}.1"):
            answers = {
                f"after={position}": await client.get(
                    url, params={"after": position}, headers=stream
                ),
                f"Last-Event-ID: {position}": await client.get(
                    url, headers={**stream, "Last-Event-ID": position}
                ),
            }
            failures += [
                f"{what}: {r.status_code} {r.text[:200]}"
                for what, r in answers.items()
                if r.status_code != 422
            ]
    assert failures == []


async def test_a_position_of_18_digits_is_accepted(served: Served) -> None:
    """Every position a database writes fits in 18 digits; the bound refuses nothing real."""
    api = served.api
    user = await api.user("ada@example.com")
    r = await api.client.get(
        f"/api/v1/jobs/{MADE_UP_ID}/events",
        params={"after": f"{10**18 - 1}.{10**18 - 1}"},
        headers={**user, "Accept": "text/event-stream"},
    )
    assert r.status_code == 404, r.text  # validated, then looked for


def body_cases(ids: dict[str, str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Request bodies with a number no database column holds, in every numeric field that
    is stored as a number."""
    schedule = {"name": "s", "cron": "0 0 1 1 *", "type": "noop"}
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for value in (2**63, 10**30, 1e300):
        cases |= {
            f"job priority {value}": ("POST", "/api/v1/jobs", {"type": "noop", "priority": value}),
            f"job max_attempts {value}": (
                "POST",
                "/api/v1/jobs",
                {"type": "noop", "max_attempts": value},
            ),
            f"job timeout {value}": ("POST", "/api/v1/jobs", {"type": "noop", "timeout": value}),
            f"job delay {value}": ("POST", "/api/v1/jobs", {"type": "noop", "delay": value}),
            f"schedule timeout {value}": (
                "POST",
                "/api/v1/schedules",
                {**schedule, "timeout": value},
            ),
            f"schedule priority {value}": (
                "POST",
                "/api/v1/schedules",
                {**schedule, "priority": value},
            ),
            f"schedule change timeout {value}": (
                "PATCH",
                f"/api/v1/schedules/{ids['schedule_id']}",
                {"timeout": value},
            ),
            f"reference 000 priority {value}": (
                "POST",
                "/jobs",
                {"type": "noop", "priority": value},
            ),
        }
    return cases


async def test_numbers_in_bodies_beyond_any_column_are_never_a_500(served: Served) -> None:
    """Job and schedule fields are bounded where they are declared: 422, nothing stored."""
    api = served.api
    user = await api.user("ada@example.com")
    client = served.client_from("127.0.0.1", raise_app_exceptions=False)
    schedule = await api.client.post(
        "/api/v1/schedules",
        json={"name": "kept", "cron": "0 0 1 1 *", "type": "noop"},
        headers=user,
    )
    assert schedule.status_code == 201, schedule.text
    failures: list[str] = []
    for what, (method, path, body) in body_cases({"schedule_id": schedule.json()["id"]}).items():
        r = await client.request(method, path, json=body, headers=user)
        if r.status_code != 422:
            failures.append(f"{what}: {r.status_code} {r.text[:200]}")
    assert failures == []
    jobs = await api.client.get("/api/v1/jobs", headers=user)
    assert jobs.json()["items"] == []
    schedules = (await api.client.get("/api/v1/schedules", headers=user)).json()
    assert [(s["name"], s["timeout"]) for s in schedules] == [("kept", None)]
