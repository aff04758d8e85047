"""Input limits at the door: body size (413, whatever Content-Length says), JSON depth, batch
size and page size; malformed JSON is a 422 in our shape; no stack trace ever reaches a
client. The app runs with small limits so the tests stay small.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api, api_settings
from tests.api.test_security_support import Served, error_of, serve

MAX_BYTES = 4096
MAX_DEPTH = 32
MAX_BATCH = 5
MAX_PAGE = 10


@pytest.fixture
async def served(db_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    settings = api_settings(
        db_url,
        tmp_path,
        max_body_bytes=MAX_BYTES,
        max_batch_size=MAX_BATCH,
        max_page_size=MAX_PAGE,
    )
    assert settings.max_json_depth == MAX_DEPTH  # the default is what is tested
    async with serve(settings) as running:
        no_tracebacks(running)
        yield running


def no_tracebacks(served: Served) -> None:
    """Every response any client of `served` receives is checked for stack trace text."""

    async def check(response: httpx.Response) -> None:
        await response.aread()
        for leak in ("Traceback", 'File "', "conveyor/", "sqlalchemy", "asyncpg"):
            assert leak not in response.text, f"{response.request.url}: {response.text}"

    served.watch(check)


async def job_ids(api: Api, headers: dict[str, str]) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/api/v1/jobs", params=params, headers=headers)).json()
        ids += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def job_of_size(size: int) -> bytes:
    """A valid job submission of exactly `size` bytes."""
    empty = json.dumps({"type": "noop", "payload": {"pad": ""}}).encode()
    padded = json.dumps({"type": "noop", "payload": {"pad": "x" * (size - len(empty))}})
    assert len(padded.encode()) == size
    return padded.encode()


def nested(depth: int) -> dict[str, Any]:
    """A job whose body is nested exactly `depth` levels (outer object included)."""
    inner: Any = 1
    for _ in range(depth - 2):  # the body and the payload are the two outer levels
        inner = [inner]
    return {"type": "noop", "payload": {"deep": inner}}


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


async def test_a_body_over_the_cap_is_413_whatever_it_claims(served: Served) -> None:
    api = served.api
    headers = await api.user("ada@example.com")
    json_type = {**headers, "Content-Type": "application/json"}
    at_cap = await api.client.post(
        "/api/v1/jobs", content=job_of_size(MAX_BYTES), headers=json_type
    )
    assert at_cap.status_code == 201, at_cap.text
    over = job_of_size(MAX_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over), 1000):
            yield over[start : start + 1000]

    answers = {
        "honest": await api.client.post("/api/v1/jobs", content=over, headers=json_type),
        "lying Content-Length": await api.client.post(
            "/api/v1/jobs", content=over, headers={**json_type, "Content-Length": "10"}
        ),
        "chunked": await api.client.post("/api/v1/jobs", content=chunks(), headers=json_type),
        "unauthenticated": await api.client.post(
            "/api/v1/auth/login", content=b"{" + b" " * MAX_BYTES + b"}"
        ),
        "not JSON": await api.client.post(
            "/api/v1/jobs",
            content=b"x" * (MAX_BYTES + 1),
            headers={**headers, "Content-Type": "text/plain"},
        ),
    }
    for what, r in answers.items():
        assert r.status_code == 413, f"{what}: {r.status_code} {r.text}"
        assert error_of(r)["code"] == "payload_too_large", what
    assert len(await job_ids(api, headers)) == 1


async def test_json_nested_deeper_than_the_cap_is_422(served: Served) -> None:
    api = served.api
    headers = await api.user("ada@example.com")
    for depth in (MAX_DEPTH + 1, 200):
        body = nested(depth)
        assert depth_of(body) == depth
        r = await api.client.post("/api/v1/jobs", json=body, headers=headers)
        assert r.status_code == 422, f"{depth}: {r.text}"
        assert error_of(r)["code"] == "too_deep"
    anonymous = await api.client.post("/api/v1/auth/login", json={"email": nested(40)})
    assert anonymous.status_code == 422 and error_of(anonymous)["code"] == "too_deep"
    assert await job_ids(api, headers) == []

    for depth in (MAX_DEPTH - 1, MAX_DEPTH):
        body = nested(depth)
        r = await api.client.post("/api/v1/jobs", json=body, headers=headers)
        assert r.status_code == 201, f"{depth}: {r.text}"
        assert r.json()["payload"] == body["payload"]
    # Brackets inside strings are text, not nesting.
    text = await api.client.post(
        "/api/v1/jobs", json={"type": "noop", "payload": {"s": "[{" * 100}}, headers=headers
    )
    assert text.status_code == 201, text.text


async def test_a_batch_over_the_cap_is_422_and_stores_nothing(served: Served) -> None:
    api = served.api
    headers = await api.user("ada@example.com")
    over = await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * (MAX_BATCH + 1)}, headers=headers
    )
    assert over.status_code == 422 and error_of(over)["code"] == "invalid_input", over.text
    one_bad = [{"type": "noop"}] * (MAX_BATCH - 1) + [{"type": "sleep", "payload": {"seconds": -1}}]
    bad = await api.client.post("/api/v1/jobs/batch", json={"jobs": one_bad}, headers=headers)
    assert bad.status_code == 422, bad.text
    empty = await api.client.post("/api/v1/jobs/batch", json={"jobs": []}, headers=headers)
    assert empty.status_code == 422
    assert await job_ids(api, headers) == []
    full = await api.client.post(
        "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * MAX_BATCH}, headers=headers
    )
    assert full.status_code == 201 and len(full.json()) == MAX_BATCH
    assert len(await job_ids(api, headers)) == MAX_BATCH


async def test_page_size_is_capped(served: Served) -> None:
    api = served.api
    headers = await api.user("ada@example.com")
    for size in (MAX_BATCH, MAX_BATCH, 2):
        r = await api.client.post(
            "/api/v1/jobs/batch", json={"jobs": [{"type": "noop"}] * size}, headers=headers
        )
        assert r.status_code == 201, r.text
    first = (await api.client.get("/api/v1/jobs?limit=1000", headers=headers)).json()
    assert len(first["items"]) == MAX_PAGE and first["next_cursor"] is not None
    rest = await api.client.get(
        "/api/v1/jobs", params={"limit": 1000, "cursor": first["next_cursor"]}, headers=headers
    )
    assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
    for limit in (0, 1001, -1):
        r = await api.client.get(f"/api/v1/jobs?limit={limit}", headers=headers)
        assert r.status_code == 422 and error_of(r)["code"] == "validation_error", limit

    admin = await api.admin()
    for n in range(MAX_PAGE):
        created = await api.client.post(
            "/api/v1/admin/users",
            json={"email": f"u{n}@example.com", "password": "long enough password"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
    users = await api.client.get("/api/v1/admin/users?limit=1000", headers=admin)
    assert users.status_code == 200 and len(users.json()) == MAX_PAGE


async def test_malformed_json_is_422_in_our_shape(served: Served) -> None:
    api = served.api
    headers = {**(await api.user("ada@example.com")), "Content-Type": "application/json"}
    bodies = [
        b"{",
        b'{"type": }',
        b'{"type": "noop"} trailing',
        b'{"type": "noop",}',
        b"\xff\xfe not utf-8",
        b"",
        b"null",
        b"[]",
        b'"noop"',
        b'{"type": NaN}',
        b'{"type": "noop", "payload": [1, 2]}',
    ]
    for body in bodies:
        r = await api.client.post("/api/v1/jobs", content=body, headers=headers)
        assert r.status_code == 422, f"{body!r}: {r.status_code} {r.text}"
        assert error_of(r)["code"] in ("validation_error", "invalid_input"), body
        anonymous = await api.client.post(
            "/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"}
        )
        assert anonymous.status_code == 422, f"{body!r}: {anonymous.text}"
        error_of(anonymous)
    assert await job_ids(api, headers) == []


async def test_an_unexpected_error_is_a_bare_500(served: Served) -> None:
    """Whatever breaks inside, the client gets our shape and no detail of the failure."""

    async def boom() -> None:
        raise RuntimeError("secret detail: /srv/conveyor/internals.py line 42")

    served.app.add_api_route("/api/v1/test-boom", boom, methods=["GET"])
    client = served.client_from("127.0.0.1", raise_app_exceptions=False)
    r = await client.get("/api/v1/test-boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret" not in r.text


async def test_failed_jobs_show_their_owner_no_traceback(served: Served) -> None:
    api = served.api
    headers = await api.user("ada@example.com")
    r = await api.client.post(
        "/api/v1/jobs",
        json={"type": "sleep", "payload": {"seconds": 0, "fail": True}, "max_attempts": 1},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    await api.engine.worker(concurrency=1, burst=True).run()
    job = (await api.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=headers)).json()
    assert job["state"] == "failed" and job["errors"], job
    assert all(e["traceback"] is None for e in job["errors"])
    assert "asked to fail" in job["errors"][0]["message"]
