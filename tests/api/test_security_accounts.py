"""Accounts over HTTP: one-time codes, no user enumeration, no mass assignment, password
changes that sign sessions out, and API keys shown once.

Time: the app's AccountService reads the wall clock and no setting replaces it, so the two
tests that need time to pass (code expiry, resend cooldown) age the stored code through the
store's own `save_otp` instead: the record then says exactly what it would say later.
tests/services/test_accounts.py covers the same rules with a fake clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx

from conveyor.api.deps import verified_user
from tests.api.conftest import ADMIN_EMAIL, PASSWORD, Api
from tests.api.test_security_support import (
    call,
    claims_of,
    depends_on,
    error_of,
    protected_routes,
    unsigned,
)

ADA = "ada@example.com"
BOB = "bob@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(api: Api, email: str, **extra: Any) -> httpx.Response:
    return await api.client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, **extra}
    )


async def verify(api: Api, email: str, code: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/verify", json={"email": email, "code": code})


async def resend(api: Api, email: str) -> httpx.Response:
    return await api.client.post("/api/v1/auth/resend", json={"email": email})


async def login(api: Api, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.client.post("/api/v1/auth/login", json={"email": email, "password": password})


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def same(a: httpx.Response, b: httpx.Response) -> bool:
    """What a client could compare: status, body and content type."""
    return (a.status_code, a.content, a.headers.get("content-type")) == (
        b.status_code,
        b.content,
        b.headers.get("content-type"),
    )


async def age_code(api: Api, email: str, by: timedelta) -> None:
    """Make the stored code of `email` look `by` older (see the module docstring)."""
    store = api.engine.accounts.store
    user = await store.find_by_email(email)
    assert user is not None
    record = await store.load_otp(user.id)
    assert record is not None
    older = replace(record, created_at=record.created_at - by, expires_at=record.expires_at - by)
    await store.save_otp(user.id, older)


async def emails(api: Api, admin: dict[str, str]) -> list[str]:
    r = await api.client.get("/api/v1/admin/users?limit=1000", headers=admin)
    assert r.status_code == 200, r.text
    return sorted(u["email"] for u in r.json())


async def job_count(api: Api, admin: dict[str, str]) -> int:
    """The users' jobs: not the account mail (verification codes) the system queued."""
    r = await api.client.get("/api/v1/jobs?limit=1000", headers=admin)
    assert r.status_code == 200, r.text
    return len([job for job in r.json()["items"] if job["type"] != "account_mail"])


# ---- one-time codes --------------------------------------------------------------------------
async def test_a_code_works_once(api: Api) -> None:
    assert (await register(api, ADA)).status_code == 202
    code = await api.code_for(ADA)
    assert (await verify(api, ADA, code)).status_code == 200
    again = await verify(api, ADA, code)
    assert again.status_code == 422 and error_of(again)["code"] == "invalid_input"
    assert same(again, await verify(api, ADA, wrong(code)))


async def test_five_wrong_codes_lock_the_code(api: Api) -> None:
    assert (await register(api, ADA)).status_code == 202
    code = await api.code_for(ADA)
    answers = [await verify(api, ADA, wrong(code)) for _ in range(5)]
    assert [r.status_code for r in answers] == [422] * 5
    right = await verify(api, ADA, code)
    assert right.status_code == 422 and same(right, answers[0])
    token = (await login(api, ADA)).json()["access_token"]
    assert (await api.client.get("/api/v1/me", headers=bearer(token))).json()["verified"] is False


async def test_only_the_newest_code_is_valid_after_a_resend(api: Api) -> None:
    assert (await register(api, ADA)).status_code == 202
    first = await api.code_for(ADA)
    # Within the cooldown a resend answers the same and sends nothing.
    assert (await resend(api, ADA)).status_code == 202
    assert len(await api.mails_to(ADA)) == 1
    await age_code(api, ADA, timedelta(seconds=61))
    assert (await resend(api, ADA)).status_code == 202
    assert len(await api.mails_to(ADA)) == 2
    second = await api.code_for(ADA)
    assert second != first
    assert (await verify(api, ADA, first)).status_code == 422
    assert (await verify(api, ADA, second)).status_code == 200


async def test_an_expired_code_is_refused_and_a_new_one_works(api: Api) -> None:
    assert (await register(api, ADA)).status_code == 202
    code = await api.code_for(ADA)
    await age_code(api, ADA, timedelta(minutes=10, seconds=1))
    expired = await verify(api, ADA, code)
    assert expired.status_code == 422 and error_of(expired)["code"] == "invalid_input"
    assert (await resend(api, ADA)).status_code == 202
    assert (await verify(api, ADA, await api.code_for(ADA))).status_code == 200


