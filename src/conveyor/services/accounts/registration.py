"""Registration and e-mail verification, and the account mail they cause.

Every mail goes out as an `account_mail` job inserted in the transaction that makes the
change it reports (the new account and its code, a resent code, the "already registered"
notice): a crash after the commit leaves the mail queued, never lost, and before it leaves
neither. The code itself is issued here, as before, so its rules (cooldown, expiry, only
the newest valid, attempt limit) do not depend on when a worker sends it.

No user enumeration: a new and a taken address both cost one password hash and one
transaction that enqueues one `account_mail` job, and answer alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from conveyor.auth.passwords import hash_password
from conveyor.domain.accounts import UserRecord, otp_subject
from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import ACCOUNTS_OWNER
from conveyor.domain.otp import OtpRecord
from conveyor.errors import Forbidden, InvalidInput
from conveyor.handlers.account_mail import ACCOUNT_MAIL
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import RegisterResult, User, public
from conveyor.services.accounts.rules import check_role, normalize_email
from conveyor.services.jobs import Submission

log = logging.getLogger("conveyor.accounts")

INVALID_CODE = "invalid or expired code"
# The role claim of a token handed out at registration (reference 001's register answer).
REGISTRATION_ROLE = "registered"
VERIFY_FIRST = "verify your e-mail address before using jobs"


class Registration(AccountCore):
    async def register(
        self, email: str, password: str, role: str = "user", actor: User | None = None
    ) -> RegisterResult:
        """Create an account, or mail the owner of a taken address; the caller can't tell.

        With verification on, the new account is unverified and a six-digit code is mailed.
        """
        address = normalize_email(email)
        wanted = check_role(role)
        if wanted == "admin" and (actor is None or not actor.is_admin):
            raise Forbidden("only an admin can create an admin account")
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self.jobs.backend.transaction() as tx:
            record = await self.store.create_user(
                email=address,
                password_hash=password_hash,
                role=wanted,
                verified=not self.email_verification,
                tx=tx,
            )
            if record is None:
                await self.jobs.submit(self._taken_notice(address), ACCOUNTS_OWNER, tx=tx)
                return RegisterResult(None, False)
            if self.email_verification:
                otp, mail = self._new_code(record)
                await self.store.save_otp(record.id, otp, tx=tx)
                await self.jobs.submit(mail, ACCOUNTS_OWNER, tx=tx)
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
        return public(replace(user, verified=True))

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
        otp, mail = self._new_code(user, previous)
        async with self.jobs.backend.transaction() as tx:
            await self.store.save_otp(user.id, otp, tx=tx)
            await self.jobs.submit(mail, ACCOUNTS_OWNER, tx=tx)

    def require_verified(self, user: User) -> None:
        """Refuse an unverified account while e-mail verification is on."""
        if self.email_verification and not user.verified:
            raise Forbidden(VERIFY_FIRST)

    def _new_code(
        self, user: UserRecord, previous: OtpRecord | None = None
    ) -> tuple[OtpRecord, Submission]:
        """A new code's record (it kills the previous one once stored) and the mail with it."""
        code, record = self.otp.issue(otp_subject(user.id), self._clock(), previous)
        payload = self.letters.verification_code(user.email, code, self.otp.policy.ttl)
        return record, _mail(payload, f"{user.id}:{_stamp(record.created_at)}")

    def _taken_notice(self, address: str) -> Submission:
        """The "someone tried to register" mail, at most one per address per cooldown window.

        The key names the window, not the moment: every attempt within one window enqueues
        the same key, which the queue keeps once (``ON CONFLICT DO NOTHING``). So the taken
        path still costs one hash and one transaction whether or not a mail results, and
        many sources together cannot flood the owner's inbox.
        """
        cause = f"{hashlib.sha256(address.encode()).hexdigest()[:32]}:{self._notice_window()}"
        return _mail(self.letters.address_taken(address), cause)

    def _notice_window(self) -> str:
        seconds = self.register_notice_cooldown.total_seconds()
        if seconds <= 0:
            return _stamp(self._clock())  # no cooldown: every attempt is its own cause
        return f"w{int(self._clock().timestamp() // seconds)}x{int(seconds)}"

    async def _find_email_quietly(self, email: str) -> UserRecord | None:
        """The account of ``email``, or None for an unknown or malformed address."""
        try:
            address = normalize_email(email)
        except InvalidInput:
            return None
        return await self.store.find_by_email(address)


def _mail(payload: dict[str, Any], cause: str) -> Submission:
    """One account mail, keyed by what caused it: enqueued twice, it is still sent once."""
    key = f"account-mail:{payload['kind']}:{cause}"
    return Submission(type=ACCOUNT_MAIL, payload=payload, idempotency_key=key)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S%fZ")
