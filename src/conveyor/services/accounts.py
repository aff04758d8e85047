"""Accounts: registration with e-mail verification, sign-in, sessions, API keys and admin.

The rules live here and the SQL in `conveyor.store.users`. Three choices shape the module:

- **No user enumeration.** Registering a taken e-mail, signing in to an unknown account and
  asking for a code for an unknown e-mail answer exactly like their ordinary counterparts
  and cost about the same time: a password is hashed (or a dummy verified) either way, and
  mail goes out in the background, so whether a message was sent cannot be timed.
- **Argon2 runs in threads** (`asyncio.to_thread`): it takes tens of milliseconds of CPU,
  which would otherwise stall every request on the event loop.
- **Sessions are short access tokens plus rotating refresh tokens** (`conveyor.auth.refresh`).
  Signing out, changing the password and disabling the account revoke refresh tokens; an
  access token is checked against the stored account on every use, so a disabled account
  stops at once and a role change applies at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Unpack

from conveyor.auth.api_keys import generate, hash_key, looks_like_api_key
from conveyor.auth.errors import InvalidToken, PasswordPolicyError
from conveyor.auth.otp import OtpCodes
from conveyor.auth.passwords import (
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from conveyor.auth.refresh import issue_session, rotate
from conveyor.auth.tokens import Clock, IssuedToken, TokenService, utc_now
from conveyor.domain.accounts import ApiKeyRecord, Role, UserChanges, UserRecord, otp_subject
from conveyor.domain.ids import uuid7
from conveyor.domain.otp import OtpRecord
from conveyor.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from conveyor.mail import MailBackend, MailDeliveryError, Message
from conveyor.store.users import UserStore

log = logging.getLogger("conveyor.accounts")

ROLES: tuple[Role, ...] = ("admin", "user")
MAX_EMAIL_LENGTH = 320  # RFC 5321: 64 for the local part, @, 255 for the domain
MAX_LOCAL_PART_LENGTH = 64
MAX_API_KEY_NAME_LENGTH = 200
MAX_PAGE = 1000
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)
INVALID_CREDENTIALS = "invalid credentials"
INVALID_CODE = "invalid or expired code"

# A deliberately plain check (no e-mail library is installed): ASCII dot-atoms on the left,
# DNS labels with at least one dot on the right. Quoted local parts, IP-literal domains and
# internationalised addresses are refused; whether the address exists is proved by the code
# we mail to it, not by syntax.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+", re.ASCII)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,149}", re.ASCII)


@dataclass(frozen=True, slots=True)
class User:
    """An account as every door sees it: no password hash."""

    id: str
    email: str
    username: str | None
    role: Role
    verified: bool
    disabled: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a sign-in or a refresh hands out."""

    access: str
    refresh: str
    access_expires_in: int  # seconds
    user: User


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """The outcome of `AccountService.register`, for the door's logs and tests only.

    A door must answer the same whatever ``created`` says: telling a taken e-mail apart
    from a new one is exactly the enumeration the service works to prevent.
    """

    user_id: str | None
    created: bool


# The role claim of a token handed out at registration (reference 001's register answer).
REGISTRATION_ROLE = "registered"
VERIFY_FIRST = "verify your e-mail address before using jobs"


def normalize_email(email: str) -> str:
    """The stored form of an address (trimmed, lower-cased), or InvalidInput."""
    address = email.strip().lower()
    local, _, _ = address.partition("@")
    if (
        len(address) > MAX_EMAIL_LENGTH
        or len(local) > MAX_LOCAL_PART_LENGTH
        or _EMAIL.fullmatch(address) is None
    ):
        raise InvalidInput("invalid e-mail address", field="email")
    return address


def normalize_username(username: str) -> str:
    """Lower-case letters, digits, ``_``, ``.`` and ``-``: never an ``@``, so never an e-mail."""
    name = username.strip().lower()
    if _USERNAME.fullmatch(name) is None:
        raise InvalidInput(
            "a username is 1 to 150 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            field="username",
        )
    return name


