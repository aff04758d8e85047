"""Who may call what: every protected route refuses missing and forged tokens, owners'
objects are invisible to others (404 exactly like a missing id), admins only on admin
routes, and refresh tokens rotate, detect reuse and die with their session or account.

The routes are read from the app, so a route added later is covered without editing this.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from conveyor.api.deps import admin_user, current_user, submitter, verified_user
from conveyor.api.routes.metrics import scraper
from conveyor.auth.tokens import TokenService
from conveyor.domain.events import Position
from conveyor.domain.ids import uuid7
from conveyor.events.schema import encode
from tests.api.conftest import PASSWORD, Api, api_settings
from tests.api.test_security_support import (
    Endpoint,
    api_routes,
    call,
    claims_of,
    depends_on,
    error_of,
    hours_ago,
    is_public,
    protected_routes,
    same_modulo,
    tampered_payload,
    tampered_signature,
    unsigned,
)
from tests.net.world import PUBLIC, FakeDns
from tests.support.processes import eventually

OTHER_SECRET = "another-secret-key-that-is-long-enough-for-hs256"
# A valid body for each route that needs one, so the call gets past validation to the lookup.
BODIES: dict[str, Any] = {
    "PATCH /api/v1/schedules/{schedule_id}": {"paused": True},
    "PATCH /api/v1/webhooks/{webhook_id}": {"paused": True},
    "PATCH /jobs/{job_id}/status": {"status": "cancelled"},
    "PATCH /api/v1/admin/users/{user_id}": {"role": "admin"},
    "POST /api/v1/admin/users": {"email": "mallory@example.com", "password": "long-password-1"},
}
# The submission routes check a signed token's account and session in the transaction that
# inserts (services/intake.py), after the body was read: a body, valid, so that check is
# what answers. (Without one, a forged, expired or garbage token is still 401 first.)
SUBMISSIONS: dict[str, Any] = {
    "POST /api/v1/jobs": {"type": "noop"},
    "POST /api/v1/jobs/batch": {"jobs": [{"type": "noop"}]},
}


async def session(api: Api, email: str) -> dict[str, str]:
    """A registered, verified user's access and refresh tokens (and id)."""
    await api.user(email)
    r = await api.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    tokens: dict[str, str] = r.json()
    me = await api.client.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    return {**tokens, "id": me.json()["id"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refresh(api: Api, token: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/refresh", json={"refresh_token": token})


def body_for(endpoint: Endpoint) -> Any:
    if not endpoint.needs_body:
        return None
    assert str(endpoint) in BODIES, f"add a valid body for {endpoint} to BODIES"
    return BODIES[str(endpoint)]


def assert_unauthenticated(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    error_of(response)
    assert response.headers.get("www-authenticate") == "Bearer", what


def test_the_route_inventory_matches_the_dependencies() -> None:
    """Every non-public route authenticates; admin and job routes check the right role.

    A structural check on the dependency tree, so a new route that forgot its guard fails
    here with its name even before the behavioural tests below call it.
    """
    settings = api_settings("sqlite:///unused.db", Path("/nonexistent"))
    endpoints = api_routes(settings)
    # `/metrics` has its own guard (the scrape token, else an admin's credentials); the two
    # submission routes read the token with `submitter` and the intake checks the account,
    # verified, in the transaction that inserts (services/intake.py).
    guards = (current_user, scraper, submitter)
    unguarded = [
        str(e)
        for e in endpoints
        if not is_public(e.path) and not any(depends_on(e, g) for g in guards)
    ]
    assert unguarded == []
    public_but_guarded = [
        str(e) for e in endpoints if is_public(e.path) and depends_on(e, current_user)
    ]
    assert public_but_guarded == []
    admin_paths = [e for e in endpoints if e.path.startswith("/api/v1/admin/")]
    assert admin_paths and all(depends_on(e, admin_user) for e in admin_paths)
    job_paths = [
        e
        for e in endpoints
        if e.path.startswith(("/api/v1/jobs", "/api/v1/schedules", "/api/v1/stats"))
    ]
    assert job_paths and all(
        depends_on(e, verified_user) or depends_on(e, submitter) for e in job_paths
    )
    submitting = sorted(str(e) for e in endpoints if depends_on(e, submitter))
    assert submitting == ["POST /api/v1/jobs", "POST /api/v1/jobs/batch"]


async def test_every_protected_route_refuses_missing_and_forged_tokens(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    access, sub = ada["access_token"], ada["id"]
    secret = api.settings.secret_key.get_secret_value()  # type: ignore[union-attr]
    past = TokenService(secret, clock=hours_ago(1))
    claims = claims_of(access)
    # Asked for on every protected route.
    forged: dict[str, dict[str, str]] = {
        "no Authorization header": {},
        "a tampered signature": bearer(tampered_signature(access)),
        "a tampered payload (role admin)": bearer(tampered_payload(access, role="admin")),
        "alg none": bearer(unsigned(claims)),
        "an expired token": bearer(past.issue_access(sub, "user")),
        "a refresh token": bearer(ada["refresh_token"]),
        "another secret": bearer(TokenService(OTHER_SECRET).issue_access(sub, "user")),
    }
    # The same dependency reads every token, so these run on one route per kind of guard.
    more: dict[str, dict[str, str]] = {
        "an empty bearer": {"Authorization": "Bearer "},
        "a scheme without a token": {"Authorization": "Bearer"},
        "garbage": bearer("not-a-token"),
        "a garbage bare token": {"Authorization": "not-a-token"},
        "another scheme": {"Authorization": f"Basic {access}"},
        "a tampered payload (later exp)": bearer(tampered_payload(access, exp=claims["exp"] + 9)),
        "alg none, bare": {"Authorization": unsigned(claims)},
        "alg none, claiming admin": bearer(unsigned({**claims, "role": "admin"})),
        "a refresh token, bare": {"Authorization": ada["refresh_token"]},
        "another audience": bearer(TokenService(secret, audience="x").issue_access(sub, "user")),
        "another issuer": bearer(TokenService(secret, issuer="x").issue_access(sub, "user")),
        "a token for a user that does not exist": bearer(
            TokenService(secret).issue_access(uuid7(), "admin")
        ),
        "an unknown API key": bearer("cvk_" + secrets.token_urlsafe(32)),
    }
    representatives = {
        "GET /api/v1/me",
        "GET /api/v1/jobs",
        "POST /api/v1/jobs",
        "GET /api/v1/admin/users",
    }
    endpoints = protected_routes(api.settings)
    assert representatives <= {str(e) for e in endpoints}
    failures: list[str] = []
    for endpoint in endpoints:
        control = await call(api.client, endpoint, bearer(access))  # no body: changes nothing
        if control.status_code == 401:
            failures.append(f"{endpoint}: the valid token was refused: {control.text}")
        variants = forged | more if str(endpoint) in representatives else forged
        for what, headers in variants.items():
            r = await call(api.client, endpoint, headers, SUBMISSIONS.get(str(endpoint)))
            try:
                assert_unauthenticated(r, what)
            except AssertionError as exc:
                failures.append(f"{endpoint} with {what}: {exc}")
    assert failures == []


async def a_delivery(api: Api, owner: dict[str, str], webhook_id: str) -> int:
    """The id of a delivery to the owner's webhook: of a job submitted after it, fanned out."""
    r = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=owner)
    store, job_id = api.engine.webhooks.delivery_log, r.json()["id"]

    async def fanned_out() -> bool:  # once the job's event is readable (PostgreSQL's horizon)
        events = await api.engine.backend.read_events(Position(), 1000)
        return await store.fan_out([e for e in events if e.job_id == job_id], encode) > 0

    await eventually(fanned_out, timeout=30, what="a delivery of the new job's event")
    (delivery,) = await store.deliveries(webhook_id=webhook_id)
    return delivery.id


async def test_another_users_objects_are_404_exactly_like_missing_ones(api: Api) -> None:
    ada = bearer((await session(api, "ada@example.com"))["access_token"])
    bob = bearer((await session(api, "bob@example.com"))["access_token"])
    job = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=ada)
    schedule = await api.client.post(
        "/api/v1/schedules",
        json={"name": "yearly", "cron": "0 0 1 1 *", "type": "noop"},
        headers=ada,
    )
    key = await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=ada)
    task = await api.client.post("/tasks", json={"title": "t"}, headers=ada)
    api.engine.webhooks.resolver = FakeDns({"hooks.example": [[PUBLIC]]})
    hook = await api.client.post(
        "/api/v1/webhooks", json={"url": "http://hooks.example/h"}, headers=ada
    )
    codes = (job.status_code, schedule.status_code, key.status_code, task.status_code)
    assert codes == (201, 201, 201, 201) and hook.status_code == 201, hook.text
    delivery = await a_delivery(api, ada, hook.json()["id"])
    steps = [{"name": "a", "type": "sleep", "payload": {"seconds": 3600}}]
    flow = await api.client.post(
        "/api/v1/workflows", json={"name": "w", "steps": steps}, headers=ada
    )
    assert flow.status_code == 201, flow.text
    adas = {
        "job_id": job.json()["id"],
        "schedule_id": schedule.json()["id"],
        "key_id": key.json()["id"],
        "task_id": str(task.json()["id"]),  # reference 004's tasks have integer ids
        "webhook_id": hook.json()["id"],
        "delivery_id": str(delivery),  # an integer id, like tasks'
        "workflow_id": flow.json()["id"],
    }
    owned = [
        e
        for e in protected_routes(api.settings)
        if e.params and not depends_on(e, admin_user)  # admin routes: 403 for Bob, see below
    ]
    assert {p for e in owned for p in e.params} == set(adas), "a new kind of id: extend adas"
    failures: list[str] = []
    for endpoint in owned:
        missing = {name: uuid7() for name in adas} | {
            "task_id": str(2**31 - 2), "delivery_id": str(2**31 - 2)
        }  # fmt: skip
        theirs = await call(api.client, endpoint, bob, body_for(endpoint), **adas)
        absent = await call(api.client, endpoint, bob, body_for(endpoint), **missing)
        if theirs.status_code != 404 or not same_modulo(
            theirs, absent, *adas.values(), *missing.values()
        ):
            failures.append(f"{endpoint}: {theirs.status_code} {theirs.text} vs {absent.text}")
        else:
            assert error_of(theirs)["code"] == "not_found"
    assert failures == []

    # Nothing Bob did reached Ada's objects.
    mine = await api.client.get(f"/api/v1/jobs/{adas['job_id']}", headers=ada)
    assert mine.status_code == 200 and mine.json()["state"] == "queued"
    hers = await api.client.get(f"/api/v1/schedules/{adas['schedule_id']}", headers=ada)
    assert hers.status_code == 200 and hers.json()["paused"] is False
    assert (
        await api.client.get("/api/v1/me", headers=bearer(key.json()["key"]))
    ).status_code == 200
    listed = (await api.client.get("/api/v1/jobs", headers=bob)).json()
    assert listed["items"] == []
    assert (await api.client.get("/api/v1/schedules", headers=bob)).json() == []
    assert (await api.client.get("/api/v1/me/api-keys", headers=bob)).json() == []


async def test_users_are_refused_on_admin_routes(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    user = bearer(ada["access_token"])
    admin = await api.admin()
    admin_routes = [e for e in protected_routes(api.settings) if depends_on(e, admin_user)]
    assert admin_routes
    failures: list[str] = []
    for endpoint in admin_routes:
        r = await call(api.client, endpoint, user, body_for(endpoint), user_id=ada["id"])
        if r.status_code != 403 or error_of(r)["code"] != "forbidden":
            failures.append(f"{endpoint}: {r.status_code} {r.text}")
    assert failures == []
    me = (await api.client.get("/api/v1/me", headers=user)).json()
    assert me["role"] == "user"
    users = (await api.client.get("/api/v1/admin/users", headers=admin)).json()
    assert sorted(u["email"] for u in users) == ["ada@example.com", "admin@example.com"]


async def test_refresh_rotates_and_a_reused_token_revokes_the_whole_family(api: Api) -> None:
    first = await session(api, "ada@example.com")
    other_login = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    second = await refresh(api, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    me = await api.client.get("/api/v1/me", headers=bearer(rotated["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == first["id"]
    third = await refresh(api, rotated["refresh_token"])
    assert third.status_code == 200, third.text
    newest = third.json()["refresh_token"]

    reused = await refresh(api, first["refresh_token"])
    assert_unauthenticated(reused, "a reused refresh token")
    assert error_of(reused)["code"] == "refresh_token_reused"
    assert_unauthenticated(await refresh(api, newest), "the newest token of a revoked family")
    assert_unauthenticated(await refresh(api, rotated["refresh_token"]), "a used, revoked token")
    # Another login is another family: it is untouched.
    assert (await refresh(api, other_login.json()["refresh_token"])).status_code == 200


async def test_logout_revokes_the_session(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    out = await api.client.post("/api/v1/auth/logout", json={"refresh_token": ada["refresh_token"]})
    assert out.status_code == 204
    assert_unauthenticated(await refresh(api, ada["refresh_token"]), "a signed-out session")
    forged = TokenService(OTHER_SECRET).issue_refresh(ada["id"]).token
    bad = await api.client.post("/api/v1/auth/logout", json={"refresh_token": forged})
    assert_unauthenticated(bad, "logout with a forged refresh token")


async def test_a_disabled_users_tokens_and_keys_stop_working_at_once(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    user = bearer(ada["access_token"])
    key = (await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=user)).json()
    admin = await api.admin()
    r = await api.client.patch(
        f"/api/v1/admin/users/{ada['id']}", json={"disabled": True}, headers=admin
    )
    assert r.status_code == 200 and r.json()["disabled"] is True

    assert_unauthenticated(await api.client.get("/api/v1/me", headers=user), "access token")
    assert_unauthenticated(await api.client.get("/api/v1/jobs", headers=user), "access token")
    assert_unauthenticated(
        await api.client.get("/api/v1/me", headers=bearer(key["key"])), "API key"
    )
    assert_unauthenticated(await refresh(api, ada["refresh_token"]), "refresh token")
    login = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert_unauthenticated(login, "login")


async def test_valid_tokens_are_accepted_with_or_without_the_scheme(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    for scheme in ("Bearer ", "bearer ", "BEARER  ", ""):
        r = await api.client.get(
            "/api/v1/me", headers={"Authorization": scheme + ada["access_token"]}
        )
        assert r.status_code == 200 and r.json()["email"] == "ada@example.com", scheme
