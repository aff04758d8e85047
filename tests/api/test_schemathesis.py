"""Property-based run of every operation in /openapi.json (schemathesis 4, pytest
integration), signed in as a verified user, on SQLite and PostgreSQL: no 5xx, and every
response matches its own documented schema.

How it is wired:
- The schema is the app's own OpenAPI, built at import (it does not depend on the
  database). Its ASGI app is `PROXY`, which forwards to the app of the current database:
  schemathesis runs the app's lifespan in its own event-loop thread and restarts it for
  each operation, so the app is built fresh by the fixture, not at import.
  (`schemathesis.pytest.from_fixture` would be the other way, but it fails on this pytest:
  "'Function' object has no attribute '_nodeid'".)
- One database per kind for the whole module (module-scoped fixtures), one user.
- Bounded and reproducible: 10 examples per operation from the `examples` and `fuzzing`
  phases (the `coverage` phase alone doubles the run time), derandomized, no example
  database. Explicit regression tests for what fuzzing is unlikely to hit are in
  test_limits_inputs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.types import ASGIApp

from conveyor.auth.passwords import configure_argon2
from conveyor.server import create_app
from tests.api.conftest import PASSWORD, api_settings
from tests.conftest import fresh_database

EXAMPLES = 10


class Proxy:
    """The ASGI app schemathesis calls; it forwards to the app of the current database."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.target is not None, "the fuzz_headers fixture sets the app"
        await self.target(scope, receive, send)


PROXY = Proxy()
_openapi = create_app(api_settings("sqlite:///unused.db", Path("/nonexistent"))).openapi()
schema = schemathesis.openapi.from_dict(_openapi)
schema.app = PROXY
schema.config.phases.update(phases=["examples", "fuzzing"])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """tests/conftest.py's `db_url`, for the whole module."""
    with fresh_database(request.param, request, tmp_path_factory.mktemp("fuzz")) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_headers(
    fuzz_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Points PROXY at a fresh app on `fuzz_db`; the Authorization header of its user."""
    configure_argon2(time_cost=1, memory_kib=1024)  # as the root conftest does per test
    settings = api_settings(fuzz_db, tmp_path_factory.mktemp("fuzz-app"), email_verification=False)
    PROXY.target = create_app(settings)
    credentials = {"email": "fuzz@example.com", "password": PASSWORD}
    with asgi.get_client(PROXY) as client:
        r = client.post("http://testserver/api/v1/auth/register", json=credentials)
        assert r.status_code == 202, r.text
        r = client.post("http://testserver/api/v1/auth/login", json=credentials)
        assert r.status_code == 200, r.text
    try:
        yield {"Authorization": f"Bearer {r.json()['access_token']}"}
    finally:
        asgi.shutdown_lifespans()  # the plugin does this after each test; to be sure
        PROXY.target = None
        configure_argon2()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(
    case: schemathesis.Case[Any], fuzz_headers: dict[str, str]
) -> None:
    case.call_and_validate(
        headers=fuzz_headers, checks=[not_a_server_error, response_schema_conformance]
    )
