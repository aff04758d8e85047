"""Odd but well-formed input gets a 4xx in our shape and changes nothing; it never causes a
500. Each test pins one class of input that once broke the API.

The client here sees a 500 as a real client would (`raise_app_exceptions=False`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import api_settings
from tests.api.test_security_support import Served, error_of, serve


@pytest.fixture
async def served(db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(api_settings(db_url, tmp_path)) as running:
        yield running


async def user_client(served: Served) -> httpx.AsyncClient:
    """A client signed in as a verified user, that receives 500s instead of raising."""
    headers = await served.api.user("ada@example.com")
    client = served.client_from("127.0.0.1", raise_app_exceptions=False)
    client.headers.update({**headers, "Content-Type": "application/json"})
    return client


def refusals(answers: dict[str, httpx.Response]) -> list[str]:
    """The calls that were not a 422 in our error shape."""
    wrong = []
    for what, r in answers.items():
        if r.status_code != 422 or set(r.json()) != {"error"}:
            wrong.append(f"{what}: {r.status_code} {r.text[:200]}")
        else:
            error_of(r)
    return wrong


async def stored_jobs(client: httpx.AsyncClient) -> int:
    r = await client.get("/api/v1/jobs?limit=1000")
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


def on_postgres(served: Served) -> bool:
    return served.api.settings.database_url.startswith("postgres")


async def test_times_beyond_the_calendar_are_422(served: Served) -> None:
    client = await user_client(served)
    answers = {
        "created_after": await client.get(
            "/api/v1/jobs", params={"created_after": "9999-12-31T23:59:59-23:00"}
        ),
        "created_before": await client.get(
            "/api/v1/jobs", params={"created_before": "0001-01-01T00:00:00+14:00"}
        ),
        "run_at early": await client.post(
            "/api/v1/jobs", json={"type": "noop", "run_at": "0001-01-01T00:00:00+01:00"}
        ),
        "run_at late": await client.post(
            "/api/v1/jobs", json={"type": "noop", "run_at": "9999-12-31T23:59:59-01:00"}
        ),
    }
    assert refusals(answers) == []
    assert await stored_jobs(client) == 0


async def test_nan_and_infinity_are_not_json(served: Served) -> None:
    client = await user_client(served)
    schedule = '{"name": "n", "cron": "* * * * *", "type": "noop", '
    answers = {
        "sleep seconds NaN": await client.post(
            "/api/v1/jobs", content='{"type": "sleep", "payload": {"seconds": NaN}}'
        ),
        "noop payload Infinity": await client.post(
            "/api/v1/jobs", content='{"type": "noop", "payload": {"x": Infinity}}'
        ),
        "schedule timeout Infinity": await client.post(
            "/api/v1/schedules", content=schedule + '"timeout": Infinity}'
        ),
        "schedule payload NaN": await client.post(
            "/api/v1/schedules", content=schedule + '"payload": {"x": NaN}}'
        ),
    }
    assert refusals(answers) == []
    assert await stored_jobs(client) == 0


async def test_a_cron_that_never_fires_is_422(served: Served) -> None:
    client = await user_client(served)
    never = {"name": "never", "cron": "0 0 31 2 *", "type": "noop"}
    answers = {"create": await client.post("/api/v1/schedules", json=never)}
    assert refusals(answers) == []
    assert (await client.get("/api/v1/schedules")).json() == []


async def test_nul_characters_never_cause_a_500(
    served: Served, request: pytest.FixtureRequest
) -> None:
    client = await user_client(served)
    anonymous = served.client_from("192.0.2.1", raise_app_exceptions=False)
    answers = {
        "login": await anonymous.post(
            "/api/v1/auth/login", json={"email": "a\x00@example.com", "password": "x"}
        ),
        "job id": await client.get("/api/v1/jobs/%00"),
        "schedule id": await client.get("/api/v1/schedules/%00"),
        "api key id": await client.delete("/api/v1/me/api-keys/%00"),
        "tag filter": await client.get("/api/v1/jobs", params={"tag": "\x00"}),
        "cursor": await client.get("/api/v1/jobs", params={"cursor": "\x00"}),
        "payload": await client.post(
            "/api/v1/jobs", json={"type": "noop", "payload": {"x": "\x00"}}
        ),
        "tags": await client.post("/api/v1/jobs", json={"type": "noop", "tags": ["\x00"]}),
        "idempotency key": await client.post(
            "/api/v1/jobs", json={"type": "noop", "idempotency_key": "\x00"}
        ),
        "schedule name": await client.post(
            "/api/v1/schedules", json={"name": "\x00", "cron": "* * * * *", "type": "noop"}
        ),
    }
    errors = [
        f"{what}: {r.status_code} {r.text[:200]}"
        for what, r in answers.items()
        if r.status_code >= 500
    ]
    assert errors == []
    for r in answers.values():
        if r.status_code >= 400:
            error_of(r)
