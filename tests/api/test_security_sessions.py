"""Ending a session ends its access tokens at once, not 15 minutes later (issue 14, finding 1).

Signing out, changing the password and reusing a refresh token used to revoke refresh tokens
only; the access tokens of those sessions kept answering until they expired.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import PASSWORD, Api, api_settings, running_api
from tests.api.test_security_tokens import assert_unauthenticated, bearer, refresh, session

NEW_PASSWORD = "a brand new passphrase"


async def me(api: Api, token: str) -> httpx.Response:
    return await api.client.get("/api/v1/me", headers=bearer(token))


async def change_password(api: Api, token: str) -> None:
    r = await api.client.post(
        "/api/v1/me/password",
        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(token),
    )
    assert r.status_code == 204, r.text


async def new_key(api: Api, token: str) -> str:
    r = await api.client.post("/api/v1/me/api-keys", json={"name": "ci"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


async def test_logout_ends_the_sessions_access_token_at_once(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    other = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert (await me(api, ada["access_token"])).status_code == 200
    out = await api.client.post("/api/v1/auth/logout", json={"refresh_token": ada["refresh_token"]})
    assert out.status_code == 204
    assert_unauthenticated(await me(api, ada["access_token"]), "a signed-out access token")
    # Another login is another session: it keeps working.
    assert (await me(api, other.json()["access_token"])).status_code == 200


async def test_a_password_change_ends_every_sessions_access_tokens(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    laptop = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    rotated = (await refresh(api, ada["refresh_token"])).json()
    await change_password(api, ada["access_token"])
    for what, token in (
        ("the changing session's token", ada["access_token"]),
        ("a rotated token of that session", rotated["access_token"]),
        ("another session's token", laptop.json()["access_token"]),
    ):
        assert_unauthenticated(await me(api, token), what)
    fresh = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
    )
    assert (await me(api, fresh.json()["access_token"])).status_code == 200


async def test_refresh_reuse_ends_every_access_token_of_the_family(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    laptop = await api.client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    rotated = (await refresh(api, ada["refresh_token"])).json()
    reused = await refresh(api, ada["refresh_token"])
    assert reused.status_code == 401
    for token in (ada["access_token"], rotated["access_token"]):
        assert_unauthenticated(await me(api, token), "an access token of a reused family")
    assert (await me(api, laptop.json()["access_token"])).status_code == 200


async def test_api_keys_survive_a_password_change_by_default(api: Api) -> None:
    ada = await session(api, "ada@example.com")
    key = await new_key(api, ada["access_token"])
    await change_password(api, ada["access_token"])
    assert (await me(api, key)).status_code == 200


async def test_api_keys_can_be_set_to_die_with_a_password_change(
    db_url: str, tmp_path: Path
) -> None:
    settings = api_settings(db_url, tmp_path, password_change_revokes_api_keys=True)
    async with running_api(settings) as api:
        ada = await session(api, "ada@example.com")
        key = await new_key(api, ada["access_token"])
        await change_password(api, ada["access_token"])
        assert_unauthenticated(await me(api, key), "an API key after a password change")
        fresh = await api.client.post(
            "/api/v1/auth/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
        )
        keys = await api.client.get(
            "/api/v1/me/api-keys", headers=bearer(fresh.json()["access_token"])
        )
        assert keys.status_code == 200 and keys.json() == []