# ---- enumeration -----------------------------------------------------------------------------
async def test_register_answers_a_taken_address_like_a_new_one(api: Api) -> None:
    await api.user(ADA)  # verified
    await register(api, BOB)  # unverified
    new = await register(api, "carol@example.com")
    for taken in (ADA, " Ada@Example.com ", BOB):
        assert same(await register(api, taken), new), taken
    assert new.status_code == 202


async def test_login_answers_an_unknown_address_like_a_wrong_password(api: Api) -> None:
    await api.user(ADA)
    unknown = await login(api, "nobody@example.com")
    assert unknown.status_code == 401 and error_of(unknown)["code"] == "unauthenticated"
    assert same(await login(api, ADA, "wrong password!"), unknown)
    assert same(await login(api, "not an e-mail", "wrong password!"), unknown)


async def test_verify_answers_an_unknown_address_like_a_wrong_code(api: Api) -> None:
    await api.user(BOB)  # verified: no live code
    assert (await register(api, ADA)).status_code == 202
    code = await api.code_for(ADA)
    wrong_code = await verify(api, ADA, wrong(code))
    assert wrong_code.status_code == 422
    for email in ("nobody@example.com", BOB, "not an e-mail"):
        assert same(await verify(api, email, code), wrong_code), email
    assert (await verify(api, ADA, code)).status_code == 200  # 1 of 5 tries was spent


async def test_resend_answers_alike_for_any_address(api: Api) -> None:
    await api.user(BOB)
    assert (await register(api, ADA)).status_code == 202
    unknown = await resend(api, "nobody@example.com")
    assert unknown.status_code == 202
    for email in (ADA, BOB):
        assert same(await resend(api, email), unknown), email


# ---- who may use jobs ------------------------------------------------------------------------
async def test_unverified_users_get_a_clear_403_on_job_routes(api: Api) -> None:
    assert (await register(api, ADA)).status_code == 202
    headers = bearer((await login(api, ADA)).json()["access_token"])
    me = await api.client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["verified"] is False
    guarded = [e for e in protected_routes(api.settings) if depends_on(e, verified_user)]
    assert len(guarded) >= 10
    failures: list[str] = []
    for endpoint in guarded:
        r = await call(api.client, endpoint, headers)
        error = error_of(r) if r.status_code == 403 else {}
        if error.get("code") != "forbidden" or "verify your e-mail" not in error["message"]:
            failures.append(f"{endpoint}: {r.status_code} {r.text}")
    assert failures == []
    submitted = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
    assert submitted.status_code == 403
    assert await job_count(api, await api.admin()) == 0


# ---- mass assignment -------------------------------------------------------------------------
async def test_only_an_admin_can_register_an_admin(api: Api) -> None:
    user = await api.user(ADA)
    anonymous = await register(api, "mallory@example.com", role="admin")
    assert anonymous.status_code == 403 and error_of(anonymous)["code"] == "forbidden"
    as_user = await api.client.post(
        "/api/v1/auth/register",
        json={"email": "mallory@example.com", "password": PASSWORD, "role": "admin"},
        headers=user,
    )
    assert as_user.status_code == 403 and error_of(as_user)["code"] == "forbidden"
    claims = claims_of(user["Authorization"].removeprefix("Bearer "))
    forged = await api.client.post(
        "/api/v1/auth/register",
        json={"email": "mallory@example.com", "password": PASSWORD, "role": "admin"},
        headers={"Authorization": f"Bearer {unsigned({**claims, 'role': 'admin'})}"},
    )
    assert forged.status_code == 401, forged.text
    assert (await login(api, "mallory@example.com")).status_code == 401
    admin = await api.admin()
    assert await emails(api, admin) == [ADA, ADMIN_EMAIL]

    r = await api.client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": PASSWORD, "role": "admin"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    users = (await api.client.get("/api/v1/admin/users", headers=admin)).json()
    assert {u["email"]: u["role"] for u in users}["grace@example.com"] == "admin"
    assert (await register(api, BOB, role="user")).status_code == 202


