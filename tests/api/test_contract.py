"""The OpenAPI document says what the API answers (issue 14): error statuses per operation,
who may call what, `Allow` on 405 and OPTIONS, and times that are times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.server import create_app
from tests.api.conftest import Api, api_settings

PUBLIC = [
    ("post", "/api/v1/auth/verify"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/api/register/"),
    ("post", "/api/login/"),
    ("post", "/login"),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(api_settings("sqlite:///unused.db", Path("/nonexistent"))).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()
    ]


def test_every_error_answer_is_documented_in_the_one_shape(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        for status, answer in op["responses"].items():
            if not status.startswith(("4", "5")) or path.startswith("/api/jobs"):
                continue  # /api/jobs, /api/status: reference 002 documents its own shape
            if path == "/api/status":
                continue
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(("/ErrorBody", "/HTTPValidationError")), (method, path, status)
        if op.get("security") == [{"HTTPBearer": []}]:
            assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
        if "{" in path and path != "/api/status":
            assert "404" in op["responses"] or path.startswith("/api/jobs"), (method, path)
        if method in ("post", "put", "patch"):
            assert {"413", "422"} <= set(op["responses"]), (method, path)


def test_rate_limited_and_credential_routes_say_so(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "429" in paths["/api/v1/jobs"]["post"]["responses"]
    assert "429" in paths["/api/v1/auth/login"]["post"]["responses"]
    assert "401" in paths["/api/v1/auth/login"]["post"]["responses"]
    assert "401" in paths["/api/v1/auth/logout"]["post"]["responses"]
    assert "409" in paths["/api/v1/jobs/{job_id}"]["delete"]["responses"]


def test_public_routes_declare_no_bearer(document: dict[str, Any]) -> None:
    for method, path in PUBLIC:
        assert not document["paths"][path][method].get("security"), (method, path)
    for path in ("/api/v1/auth/register", "/register"):
        assert {} in document["paths"][path]["post"]["security"], path


def test_schema_states_the_account_rules(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    register = schemas["Register"]["properties"]
    assert register["password"]["minLength"] == 8
    assert "pattern" in register["email"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/v1/jobs", "GET, POST"),
        ("PUT", "/api/v1/jobs", "GET, POST"),
        ("PUT", "/api/v1/jobs/some-id", "DELETE, GET"),
        ("OPTIONS", "/tasks", "GET, POST"),
        ("PUT", "/api/v1/schedules/x", "DELETE, GET, PATCH"),
    ],
)
async def test_405_and_options_allow_every_method_of_the_path(
    api: Api, method: str, path: str, allowed: str
) -> None:
    r = await api.client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("value", ["0.5", "1700000000", "-3", "1e9"])
async def test_a_number_is_not_a_date(api: Api, value: str) -> None:
    headers = await api.user("dates@example.com")
    r = await api.client.get("/api/v1/jobs", params={"created_before": value}, headers=headers)
    assert r.status_code == 422, r.text
    r = await api.client.get(
        "/api/v1/jobs", params={"created_before": "2030-01-01T00:00:00Z"}, headers=headers
    )
    assert r.status_code == 200, r.text
