"""Helpers shared by the security, rate-limit, limits and schemathesis API tests (no tests here).

- `cheap_argon2`: production argon2 costs about half a second of CPU per hash on a small
  machine, and every `Api.user` hashes twice. What these tests check does not depend on the
  cost, so the modules that import this fixture (autouse) hash with the cheapest valid
  parameters, like tests/services does; tests/auth covers the real ones.
- The route inventory (`api_routes`, `depends_on`): the routes are read from the app
  itself, so a route added later is covered by every test that loops over them.
- Token forgery helpers and `same_modulo`, which compares two error bodies with ids masked.
- `serve`: `running_api` that also gives the app and clients from other addresses.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount, Route

from conveyor.dashboard.web import DashboardRoute
from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.settings import Settings
from tests.api.conftest import Api

# Routes anyone may call. Everything else must refuse a missing or bad token with 401.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/api/v1/job-types",
        # the reference adapters' sign-up, sign-in and health calls
        "/login",
        "/register",
        "/jobs/stats",
        "/auth/register",
        "/auth/login",
        "/actuator/health",
        "/api/register/",
        "/api/verify-otp/",
        "/api/login/",
        "/api/token/refresh/",
        # reference 002: a token is required unless CONVEYOR_ANONYMOUS_STORE_VISITS is set, so
        # the adapter authenticates itself (tests/compat/test_ref002_store_visits.py covers it)
        "/api/jobs",
        "/api/status",
    }
)
PUBLIC_PREFIXES = ("/api/v1/auth/",)
DOCS_PATHS = frozenset(
    {
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/api/schema/swagger-ui/",
        "/api/schema/redoc/",
    }
)
STATIC_MOUNTS = frozenset({"/static/api-docs"})
# The dashboard's pages use a session cookie, not a bearer token: tests/dashboard/
# test_inventory.py walks its routes the same way and checks them for sessions and CSRF.
DASHBOARD_PREFIX = "/dashboard"
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Endpoint:
    """One method on one route of the app."""

    method: str
    path: str  # the template, e.g. /api/v1/jobs/{job_id}
    dependant: Dependant
    needs_body: bool

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def url(self, **ids: str) -> str:
        """The path with each `{name}` replaced by `ids[name]` (or a made-up id)."""
        return _PARAM.sub(
            lambda m: ids.get(m.group(1), "01a20000-0000-7000-8000-000000000000"), self.path
        )

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path in DOCS_PATHS or path.startswith(PUBLIC_PREFIXES)


def api_routes(settings: Settings) -> list[Endpoint]:
    """Every method of every API route of an app built with `settings`.

    Routes that are neither API routes nor the documentation pages fail loudly: a test
    that does not know how to call a new kind of route must be extended, not skip it.
    """
    app: FastAPI = create_app(settings)
    found: list[Endpoint] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and not isinstance(route, DashboardRoute):
            assert context.path is not None
            body = context.body_field
            needs_body = body is not None and bool(body.field_info.is_required())
            found.extend(
                Endpoint(method, context.path, context.dependant, needs_body)
                for method in sorted(context.methods or ())
            )
        elif (
            (isinstance(route, Route) and context.path in DOCS_PATHS)
            or (isinstance(route, Mount) and route.path in STATIC_MOUNTS)
            or (
                isinstance(route, DashboardRoute | Mount)
                and (context.path or route.path).startswith(DASHBOARD_PREFIX)
            )
        ):
            continue
        else:
            raise AssertionError(f"unexpected route {route!r}: teach the security tests about it")
    assert found, "no API routes found"
    return found


def _is_docs(route: object, path: str | None) -> bool:
    """The documentation pages and the static files they load."""
    if isinstance(route, Mount):
        return route.path in STATIC_MOUNTS
    return isinstance(route, Route) and path in DOCS_PATHS


def protected_routes(settings: Settings) -> list[Endpoint]:
    return [e for e in api_routes(settings) if not is_public(e.path)]


def depends_on(endpoint: Endpoint, function: Callable[..., Any]) -> bool:
    """True when `function` is somewhere in the endpoint's dependency tree."""

    def walk(dependant: Dependant) -> bool:
        return any(d.call is function or walk(d) for d in dependant.dependencies)

    return walk(endpoint.dependant)


async def call(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    headers: dict[str, str] | None = None,
    body: Any = None,
    **ids: str,
) -> httpx.Response:
    return await client.request(endpoint.method, endpoint.url(**ids), json=body, headers=headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of our error shape (asserting the shape)."""
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, response.text
    error = body["error"]
    assert isinstance(error, dict), response.text
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), body
    assert set(error) <= {"code", "message", "details"}, body
    return error


def same_modulo(a: httpx.Response, b: httpx.Response, *ids: str) -> bool:
    """Same status and same JSON body once every given id is replaced by a placeholder."""

    def masked(response: httpx.Response) -> str:
        text = json.dumps(response.json(), sort_keys=True)
        for value in ids:  # whole JSON values only: a short integer id is in many strings
            text = re.sub(rf'(?<=[\s:\[])"?{re.escape(value)}"?(?=[,\]}}])', "<id>", text)
        return text

    return a.status_code == b.status_code and masked(a) == masked(b)


ResponseHook = Callable[[httpx.Response], Awaitable[None]]


@dataclass
class Served:
    """A running app: `api` as `running_api` gives it, the app itself, and more clients."""

    api: Api
    app: FastAPI
    clients: list[httpx.AsyncClient]
    hooks: list[ResponseHook] = field(default_factory=list)

    def client_from(self, ip: str, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
        """A client calling from address `ip` (limits are per IP); with
        `raise_app_exceptions=False` it gets the 500 a real client would, not the error."""
        client = _client(self.app, ip, raise_app_exceptions)
        client.event_hooks["response"].extend(self.hooks)
        self.clients.append(client)
        return client

    def watch(self, hook: ResponseHook) -> None:
        """Run `hook` on every response any client of this app receives, now and later."""
        self.hooks.append(hook)
        for client in self.clients:
            client.event_hooks["response"].append(hook)


def _client(app: FastAPI, ip: str, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=(ip, 4321), raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Served]:
    """`running_api`, built the same way, giving a `Served` (the app, more clients)."""
    engine = await Engine.open(settings)
    app: FastAPI = create_app(settings, engine=engine)
    mail = Path(settings.mail_url.removeprefix("file://"))
    try:
        async with app.router.lifespan_context(app):
            client = _client(app, "127.0.0.1")
            served = Served(Api(client, engine, settings, mail), app, [client])
            try:
                yield served
            finally:
                for client in served.clients:
                    await client.aclose()
    finally:
        await engine.close()


# ---- tokens ----------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def flip(text: str, index: int) -> str:
    """`text` with the character at `index` changed to another base64url character."""
    old = text[index]
    new = "A" if old != "A" else "B"
    return text[:index] + new + text[index + 1 :]


def tampered_signature(token: str) -> str:
    """A character in the middle of the signature changed (the last one may only hold
    padding bits, which some decoders ignore)."""
    header, payload, signature = token.split(".")
    return f"{header}.{payload}.{flip(signature, len(signature) // 2)}"


def tampered_payload(token: str, **changes: Any) -> str:
    """The payload re-encoded with `changes` (e.g. role=admin), the old signature kept."""
    header, payload, signature = token.split(".")
    claims = {**json.loads(unb64(payload)), **changes}
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def unsigned(claims: dict[str, Any]) -> str:
    """The same claims with `alg: none` and an empty signature."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def hours_ago(hours: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) - timedelta(hours=hours)
