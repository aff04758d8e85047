"""The account service on real databases (SQLite and PostgreSQL), with mail kept in memory.

Account mail is queued as durable jobs; `AccountService.drain` here runs the queue through a
real worker whose mail backend is the in-memory `Mailbox`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from conveyor.auth import passwords
from conveyor.auth.api_keys import looks_like_api_key
from conveyor.auth.errors import ExpiredToken, InvalidToken, PasswordPolicyError, RefreshTokenReused
from conveyor.auth.otp import OtpCodes
from conveyor.auth.tokens import TokenService
from conveyor.errors import (
    ConfigurationError,
    Conflict,
    ConveyorError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from conveyor.handlers.account_mail import AccountLetters
from conveyor.mail import Message
from conveyor.runtime import load_handlers
from conveyor.services import accounts as real
from conveyor.services.accounts import (
    INVALID_CODE,
    RegisterResult,
    User,
    normalize_email,
    normalize_username,
    registration,
    signin,
)
from conveyor.services.accounts import admin as admin_part
from conveyor.services.jobs import JobService
from conveyor.settings import Settings
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.users import UserStore
from conveyor.worker.resources import Resources
from conveyor.worker.worker import Worker, WorkerConfig

PASSWORD = "correct horse battery"
ALICE = "alice@example.com"
BOB = "bob@example.com"


class Mailbox:
    """A real MailBackend that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> str:
        self.sent.append(message)
        return f"<{len(self.sent)}@test>"

    def to(self, address: str) -> list[Message]:
        return [message for message in self.sent if message.to == address]

    def code_for(self, address: str) -> str:
        """The code in the newest message to ``address``."""
        found = re.search(r"\b(\d{6})\b", self.to(address)[-1].text)
        assert found is not None, "the newest message carries no code"
        return found.group(1)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class AccountService(real.AccountService):
    """The real service, plus `drain`: send its queued mail through a real worker in burst
    mode (the ``mail`` queue), so a test reads the mail right after the call that queued it."""

    resources: Resources

    async def drain(self) -> None:
        config = WorkerConfig(queues={"mail": None}, concurrency=4, burst=True)
        await Worker(self.jobs.backend, self.jobs.registry, config, self.resources).run()


Factory = Callable[..., AccountService]


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(backend: QueueBackend, mailbox: Mailbox, clock: FakeClock) -> Factory:
    """Services sharing one secret, mailbox, clock and job queue; each may have its own
    Database for its accounts."""
    secret = secrets.token_urlsafe(48)
    jobs = JobService(backend, load_handlers([]))
    settings = Settings(database_url="sqlite:///unused.db", secret_key=secret)
    resources = Resources(settings, backend, mailbox)

    def make(
        *, email_verification: bool = True, database: Database | None = None
    ) -> AccountService:
        service = AccountService(
            UserStore(database or backend.db),
            TokenService(secret, clock=clock),
            OtpCodes(secret),
            jobs,
            AccountLetters(secret),
            email_verification=email_verification,
            clock=clock,
        )
        service.resources = resources
        return service

    return make


@pytest.fixture
def accounts(make_service: Factory) -> AccountService:
    return make_service()


async def signup(
    accounts: AccountService, mailbox: Mailbox, email: str = ALICE, password: str = PASSWORD
) -> User:
    """Register and verify, as a person would."""
    await accounts.register(email, password)
    await accounts.drain()
    return await accounts.verify_otp(email, mailbox.code_for(email.lower()))


async def admin(accounts: AccountService) -> User:
    return await accounts.create_user("root@example.com", PASSWORD, "admin")