def require_admin(user: User) -> None:
    """Refuse a caller who is not an admin (the admin operations below assume one)."""
    if not user.is_admin:
        raise Forbidden("this needs an admin account")


class AccountService:
    """Every account use case; the API, the dashboard, the CLI and the adapters call these.

    Mail is delivered by background tasks: call `drain` to wait for them (tests) and
    `aclose` on shutdown.
    """

    def __init__(
        self,
        store: UserStore,
        tokens: TokenService,
        otp: OtpCodes,
        mail: MailBackend,
        *,
        email_verification: bool,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.otp = otp
        self.mail = mail
        self.email_verification = email_verification
        self._clock = clock or utc_now
        self._outbox: set[asyncio.Task[None]] = set()

    # ---- registration and verification -------------------------------------------------------
    async def register(
        self, email: str, password: str, role: str = "user", actor: User | None = None
    ) -> RegisterResult:
        """Create an account, or mail the owner of a taken address; the caller can't tell.

        With verification on, the new account is unverified and a six-digit code is mailed.
        """
        address = normalize_email(email)
        wanted = _check_role(role)
        if wanted == "admin" and (actor is None or not actor.is_admin):
            raise Forbidden("only an admin can create an admin account")
        password_hash = await asyncio.to_thread(hash_password, password)
        record = await self.store.create_user(
            email=address,
            password_hash=password_hash,
            role=wanted,
            verified=not self.email_verification,
        )
        if record is None:
            self._post(_taken_notice(address))
            return RegisterResult(None, False)
        if self.email_verification:
            await self._issue_code(record)
        return RegisterResult(record.id, True)

    def registration_token(self, result: RegisterResult) -> str:
        """An access token to answer a registration with, for doors whose reference does.

        For a taken e-mail it is a well-formed token for an id no account has, so the
        answer looks the same; it authenticates nobody. Note that with verification on a
        new account's token is refused with Forbidden (not verified) and this one with
        Unauthenticated, so such a door should answer those two alike.
        """
        return self.tokens.issue_access(result.user_id or uuid7(), REGISTRATION_ROLE)

    async def verify_otp(self, email: str, code: str) -> User:
        """Mark the e-mail verified with the code mailed to it.

        Every failure (unknown e-mail, wrong, expired, used or locked code) is the same
        InvalidInput, so the answer reveals neither which accounts exist nor why it failed.
        Each guess counts against the code's attempt limit, concurrent ones included.
        """
        user = await self._find_email_quietly(email)
        before = None if user is None else await self.store.load_otp(user.id)
        if user is None or before is None or user.disabled:
            raise InvalidInput(INVALID_CODE)
        check = self.otp.check(before, code, self._clock())
        persisted = check.record == before or await self.store.apply_otp_check(
            user.id, before, check
        )
        if not (check.ok and persisted):
            raise InvalidInput(INVALID_CODE)
        return _public(replace(user, verified=True))

    async def resend_otp(self, email: str) -> None:
        """Mail a new code to an unverified account; silently nothing otherwise.

        Unknown, verified and disabled addresses, and requests within the resend cooldown,
        all return like a real send, so the answer says nothing about the account.
        """
        address = normalize_email(email)
        user = await self.store.find_by_email(address)
        if not self.email_verification or user is None or user.verified or user.disabled:
            return
        previous = await self.store.load_otp(user.id)
        if self.otp.retry_after(previous, self._clock()) > timedelta(0):
            log.info("verification code not resent: within the cooldown")
            return
        await self._issue_code(user, previous)

    def require_verified(self, user: User) -> None:
        """Refuse an unverified account while e-mail verification is on."""
        if self.email_verification and not user.verified:
            raise Forbidden(VERIFY_FIRST)

    # ---- sign-in and sessions ----------------------------------------------------------------
    async def login(self, login: str, password: str) -> TokenPair:
        """Sign in with an e-mail or username; every failure is the same Unauthenticated.

        An unknown login spends the time of a real password check, and a disabled account
        is refused only after its password was checked, so timing tells nothing either.
        """
        user = await self._check_credentials(login, password)
        access, refresh = await issue_session(user.id, user.role, self.store, tokens=self.tokens)
        return self._pair(access, refresh, user)

    async def authenticate(self, login: str, password: str) -> User:
        """The account a login and password belong to, without starting an API session (the
        dashboard keeps its own, `conveyor.services.sessions`). Fails like `login`."""
        return _public(await self._check_credentials(login, password))

    async def _check_credentials(self, login: str, password: str) -> UserRecord:
        user = await self.store.find_by_login(login.strip())
        if user is None:
            await asyncio.to_thread(verify_dummy, password)
            raise Unauthenticated(INVALID_CREDENTIALS)
        matches = await asyncio.to_thread(verify_password, password, user.password_hash)
        if not matches or user.disabled:
            raise Unauthenticated(INVALID_CREDENTIALS)
        await self._rehash_if_needed(user, password)
        return user

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair; reusing one signs its whole family out.

        Raises the token errors of `conveyor.auth` (InvalidToken and its subclasses).
        """
        seen: list[UserRecord] = []

        async def role_of(user_id: str) -> str | None:
            user = await self.store.get_user(user_id)
            if user is None or user.disabled:
                return None
            seen.append(user)
            return user.role

        access, refresh = await rotate(
            refresh_token, self.store, tokens=self.tokens, role_of=role_of
        )
        return self._pair(access, refresh, seen[-1])

    async def logout(self, refresh_token: str) -> None:
        """Revoke the session (the refresh token's family) the token belongs to."""
        claims = self.tokens.decode(refresh_token, "refresh")
        if claims.family is None:  # TokenClaims refuses this already; keeps the type narrow
            raise InvalidToken()
        await self.store.revoke_family(claims.family)

    async def user_from_access_token(self, token: str) -> User:
        """The account an access token speaks for, as it is now (role, disabled)."""
        claims = self.tokens.decode(token, "access")
        if claims.role == REGISTRATION_ROLE and self.email_verification:
            # A registration token answers like an unverified account whether or not the
            # address was new: telling them apart would reveal who is registered.
            record = await self.store.get_user(claims.sub)
            if record is None or not record.verified:
                raise Forbidden(VERIFY_FIRST)
        return _public(await self._active(claims.sub))

    async def user_from_api_key(self, key: str) -> User:
        """The owner of a live API key; records the use at most once a minute."""
        if not looks_like_api_key(key):
            raise Unauthenticated("invalid API key")
        record = await self.store.find_api_key(hash_key(key))
        if record is None:
            raise Unauthenticated("invalid API key")
        user = await self._active(record.user_id)
        await self._touch(record)
        return _public(user)

    async def change_password(self, user: User, old: str, new: str) -> None:
        """Set a new password after checking the old one, and sign out every session."""
        check_password_policy(new)
        record = await self._record(user.id)
        if not await asyncio.to_thread(verify_password, old, record.password_hash):
            raise InvalidInput("the current password is not correct", field="old_password")
        password_hash = await asyncio.to_thread(hash_password, new)
        await self.store.update_user(user.id, password_hash=password_hash)
        await self.store.revoke_all_for_user(user.id)

    # ---- API keys ----------------------------------------------------------------------------
    async def create_api_key(self, user: User, name: str) -> tuple[ApiKeyRecord, str]:
        """A new key and its plaintext, which is shown this once and never stored."""
        label = name.strip()
        if not 1 <= len(label) <= MAX_API_KEY_NAME_LENGTH or not label.isprintable():
            raise InvalidInput(
                f"an API key name is 1 to {MAX_API_KEY_NAME_LENGTH} printable characters",
                field="name",
            )
        new = generate()
        record = await self.store.create_api_key(
            user_id=user.id, name=label, prefix=new.display_prefix, key_hash=new.key_hash
        )
        return record, new.plaintext

    async def list_api_keys(
        self, user: User, *, include_revoked: bool = False
    ) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys(user.id, include_revoked=include_revoked)

    async def revoke_api_key(self, user: User, key_id: str) -> ApiKeyRecord:
        """Revoke one of the user's keys; another user's key is NotFound, like a missing one."""
        record = await self.store.revoke_api_key(user.id, key_id)
        if record is None:
            raise NotFound("no such API key", key_id=key_id)
        return record

    # ---- administration (callers check `require_admin` first) --------------------------------
    async def get_user(self, user_id: str) -> User:
        return _public(await self._record(user_id))

    async def list_users(self, *, after_id: str | None = None, limit: int = 50) -> list[User]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        records = await self.store.list_users(after_id=after_id, limit=limit)
        return [_public(record) for record in records]

    async def create_user(
        self,
        email: str,
        password: str,
        role: str = "user",
        *,
        verified: bool = True,
        username: str | None = None,
    ) -> User:
        """An admin's direct creation: no mail, and a taken e-mail is a plain Conflict."""
        address = normalize_email(email)
        wanted = _check_role(role)
        name = None if username is None else normalize_username(username)
        password_hash = await asyncio.to_thread(hash_password, password)
        record = await self.store.create_user(
            email=address,
            password_hash=password_hash,
            role=wanted,
            verified=verified,
            username=name,
        )
        if record is None:
            raise Conflict("the e-mail or username is taken")
        return _public(record)

    async def set_role(self, user_id: str, role: str) -> User:
        wanted = _check_role(role)
        if wanted != "admin":
            await self._keep_an_admin(user_id)
        return await self._update(user_id, role=wanted)

    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        """Disable (and sign out everywhere) or re-enable an account."""
        if disabled:
            await self._keep_an_admin(user_id)
        user = await self._update(user_id, disabled=disabled)
        if disabled:
            await self.store.revoke_all_for_user(user_id)
        return user

    async def set_verified(self, user_id: str, verified: bool) -> User:
        return await self._update(user_id, verified=verified)

    async def ensure_admin(
        self, email: str, password: str | None, *, username: str | None = "admin"
    ) -> str | None:
        """Create the first admin when there is none; the generated password, if any.

        With ``password`` None a random one is made and returned, for the caller to print
        once; otherwise, and whenever an admin already exists, the result is None. Two
        processes starting together create one admin: the insert is conditional and the
        e-mail unique. The username lets the JobScope door's ``{"username": "admin"}`` work.
        """
        if await self.store.has_admin():
            return None
        try:
            address = normalize_email(email)
            name = None if username is None else normalize_username(username)
        except InvalidInput as exc:
            raise ConfigurationError(f"the admin account is not acceptable: {exc}") from exc
        secret = password if password is not None else secrets.token_urlsafe(18)
        try:
            password_hash = await asyncio.to_thread(hash_password, secret)
        except PasswordPolicyError as exc:
            raise ConfigurationError(f"the admin password is not acceptable: {exc}") from exc
        record = await self.store.create_user(
            email=address,
            password_hash=password_hash,
            role="admin",
            verified=True,
            username=name,
            only_if_no_admin=True,
        )
        if record is None:
            await self._admin_race_lost(address)
            return None
        log.info("created the first admin account %s", address)
        return secret if password is None else None

    # ---- mail --------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait until every mail handed to the background was sent or failed (and logged)."""
        while self._outbox:
            await asyncio.gather(*self._outbox)

    async def aclose(self) -> None:
        """Let pending mail go out; call on shutdown."""
        await self.drain()

    def _post(self, message: Message) -> None:
        task = asyncio.create_task(self._deliver(message))
        self._outbox.add(task)
        task.add_done_callback(self._outbox.discard)

    async def _deliver(self, message: Message) -> None:
        try:
            await self.mail.send(message)
        except MailDeliveryError as exc:
            log.warning("could not send %r: %s", message.subject, exc)
        except Exception:
            # Nothing awaits this task: a failure not logged here would vanish.
            log.exception("unexpected failure sending %r", message.subject)

    async def _issue_code(self, user: UserRecord, previous: OtpRecord | None = None) -> None:
        """Store a new code for the user (killing the previous one) and mail it."""
        code, record = self.otp.issue(otp_subject(user.id), self._clock(), previous)
        await self.store.save_otp(user.id, record)
        self._post(_code_message(user.email, code, self.otp.policy.ttl))

    # ---- helpers -----------------------------------------------------------------------------
    def _pair(self, access: str, refresh: IssuedToken, user: UserRecord) -> TokenPair:
        expires_in = int(self.tokens.access_ttl.total_seconds())
        return TokenPair(access, refresh.token, expires_in, _public(user))

    async def _find_email_quietly(self, email: str) -> UserRecord | None:
        """The account of ``email``, or None for an unknown or malformed address."""
        try:
            address = normalize_email(email)
        except InvalidInput:
            return None
        return await self.store.find_by_email(address)

    async def _record(self, user_id: str) -> UserRecord:
        record = await self.store.get_user(user_id)
        if record is None:
            raise NotFound("no such user", user_id=user_id)
        return record

    async def _active(self, user_id: str) -> UserRecord:
        record = await self.store.get_user(user_id)
        if record is None or record.disabled:
            raise Unauthenticated("this account cannot sign in")
        return record

    async def _update(self, user_id: str, **changes: Unpack[UserChanges]) -> User:
        record = await self.store.update_user(user_id, **changes)
        if record is None:
            raise NotFound("no such user", user_id=user_id)
        return _public(record)

    async def _keep_an_admin(self, user_id: str) -> None:
        """Refuse to demote or disable the last admin who can sign in: nobody could undo it."""
        record = await self._record(user_id)
        if record.role != "admin" or record.disabled:
            return
        if await self.store.count_active_admins() <= 1:
            raise Conflict("the last admin cannot be demoted or disabled")

    async def _rehash_if_needed(self, user: UserRecord, password: str) -> None:
        """Upgrade a hash made with old parameters while the password is at hand."""
        if not needs_rehash(user.password_hash):
            return
        try:
            password_hash = await asyncio.to_thread(hash_password, password)
        except PasswordPolicyError:
            return  # a password from before the policy: keep it until the user changes it
        await self.store.update_user(user.id, password_hash=password_hash)

    async def _touch(self, key: ApiKeyRecord) -> None:
        now = self._clock()
        since = now - API_KEY_TOUCH_INTERVAL
        if key.last_used_at is None or key.last_used_at < since:
            await self.store.touch_api_key(key.id, now, unless_since=since)

    async def _admin_race_lost(self, address: str) -> None:
        """After a refused insert: another process made the admin, or the e-mail is taken."""
        if await self.store.has_admin():
            return
        raise ConfigurationError(
            f"cannot create the first admin: {address} or its username belongs to an account "
            "that is not an admin; set another admin e-mail or promote that account"
        )


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")


def _public(record: UserRecord) -> User:
    return User(
        id=record.id,
        email=record.email,
        username=record.username,
        role=record.role,
        verified=record.verified,
        disabled=record.disabled,
        created_at=record.created_at,
    )


def _code_message(to: str, code: str, ttl: timedelta) -> Message:
    minutes = int(ttl.total_seconds() // 60)
    return Message(
        to=to,
        subject="Your Conveyor verification code",
        text=(
            f"Your verification code is {code}\n\n"
            f"It expires in {minutes} minutes and works once. If you did not sign up for "
            "Conveyor, ignore this message.\n"
        ),
    )


def _taken_notice(to: str) -> Message:
    return Message(
        to=to,
        subject="Someone tried to register with your e-mail address",
        text=(
            "Someone asked to create a Conveyor account with this e-mail address, which "
            "already has one, so nothing was changed.\n\n"
            "If it was you, sign in with your existing password instead. If you did not ask, "
            "you can ignore this message.\n"
        ),
    )
