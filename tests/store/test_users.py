"""The account store, one suite run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from datetime import timedelta

import pytest

from conveyor.auth.otp import OtpCodes
from conveyor.domain.accounts import ApiKeyRecord, UserRecord, otp_subject
from conveyor.domain.clock import utcnow
from conveyor.domain.otp import OtpCheck, OtpOutcome, OtpRecord
from conveyor.errors import Conflict
from conveyor.store.database import Database
from conveyor.store.users import UserStore

HASH = "$argon2id$not-a-real-hash"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[UserStore]:
    db = Database(db_url)
    yield UserStore(db)
    await db.dispose()


async def make_user(
    store: UserStore, email: str = "alice@example.com", **extra: object
) -> UserRecord:
    user = await store.create_user(email=email, password_hash=HASH, **extra)  # type: ignore[arg-type]
    assert user is not None
    return user


# ---- users -----------------------------------------------------------------------------------
async def test_create_user_stores_a_lower_cased_email_and_defaults(store: UserStore) -> None:
    user = await make_user(store, "Alice@Example.COM")

    assert user.email == "alice@example.com"
    assert (user.role, user.verified, user.disabled) == ("user", False, False)
    assert user.created_at == user.updated_at and user.created_at.tzinfo is not None
    assert await store.get_user(user.id) == user


async def test_a_taken_email_or_username_creates_nothing(store: UserStore) -> None:
    await make_user(store, "alice@example.com", username="Alice")

    again = await store.create_user(email="ALICE@example.com", password_hash=HASH)
    same_name = await store.create_user(
        email="bob@example.com", password_hash=HASH, username="alice"
    )

    assert again is None and same_name is None
    assert len(await store.list_users()) == 1


async def test_find_by_login_takes_an_email_in_any_case_or_a_username(store: UserStore) -> None:
    user = await make_user(store, username="Alice")

    assert await store.find_by_login("ALICE@example.com") == user
    assert await store.find_by_login("alice") == user
    assert await store.find_by_login("ALICE") == user
    assert await store.find_by_login("bob") is None
    assert await store.find_by_email("bob@example.com") is None


async def test_list_users_pages_oldest_first(store: UserStore) -> None:
    made = [await make_user(store, f"user{i}@example.com") for i in range(5)]

    first = await store.list_users(limit=2)
    rest = await store.list_users(after_id=first[-1].id, limit=10)

    assert [u.id for u in first + rest] == [u.id for u in made]


async def test_update_user_changes_columns_and_updated_at(store: UserStore) -> None:
    user = await make_user(store)

    changed = await store.update_user(user.id, role="admin", verified=True, username="Boss")

    assert changed is not None
    assert (changed.role, changed.verified, changed.username) == ("admin", True, "boss")
    assert changed.updated_at >= user.updated_at and changed.created_at == user.created_at
    assert await store.update_user("no-such-id", verified=True) is None


async def test_update_user_to_a_taken_email_is_a_conflict(store: UserStore) -> None:
    await make_user(store, "alice@example.com")
    bob = await make_user(store, "bob@example.com")

    with pytest.raises(Conflict):
        await store.update_user(bob.id, email="Alice@example.com")
    assert (await store.get_user(bob.id)) == bob


async def test_only_if_no_admin_creates_the_first_admin_only(store: UserStore) -> None:
    assert not await store.has_admin()
    first = await store.create_user(
        email="root@example.com", password_hash=HASH, role="admin", only_if_no_admin=True
    )
    second = await store.create_user(
        email="other@example.com", password_hash=HASH, role="admin", only_if_no_admin=True
    )

    assert first is not None and second is None
    assert await store.has_admin() and await store.count_active_admins() == 1
    await store.update_user(first.id, disabled=True)
    assert await store.count_active_admins() == 0


# ---- one-time codes --------------------------------------------------------------------------
@pytest.fixture
def codes() -> OtpCodes:
    return OtpCodes(secrets.token_urlsafe(48))


async def test_otp_save_load_and_replace(store: UserStore, codes: OtpCodes) -> None:
    user = await make_user(store)
    assert await store.load_otp(user.id) is None

    _, first = codes.issue(otp_subject(user.id), utcnow())
    await store.save_otp(user.id, first)
    assert await store.load_otp(user.id) == first

    _, second = codes.issue(otp_subject(user.id), utcnow() + timedelta(minutes=2), first)
    await store.save_otp(user.id, second)
    assert await store.load_otp(user.id) == second


async def test_otp_of_another_subject_is_refused(store: UserStore, codes: OtpCodes) -> None:
    user = await make_user(store)
    _, record = codes.issue("verify-email:someone-else", utcnow())

    with pytest.raises(ValueError, match="someone-else"):
        await store.save_otp(user.id, record)


async def test_apply_otp_check_counts_once_and_verifies_on_success(
    store: UserStore, codes: OtpCodes
) -> None:
    user = await make_user(store)
    now = utcnow()
    code, issued = codes.issue(otp_subject(user.id), now)
    await store.save_otp(user.id, issued)

    wrong = codes.check(issued, "not-it", now)
    assert await store.apply_otp_check(user.id, issued, wrong)
    # A second writer that read the same record lost the race: its guess is not applied.
    assert not await store.apply_otp_check(user.id, issued, wrong)
    stored = await store.load_otp(user.id)
    assert stored is not None and stored.attempts == 1

    right = codes.check(stored, code, now)
    assert right.ok and await store.apply_otp_check(user.id, stored, right)
    verified = await store.get_user(user.id)
    assert verified is not None and verified.verified
    assert not await store.apply_otp_check(user.id, stored, right)  # single use


async def test_apply_otp_check_misses_a_replaced_code(store: UserStore, codes: OtpCodes) -> None:
    user = await make_user(store)
    now = utcnow()
    _, old = codes.issue(otp_subject(user.id), now)
    await store.save_otp(user.id, old)
    _, new = codes.issue(otp_subject(user.id), now + timedelta(minutes=5), old)
    await store.save_otp(user.id, new)

    stale = OtpCheck(OtpOutcome.OK, replace(old, attempts=1, used_at=now))

    assert not await store.apply_otp_check(user.id, old, stale)
    assert await store.load_otp(user.id) == new
    unverified = await store.get_user(user.id)
    assert unverified is not None and not unverified.verified


# ---- refresh tokens --------------------------------------------------------------------------
async def record(store: UserStore, user: UserRecord, jti: str, family: str = "fam-1") -> None:
    expires = utcnow() + timedelta(days=14)
    await store.record(jti=jti, family_id=family, subject=user.id, expires_at=expires)


async def test_mark_used_succeeds_once_even_concurrently(store: UserStore) -> None:
    user = await make_user(store)
    await record(store, user, "jti-1")

    results = await asyncio.gather(*(store.mark_used("jti-1") for _ in range(10)))

    assert results.count(True) == 1
    assert not await store.mark_used("unknown-jti")


async def test_revoke_family_revokes_every_token_and_blocks_use(store: UserStore) -> None:
    user = await make_user(store)
    await record(store, user, "a", "fam-1")
    await record(store, user, "b", "fam-1")
    await record(store, user, "c", "fam-2")

    await store.revoke_family("fam-1")
    await record(store, user, "late", "fam-1")  # a rotation that raced with the revocation

    assert await store.is_revoked("fam-1") and not await store.is_revoked("fam-2")
    assert not await store.mark_used("b")
    assert await store.mark_used("c")


async def test_revoke_all_for_user_leaves_other_users_alone(store: UserStore) -> None:
    alice = await make_user(store, "alice@example.com")
    bob = await make_user(store, "bob@example.com")
    await record(store, alice, "a1", "alice-1")
    await record(store, alice, "a2", "alice-2")
    await record(store, bob, "b1", "bob-1")

    await store.revoke_all_for_user(alice.id)

    assert await store.is_revoked("alice-1") and await store.is_revoked("alice-2")
    assert not await store.is_revoked("bob-1")


async def test_prune_removes_only_families_that_fully_expired(store: UserStore) -> None:
    user = await make_user(store)
    past = utcnow() - timedelta(days=1)
    future = utcnow() + timedelta(days=1)
    await store.record(jti="old", family_id="dead", subject=user.id, expires_at=past)
    await store.record(jti="mixed-old", family_id="live", subject=user.id, expires_at=past)
    await store.record(jti="mixed-new", family_id="live", subject=user.id, expires_at=future)
    await store.revoke_family("live")

    assert await store.prune_refresh_tokens(utcnow()) == 1
    assert await store.is_revoked("live")


# ---- API keys --------------------------------------------------------------------------------
async def make_key(store: UserStore, user: UserRecord, key_hash: str = "h1") -> ApiKeyRecord:
    return await store.create_api_key(
        user_id=user.id, name="ci", prefix="cvk_abcdefgh", key_hash=key_hash
    )


async def test_api_key_create_find_and_list(store: UserStore) -> None:
    user = await make_user(store)
    key = await make_key(store, user)

    assert "key_hash" not in {f.name for f in fields(ApiKeyRecord)}
    assert (key.user_id, key.name, key.prefix) == (user.id, "ci", "cvk_abcdefgh")
    assert key.last_used_at is None and key.revoked_at is None
    assert await store.find_api_key("h1") == key
    assert await store.find_api_key("other") is None
    assert await store.list_api_keys(user.id) == [key]


async def test_touch_api_key_is_throttled(store: UserStore) -> None:
    user = await make_user(store)
    key = await make_key(store, user)
    now = utcnow()

    await store.touch_api_key(key.id, now, unless_since=now - timedelta(minutes=1))
    later = now + timedelta(seconds=30)
    await store.touch_api_key(key.id, later, unless_since=later - timedelta(minutes=1))

    found = await store.find_api_key("h1")
    assert found is not None and found.last_used_at == now


async def test_revoke_api_key_is_owner_scoped_and_idempotent(store: UserStore) -> None:
    alice = await make_user(store, "alice@example.com")
    bob = await make_user(store, "bob@example.com")
    key = await make_key(store, alice)

    assert await store.revoke_api_key(bob.id, key.id) is None
    assert await store.find_api_key("h1") == key

    revoked = await store.revoke_api_key(alice.id, key.id)
    again = await store.revoke_api_key(alice.id, key.id)

    assert revoked is not None and revoked.revoked_at is not None
    assert again is not None and again.revoked_at == revoked.revoked_at
    assert await store.find_api_key("h1") is None
    assert await store.list_api_keys(alice.id) == []
    assert await store.list_api_keys(alice.id, include_revoked=True) == [revoked]


async def test_otp_record_round_trips_every_field(store: UserStore) -> None:
    user = await make_user(store)
    now = utcnow()
    record = OtpRecord(
        subject=otp_subject(user.id),
        code_hash="ab" * 32,
        created_at=now,
        expires_at=now + timedelta(minutes=10),
        attempts=3,
        used_at=now + timedelta(minutes=1),
    )
    await store.save_otp(user.id, record)

    assert await store.load_otp(user.id) == record