async def failure(call: Awaitable[Any]) -> tuple[type[BaseException], str, dict[str, Any]]:
    """What a door would see of a failed call: its type, message and details."""
    with pytest.raises(ConveyorError) as caught:
        await call
    return type(caught.value), caught.value.message, caught.value.details


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count calls of one of the service's password functions, in every part that uses it."""
    calls: list[int] = []
    parts = [part for part in (registration, signin, admin_part) if hasattr(part, name)]
    original = getattr(parts[0], name)

    def wrapper(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    for part in parts:
        monkeypatch.setattr(part, name, wrapper)
    return calls


# ---- registration and verification -----------------------------------------------------------
async def test_register_mails_a_code_and_verify_marks_the_user_verified(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    result = await accounts.register("Alice@Example.com", PASSWORD)
    await accounts.drain()

    assert result.created and result.user_id is not None
    (message,) = mailbox.sent
    assert message.to == ALICE and "10 minutes" in message.text
    user = await accounts.get_user(result.user_id)
    assert (user.email, user.role, user.verified) == (ALICE, "user", False)
    with pytest.raises(Forbidden):
        accounts.require_verified(user)

    verified = await accounts.verify_otp(" ALICE@example.com ", mailbox.code_for(ALICE))

    assert verified.verified and verified.id == user.id
    assert (await accounts.get_user(user.id)).verified
    accounts.require_verified(verified)


async def test_a_code_expires_after_ten_minutes(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await accounts.register(ALICE, PASSWORD)
    await accounts.drain()
    clock.advance(minutes=10, seconds=1)

    with pytest.raises(InvalidInput, match=INVALID_CODE):
        await accounts.verify_otp(ALICE, mailbox.code_for(ALICE))


async def test_a_code_works_once(accounts: AccountService, mailbox: Mailbox) -> None:
    await signup(accounts, mailbox)

    with pytest.raises(InvalidInput, match=INVALID_CODE):
        await accounts.verify_otp(ALICE, mailbox.code_for(ALICE))


async def test_concurrent_uses_of_the_right_code_succeed_once(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    await accounts.register(ALICE, PASSWORD)
    await accounts.drain()
    code = mailbox.code_for(ALICE)

    results = await asyncio.gather(
        *(accounts.verify_otp(ALICE, code) for _ in range(5)), return_exceptions=True
    )

    assert sum(isinstance(r, User) for r in results) == 1
    assert all(isinstance(r, (User, InvalidInput)) for r in results)


async def test_five_wrong_tries_lock_the_code_until_a_new_one_is_sent(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await accounts.register(ALICE, PASSWORD)
    await accounts.drain()
    code = mailbox.code_for(ALICE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for _ in range(5):
        with pytest.raises(InvalidInput, match=INVALID_CODE):
            await accounts.verify_otp(ALICE, wrong)
    with pytest.raises(InvalidInput, match=INVALID_CODE):
        await accounts.verify_otp(ALICE, code)

    clock.advance(seconds=61)
    await accounts.resend_otp(ALICE)
    await accounts.drain()
    assert (await accounts.verify_otp(ALICE, mailbox.code_for(ALICE))).verified


async def test_resend_respects_the_cooldown_and_kills_the_old_code(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await accounts.register(ALICE, PASSWORD)
    await accounts.drain()
    old = mailbox.code_for(ALICE)

    await accounts.resend_otp(ALICE)  # within the cooldown: answered, nothing sent
    await accounts.drain()
    assert len(mailbox.sent) == 1

    clock.advance(seconds=61)
    await accounts.resend_otp(ALICE)
    await accounts.drain()
    new = mailbox.code_for(ALICE)

    assert len(mailbox.sent) == 2 and new != old
    with pytest.raises(InvalidInput, match=INVALID_CODE):
        await accounts.verify_otp(ALICE, old)
    assert (await accounts.verify_otp(ALICE, new)).verified


async def test_resend_is_silent_for_unknown_and_verified_addresses(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await signup(accounts, mailbox)
    sent = len(mailbox.sent)
    clock.advance(seconds=61)

    await accounts.resend_otp(ALICE)
    await accounts.resend_otp("nobody@example.com")
    await accounts.drain()

    assert len(mailbox.sent) == sent
    with pytest.raises(InvalidInput):
        await accounts.resend_otp("not an address")


async def test_every_failure_to_verify_looks_the_same(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await accounts.register(ALICE, PASSWORD)
    await accounts.register(BOB, PASSWORD)
    await accounts.drain()
    await accounts.verify_otp(BOB, mailbox.code_for(BOB))

    outcomes = [
        await failure(accounts.verify_otp("nobody@example.com", "123456")),
        await failure(accounts.verify_otp("not an address", "123456")),
        await failure(accounts.verify_otp(ALICE, "12345")),
        await failure(accounts.verify_otp(BOB, mailbox.code_for(BOB))),  # used
    ]
    clock.advance(minutes=11)
    outcomes.append(await failure(accounts.verify_otp(ALICE, mailbox.code_for(ALICE))))

    assert outcomes == [(InvalidInput, INVALID_CODE, {})] * 5


# ---- no user enumeration ---------------------------------------------------------------------
async def test_registering_a_taken_email_changes_nothing_and_tells_the_owner(
    accounts: AccountService, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await accounts.register(ALICE, PASSWORD)
    await accounts.drain()
    hashes = counting(monkeypatch, "hash_password")

    again = await accounts.register("ALICE@example.com", "another password")
    await accounts.drain()

    assert again == RegisterResult(None, False) and first.created
    assert hashes == [1], "a taken e-mail costs a password hash like a new one"
    assert len(await accounts.list_users()) == 1
    notice = mailbox.sent[-1]
    assert notice.to == ALICE and "already has one" in notice.text
    assert re.search(r"\b\d{6}\b", notice.text) is None
    with pytest.raises(Unauthenticated):
        await accounts.login(ALICE, "another password")


def notices(mailbox: Mailbox, address: str) -> int:
    return sum(1 for m in mailbox.sent if m.to == address and "already has one" in m.text)


async def test_a_taken_address_is_told_once_per_cooldown_window(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await signup(accounts, mailbox, ALICE)
    clock.now = clock.now.replace(second=0, microsecond=0)  # the start of a 60 s window
    hashes = counting(monkeypatch, "hash_password")

    for _ in range(10):
        assert await accounts.register(ALICE, PASSWORD) == RegisterResult(None, False)
        clock.advance(seconds=5)
    await accounts.drain()
    assert notices(mailbox, ALICE) == 1
    assert len(hashes) == 10, "every attempt still costs a password hash"

    clock.advance(seconds=60)
    await accounts.register(ALICE.upper(), PASSWORD)
    await accounts.drain()
    assert notices(mailbox, ALICE) == 2


async def test_unknown_login_wrong_password_and_disabled_account_fail_alike(
    accounts: AccountService, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    await signup(accounts, mailbox, ALICE)
    bob = await signup(accounts, mailbox, BOB)
    await accounts.set_disabled(bob.id, True)
    dummies = counting(monkeypatch, "verify_dummy")
    checks = counting(monkeypatch, "verify_password")

    outcomes = [
        await failure(accounts.login("nobody@example.com", PASSWORD)),
        await failure(accounts.login("nobody", PASSWORD)),
        await failure(accounts.login(ALICE, "wrong password")),
        await failure(accounts.login(BOB, PASSWORD)),
    ]

    assert outcomes == [(Unauthenticated, "invalid credentials", {})] * 4
    assert len(dummies) == 2 and len(checks) == 2, "every attempt costs one password check"


async def test_registration_token_of_a_taken_email_authenticates_nobody(
    make_service: Factory,
) -> None:
    accounts = make_service(email_verification=False)
    new = await accounts.register(ALICE, PASSWORD)
    taken = await accounts.register(ALICE, PASSWORD)

    user = await accounts.user_from_access_token(accounts.registration_token(new))
    assert user.email == ALICE
    with pytest.raises(Unauthenticated):
        await accounts.user_from_access_token(accounts.registration_token(taken))


# ---- sessions --------------------------------------------------------------------------------
async def test_login_refresh_rotation_and_reuse_revokes_the_family(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    alice = await signup(accounts, mailbox)

    first = await accounts.login("Alice@example.com", PASSWORD)
    assert first.user == alice and first.access_expires_in == 15 * 60
    assert await accounts.user_from_access_token(first.access) == alice

    second = await accounts.refresh(first.refresh)
    assert second.refresh != first.refresh and second.user == alice
    assert await accounts.user_from_access_token(second.access) == alice

    with pytest.raises(RefreshTokenReused):
        await accounts.refresh(first.refresh)
    with pytest.raises(InvalidToken):
        await accounts.refresh(second.refresh)  # the thief's copy and ours are both dead


async def test_reuse_leaves_other_sessions_alone(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    await signup(accounts, mailbox)
    laptop = await accounts.login(ALICE, PASSWORD)
    phone = await accounts.login(ALICE, PASSWORD)

    await accounts.refresh(laptop.refresh)
    with pytest.raises(RefreshTokenReused):
        await accounts.refresh(laptop.refresh)

    assert (await accounts.refresh(phone.refresh)).user.email == ALICE


async def test_logout_ends_the_session(accounts: AccountService, mailbox: Mailbox) -> None:
    await signup(accounts, mailbox)
    pair = await accounts.login(ALICE, PASSWORD)
    rotated = await accounts.refresh(pair.refresh)

    await accounts.logout(rotated.refresh)

    with pytest.raises(InvalidToken):
        await accounts.refresh(rotated.refresh)
    with pytest.raises(InvalidToken):
        await accounts.logout(pair.access)  # an access token is not a session


async def test_an_access_token_expires_and_is_no_refresh_token(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    await signup(accounts, mailbox)
    pair = await accounts.login(ALICE, PASSWORD)

    with pytest.raises(InvalidToken):
        await accounts.refresh(pair.access)
    with pytest.raises(InvalidToken):
        await accounts.user_from_access_token(pair.refresh)
    clock.advance(minutes=16)
    with pytest.raises(ExpiredToken):
        await accounts.user_from_access_token(pair.access)
    assert (await accounts.refresh(pair.refresh)).user.email == ALICE


async def test_unverified_users_may_sign_in_but_are_not_verified(
    accounts: AccountService,
) -> None:
    await accounts.register(ALICE, PASSWORD)

    pair = await accounts.login(ALICE, PASSWORD)

    with pytest.raises(Forbidden, match="verify"):
        accounts.require_verified(pair.user)


async def test_login_rehashes_an_outdated_hash(accounts: AccountService, mailbox: Mailbox) -> None:
    alice = await signup(accounts, mailbox)
    weak = Argon2Hasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)
    await accounts.store.update_user(alice.id, password_hash=weak)
    assert passwords.needs_rehash(weak)

    await accounts.login(ALICE, PASSWORD)

    record = await accounts.store.get_user(alice.id)
    assert record is not None and record.password_hash != weak
    assert not passwords.needs_rehash(record.password_hash)


# ---- passwords and accounts ------------------------------------------------------------------
async def test_change_password_signs_out_every_session(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    alice = await signup(accounts, mailbox)
    sessions = [await accounts.login(ALICE, PASSWORD) for _ in range(2)]

    await accounts.change_password(alice, PASSWORD, "a brand new password")

    for pair in sessions:
        with pytest.raises(InvalidToken):
            await accounts.refresh(pair.refresh)
    with pytest.raises(Unauthenticated):
        await accounts.login(ALICE, PASSWORD)
    assert (await accounts.login(ALICE, "a brand new password")).user == alice


async def test_change_password_needs_the_old_one_and_a_good_new_one(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    alice = await signup(accounts, mailbox)
    pair = await accounts.login(ALICE, PASSWORD)

    with pytest.raises(InvalidInput, match="current password"):
        await accounts.change_password(alice, "not my password", "a brand new password")
    with pytest.raises(PasswordPolicyError):
        await accounts.change_password(alice, PASSWORD, "short")

    assert (await accounts.refresh(pair.refresh)).user == alice  # nothing was revoked


async def test_admin_role_is_granted_only_by_an_admin(accounts: AccountService) -> None:
    root = await admin(accounts)
    member = await accounts.create_user(BOB, PASSWORD)

    with pytest.raises(Forbidden):
        await accounts.register("eve@example.com", PASSWORD, role="admin")
    with pytest.raises(Forbidden):
        await accounts.register("eve@example.com", PASSWORD, role="admin", actor=member)
    with pytest.raises(InvalidInput):
        await accounts.register("eve@example.com", PASSWORD, role="root")

    result = await accounts.register("carol@example.com", PASSWORD, role="admin", actor=root)
    assert result.user_id is not None
    assert (await accounts.get_user(result.user_id)).is_admin
    assert len(await accounts.list_users()) == 3


async def test_a_disabled_user_can_use_nothing(accounts: AccountService, mailbox: Mailbox) -> None:
    await admin(accounts)
    alice = await signup(accounts, mailbox)
    pair = await accounts.login(ALICE, PASSWORD)
    _, key = await accounts.create_api_key(alice, "ci")

    disabled = await accounts.set_disabled(alice.id, True)

    assert disabled.disabled
    with pytest.raises(Unauthenticated, match="invalid credentials"):
        await accounts.login(ALICE, PASSWORD)
    with pytest.raises(Unauthenticated):
        await accounts.user_from_access_token(pair.access)
    with pytest.raises(Unauthenticated):
        await accounts.user_from_api_key(key)
    with pytest.raises(InvalidToken):
        await accounts.refresh(pair.refresh)

    await accounts.set_disabled(alice.id, False)
    assert (await accounts.login(ALICE, PASSWORD)).user.id == alice.id


async def test_a_role_change_applies_to_tokens_already_issued(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    await admin(accounts)
    alice = await signup(accounts, mailbox)
    pair = await accounts.login(ALICE, PASSWORD)

    await accounts.set_role(alice.id, "admin")

    assert (await accounts.user_from_access_token(pair.access)).is_admin
    assert (await accounts.refresh(pair.refresh)).user.is_admin


async def test_the_last_admin_cannot_be_demoted_or_disabled(accounts: AccountService) -> None:
    root = await admin(accounts)

    with pytest.raises(Conflict):
        await accounts.set_role(root.id, "user")
    with pytest.raises(Conflict):
        await accounts.set_disabled(root.id, True)

    await accounts.create_user("second@example.com", PASSWORD, "admin")
    assert not (await accounts.set_role(root.id, "user")).is_admin


async def test_admin_user_management(accounts: AccountService) -> None:
    created = await accounts.create_user(ALICE, PASSWORD, username="Alice", verified=False)

    assert (created.username, created.verified) == ("alice", False)
    assert (await accounts.set_verified(created.id, True)).verified
    assert (await accounts.login("alice", PASSWORD)).user.id == created.id
    with pytest.raises(Conflict):
        await accounts.create_user(ALICE, PASSWORD)
    with pytest.raises(NotFound):
        await accounts.set_verified("no-such-user", True)
    with pytest.raises(NotFound):
        await accounts.get_user("no-such-user")
    with pytest.raises(InvalidInput):
        await accounts.list_users(limit=0)

    others = [await accounts.create_user(f"u{i}@example.com", PASSWORD) for i in range(3)]
    page = await accounts.list_users(after_id=created.id, limit=2)
    assert [u.id for u in page] == [u.id for u in others[:2]]


async def test_registration_without_verification(make_service: Factory, mailbox: Mailbox) -> None:
    accounts = make_service(email_verification=False)

    result = await accounts.register(ALICE, PASSWORD)
    await accounts.resend_otp(ALICE)
    await accounts.drain()

    assert result.created and mailbox.sent == []
    pair = await accounts.login(ALICE, PASSWORD)
    assert pair.user.verified
    accounts.require_verified(pair.user)


# ---- API keys --------------------------------------------------------------------------------
async def test_api_key_create_use_list_and_revoke(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    alice = await signup(accounts, mailbox)

    record, plaintext = await accounts.create_api_key(alice, "  deploy bot ")

    assert looks_like_api_key(plaintext) and plaintext.startswith(record.prefix)
    assert record.name == "deploy bot" and record.last_used_at is None
    assert await accounts.user_from_api_key(plaintext) == alice
    (listed,) = await accounts.list_api_keys(alice)
    assert listed.id == record.id and listed.last_used_at == clock.now

    revoked = await accounts.revoke_api_key(alice, record.id)

    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated):
        await accounts.user_from_api_key(plaintext)
    assert await accounts.list_api_keys(alice) == []
    assert await accounts.list_api_keys(alice, include_revoked=True) == [revoked]


async def test_api_key_use_is_recorded_at_most_once_a_minute(
    accounts: AccountService, mailbox: Mailbox, clock: FakeClock
) -> None:
    alice = await signup(accounts, mailbox)
    _, key = await accounts.create_api_key(alice, "ci")
    first_use = clock.now

    await accounts.user_from_api_key(key)
    clock.advance(seconds=30)
    await accounts.user_from_api_key(key)
    (listed,) = await accounts.list_api_keys(alice)
    assert listed.last_used_at == first_use

    clock.advance(seconds=31)
    await accounts.user_from_api_key(key)
    (listed,) = await accounts.list_api_keys(alice)
    assert listed.last_used_at == clock.now


async def test_another_users_api_key_is_not_found(
    accounts: AccountService, mailbox: Mailbox
) -> None:
    alice = await signup(accounts, mailbox, ALICE)
    bob = await signup(accounts, mailbox, BOB)
    record, plaintext = await accounts.create_api_key(alice, "ci")

    with pytest.raises(NotFound):
        await accounts.revoke_api_key(bob, record.id)
    with pytest.raises(NotFound):
        await accounts.revoke_api_key(alice, "no-such-key")
    assert await accounts.list_api_keys(bob) == []
    assert await accounts.user_from_api_key(plaintext) == alice


@pytest.mark.parametrize("key", ["", "not-a-key", "cvk_" + "A" * 43])
async def test_bad_api_keys_are_unauthenticated(accounts: AccountService, key: str) -> None:
    with pytest.raises(Unauthenticated):
        await accounts.user_from_api_key(key)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "line\nbreak"])
async def test_api_key_names_are_checked(accounts: AccountService, name: str) -> None:
    alice = await accounts.create_user(ALICE, PASSWORD)

    with pytest.raises(InvalidInput):
        await accounts.create_api_key(alice, name)


# ---- the first admin -------------------------------------------------------------------------
async def test_ensure_admin_creates_one_admin_once(accounts: AccountService) -> None:
    generated = await accounts.ensure_admin("Admin@Conveyor.local", None)

    assert generated is not None and len(generated) >= 16
    assert await accounts.ensure_admin("admin@conveyor.local", None) is None
    by_email = await accounts.login("admin@conveyor.local", generated)
    by_name = await accounts.login("admin", generated)
    assert by_email.user == by_name.user
    assert by_email.user.is_admin and by_email.user.verified
    assert [u.email for u in await accounts.list_users()] == ["admin@conveyor.local"]


async def test_ensure_admin_with_a_given_password(accounts: AccountService) -> None:
    assert await accounts.ensure_admin("admin@conveyor.local", "given password") is None

    assert (await accounts.login("admin", "given password")).user.is_admin


async def test_ensure_admin_refuses_bad_settings(accounts: AccountService) -> None:
    with pytest.raises(ConfigurationError, match="admin password"):
        await accounts.ensure_admin("admin@conveyor.local", "short")
    with pytest.raises(ConfigurationError, match="admin account"):
        await accounts.ensure_admin("not an address", None)
    assert await accounts.list_users() == []


@pytest.mark.parametrize("same_email", [True, False], ids=["same-email", "other-emails"])
async def test_ensure_admin_concurrently_from_several_processes(
    make_service: Factory, db_url: str, same_email: bool
) -> None:
    databases = [Database(db_url) for _ in range(3)]  # an engine each, like processes
    emails = [f"admin{'' if same_email else i}@conveyor.local" for i in range(3)]
    try:
        services = [make_service(database=database) for database in databases]
        results = await asyncio.gather(
            *(s.ensure_admin(e, None) for s, e in zip(services, emails, strict=True))
        )
        users = await services[0].list_users()
    finally:
        for database in databases:
            await database.dispose()

    assert sum(result is not None for result in results) == 1
    assert len(users) == 1 and users[0].is_admin


async def test_ensure_admin_refuses_an_email_a_user_holds(accounts: AccountService) -> None:
    await accounts.register("admin@conveyor.local", PASSWORD)

    with pytest.raises(ConfigurationError, match="not an admin"):
        await accounts.ensure_admin("admin@conveyor.local", None)
    assert not any(u.is_admin for u in await accounts.list_users())


# ---- input checks (no database) --------------------------------------------------------------
@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "a@b",
        "a b@example.com",
        "a@example..com",
        ".a@example.com",
        "a@-example.com",
        "a@example.com\nBcc: x@y.z",
        "x" * 65 + "@example.com",
        "a@" + ("x" * 63 + ".") * 5 + "com",
        "ü@example.com",
    ],
)
def test_bad_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_email(email)
    assert caught.value.details == {"field": "email"}


@pytest.mark.parametrize(
    ("email", "stored"),
    [
        (" Alice@Example.COM ", "alice@example.com"),
        ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
        ("admin@conveyor.local", "admin@conveyor.local"),
    ],
)
def test_good_emails_are_normalized(email: str, stored: str) -> None:
    assert normalize_email(email) == stored


def test_usernames_never_look_like_emails() -> None:
    assert normalize_username(" Admin ") == "admin"
    for bad in ("", "a@b", "has space", "-dash", "x" * 151):
        with pytest.raises(InvalidInput):
            normalize_username(bad)
