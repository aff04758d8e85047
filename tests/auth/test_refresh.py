from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime

import pytest

from conveyor.auth.errors import InvalidToken, RefreshTokenReused
from conveyor.auth.refresh import RefreshStore, issue_session, rotate
from conveyor.auth.tokens import TokenService


@dataclass
class _Entry:
    family_id: str
    subject: str
    expires_at: datetime
    used: bool = False


class InMemoryRefreshStore:
    """A complete RefreshStore kept in dicts; asyncio's single thread makes it atomic."""

    def __init__(self) -> None:
        self.tokens: dict[str, _Entry] = {}
        self.revoked: set[str] = set()

    async def record(self, *, jti: str, family_id: str, subject: str, expires_at: datetime) -> None:
        self.tokens[jti] = _Entry(family_id, subject, expires_at)

    async def mark_used(self, jti: str) -> bool:
        entry = self.tokens.get(jti)
        if entry is None or entry.used:
            return False
        entry.used = True
        return True

    async def revoke_family(self, family_id: str) -> None:
        self.revoked.add(family_id)

    async def is_revoked(self, family_id: str) -> bool:
        return family_id in self.revoked


class Roles:
    def __init__(self) -> None:
        self.by_subject: dict[str, str | None] = {"user-1": "member", "user-2": "member"}

    async def __call__(self, subject: str) -> str | None:
        return self.by_subject.get(subject)


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(secrets.token_urlsafe(48))


@pytest.fixture
def store() -> InMemoryRefreshStore:
    return InMemoryRefreshStore()


@pytest.fixture
def roles() -> Roles:
    return Roles()


async def test_in_memory_store_satisfies_the_protocol(store: InMemoryRefreshStore) -> None:
    typed: RefreshStore = store  # checked by mypy
    assert not await typed.is_revoked("nothing")


async def test_issue_session_records_the_refresh_token(
    tokens: TokenService, store: InMemoryRefreshStore
) -> None:
    access, refresh = await issue_session("user-1", "member", store, tokens=tokens)

    assert tokens.decode(access, "access").role == "member"
    entry = store.tokens[refresh.jti]
    assert (entry.family_id, entry.subject, entry.used) == (refresh.family_id, "user-1", False)
    assert entry.expires_at == refresh.expires_at


async def test_rotate_returns_a_new_pair_in_the_same_family(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, first = await issue_session("user-1", "member", store, tokens=tokens)

    access, second = await rotate(first.token, store, tokens=tokens, role_of=roles)

    assert tokens.decode(access, "access").sub == "user-1"
    assert second.family_id == first.family_id
    assert second.jti != first.jti
    assert store.tokens[first.jti].used
    assert not store.tokens[second.jti].used
    assert tokens.decode(second.token, "refresh").family == first.family_id


async def test_chain_of_rotations_keeps_working(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, refresh = await issue_session("user-1", "member", store, tokens=tokens)

    for _ in range(3):
        _, refresh = await rotate(refresh.token, store, tokens=tokens, role_of=roles)

    assert sum(not entry.used for entry in store.tokens.values()) == 1


async def test_reusing_a_refresh_token_revokes_the_whole_family(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, first = await issue_session("user-1", "member", store, tokens=tokens)
    _, second = await rotate(first.token, store, tokens=tokens, role_of=roles)

    with pytest.raises(RefreshTokenReused) as caught:
        await rotate(first.token, store, tokens=tokens, role_of=roles)

    assert caught.value.code == "refresh_token_reused"
    assert await store.is_revoked(first.family_id)
    # The newest token of the family dies with it: the thief's copy and ours alike.
    with pytest.raises(InvalidToken, match="signed out"):
        await rotate(second.token, store, tokens=tokens, role_of=roles)


async def test_reuse_in_one_family_leaves_other_logins_alone(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, stolen = await issue_session("user-1", "member", store, tokens=tokens)
    _, other_device = await issue_session("user-1", "member", store, tokens=tokens)
    await rotate(stolen.token, store, tokens=tokens, role_of=roles)
    with pytest.raises(RefreshTokenReused):
        await rotate(stolen.token, store, tokens=tokens, role_of=roles)

    _, renewed = await rotate(other_device.token, store, tokens=tokens, role_of=roles)

    assert renewed.family_id == other_device.family_id


async def test_concurrent_use_of_one_token_lets_exactly_one_through(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, refresh = await issue_session("user-1", "member", store, tokens=tokens)

    results = await asyncio.gather(
        rotate(refresh.token, store, tokens=tokens, role_of=roles),
        rotate(refresh.token, store, tokens=tokens, role_of=roles),
        return_exceptions=True,
    )

    assert sum(isinstance(result, tuple) for result in results) == 1
    assert sum(isinstance(result, RefreshTokenReused) for result in results) == 1
    assert await store.is_revoked(refresh.family_id)


async def test_unrecorded_refresh_token_is_treated_as_reuse(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    never_recorded = tokens.issue_refresh("user-1")

    with pytest.raises(RefreshTokenReused):
        await rotate(never_recorded.token, store, tokens=tokens, role_of=roles)

    assert await store.is_revoked(never_recorded.family_id)


async def test_rotation_reads_the_current_role(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, refresh = await issue_session("user-1", "member", store, tokens=tokens)
    roles.by_subject["user-1"] = "admin"

    access, _ = await rotate(refresh.token, store, tokens=tokens, role_of=roles)

    assert tokens.decode(access, "access").role == "admin"


async def test_account_that_can_no_longer_sign_in_loses_its_family(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    _, refresh = await issue_session("user-1", "member", store, tokens=tokens)
    roles.by_subject["user-1"] = None

    with pytest.raises(InvalidToken, match="can no longer sign in"):
        await rotate(refresh.token, store, tokens=tokens, role_of=roles)

    assert await store.is_revoked(refresh.family_id)


async def test_access_token_cannot_be_rotated(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    access, _ = await issue_session("user-1", "member", store, tokens=tokens)

    with pytest.raises(InvalidToken, match="'refresh'"):
        await rotate(access, store, tokens=tokens, role_of=roles)

    assert store.revoked == set()


async def test_access_tokens_name_the_session_they_belong_to(
    tokens: TokenService, store: InMemoryRefreshStore, roles: Roles
) -> None:
    """So that ending the session (the family) can end its access tokens too."""
    access, first = await issue_session("user-1", "member", store, tokens=tokens)
    rotated, second = await rotate(first.token, store, tokens=tokens, role_of=roles)

    assert tokens.decode(access, "access").family == first.family_id
    assert tokens.decode(rotated, "access").family == second.family_id == first.family_id