async def test_unknown_fields_are_refused_and_nothing_is_stored(api: Api) -> None:
    headers = await api.user(ADA)
    admin = await api.admin()
    for field in ("owner_id", "verified", "state", "attempt", "worker_id", "disabled", "id"):
        value: Any = True if field in ("verified", "disabled") else "x"
        refused = {
            "register": await register(api, "mallory@example.com", **{field: value}),
            "job": await api.client.post(
                "/api/v1/jobs", json={"type": "noop", field: value}, headers=headers
            ),
            "batch": await api.client.post(
                "/api/v1/jobs/batch",
                json={"jobs": [{"type": "noop"}, {"type": "noop", field: value}]},
                headers=headers,
            ),
            "schedule": await api.client.post(
                "/api/v1/schedules",
                json={"name": "n", "cron": "* * * * *", "type": "noop", field: value},
                headers=headers,
            ),
        }
        for what, r in refused.items():
            assert r.status_code == 422, f"{field} in {what}: {r.text}"
            error = error_of(r)
            assert error["code"] == "validation_error"
            assert any(
                d["loc"][-1] == field and d["type"] == "extra_forbidden" for d in error["details"]
            ), f"{field} in {what}: {r.text}"
    assert await emails(api, admin) == [ADA, ADMIN_EMAIL]
    assert await job_count(api, admin) == 0
    assert (await api.client.get("/api/v1/schedules", headers=admin)).json() == []


async def test_admins_can_create_admins(api: Api) -> None:
    admin = await api.admin()
    r = await api.client.post(
        "/api/v1/admin/users",
        json={"email": "grace@example.com", "password": PASSWORD, "role": "admin"},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["role"] == "admin", r.text
    grace = await api.login("grace@example.com")
    assert (await api.client.get("/api/v1/admin/users", headers=grace)).status_code == 200


async def test_an_admin_may_register_an_admin(api: Api) -> None:
    admin = await api.admin()
    r = await api.client.post(
        "/api/v1/auth/register",
        json={"email": "grace@example.com", "password": PASSWORD, "role": "admin"},
        headers=admin,
    )
    assert r.status_code == 202, r.text
    users = (await api.client.get("/api/v1/admin/users", headers=admin)).json()
    assert {u["email"]: u["role"] for u in users}["grace@example.com"] == "admin"


# ---- passwords and API keys ------------------------------------------------------------------
async def test_changing_the_password_signs_every_session_out(api: Api) -> None:
    await api.user(ADA)
    one, two = (await login(api, ADA)).json(), (await login(api, ADA)).json()
    headers = bearer(one["access_token"])
    new = "a brand new password"
    bad = await api.client.post(
        "/api/v1/me/password",
        json={"old_password": "not my password", "new_password": new},
        headers=headers,
    )
    assert bad.status_code == 422 and error_of(bad)["code"] == "invalid_input"
    assert (await login(api, ADA, new)).status_code == 401  # nothing changed

    r = await api.client.post(
        "/api/v1/me/password", json={"old_password": PASSWORD, "new_password": new}, headers=headers
    )
    assert r.status_code == 204, r.text
    for session in (one, two):
        again = await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert again.status_code == 401, again.text
    assert (await login(api, ADA)).status_code == 401
    assert (await login(api, ADA, new)).status_code == 200


async def test_api_keys_are_shown_once_used_as_bearer_and_revocable(api: Api) -> None:
    headers = await api.user(ADA)
    created = await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201, created.text
    key = created.json()
    plaintext = key["key"]
    assert plaintext.startswith("cvk_") and plaintext.startswith(key["prefix"])
    assert len(key["prefix"]) < len(plaintext)

    listing = await api.client.get("/api/v1/me/api-keys", headers=headers)
    assert listing.status_code == 200
    assert [k["id"] for k in listing.json()] == [key["id"]]
    assert "key" not in listing.json()[0] and plaintext not in listing.text
    assert listing.json()[0]["prefix"] == key["prefix"]

    as_key = bearer(plaintext)
    me = await api.client.get("/api/v1/me", headers=as_key)
    assert me.status_code == 200 and me.json()["email"] == ADA
    bare = await api.client.get("/api/v1/me", headers={"Authorization": plaintext})
    assert bare.status_code == 200
    job = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=as_key)
    assert job.status_code == 201 and job.json()["owner_id"] == me.json()["id"]
    assert (await api.client.get("/api/v1/admin/users", headers=as_key)).status_code == 403
    not_a_refresh = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": plaintext})
    assert not_a_refresh.status_code == 401

    revoked = await api.client.delete(f"/api/v1/me/api-keys/{key['id']}", headers=headers)
    assert revoked.status_code == 204
    after = await api.client.get("/api/v1/me", headers=as_key)
    assert after.status_code == 401 and error_of(after)["code"] == "unauthenticated"
    assert (await api.client.get("/api/v1/jobs", headers=as_key)).status_code == 401
    assert (await api.client.get("/api/v1/me/api-keys", headers=headers)).json() == []
    twice = await api.client.delete(f"/api/v1/me/api-keys/{key['id']}", headers=headers)
    assert twice.status_code == 204  # revoking again is a no-op
    assert (await api.client.get("/api/v1/me", headers=as_key)).status_code == 401
