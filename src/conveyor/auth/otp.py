"""Six-digit one-time codes (e-mail verification) as pure state transitions.

The store keeps one ``OtpRecord`` (a record of ``conveyor.domain.otp``) per subject (for
example ``"verify-email:<user id>"``); ``issue`` returns the record that replaces it, so only
the newest code is ever valid, and ``check`` returns the outcome with the record to write
back. No I/O and no wall clock here: ``now`` is always passed in.

Codes are stored as HMAC-SHA256, keyed with a key derived from the secret key, and not with
argon2. A code has only 10^6 values, so a slow hash would not stop an offline search of a
leaked hash (a million argon2 runs is hours on one machine) while it would cost CPU on every
check; a keyed HMAC makes a leaked table useless without the secret key, and online guessing
is stopped by the attempt limit. The subject is part of the MAC input, so a hash copied onto
another subject's record does not verify there.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from conveyor.auth.errors import OtpCooldown
from conveyor.domain.otp import OtpCheck, OtpOutcome, OtpRecord

CODE_DIGITS = 6


@dataclass(frozen=True, slots=True)
class OtpPolicy:
    """How long a code lives, how many wrong guesses lock it, how often a new one is sent."""

    ttl: timedelta = timedelta(minutes=10)
    max_attempts: int = 5
    resend_cooldown: timedelta = timedelta(seconds=60)


def generate_code() -> str:
    """A uniformly random, zero-padded six-digit code."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


class OtpCodes:
    """Issues and checks codes with a key derived from the application's secret key."""

    def __init__(self, secret_key: str, policy: OtpPolicy | None = None) -> None:
        # A key of its own, so a MAC computed here can never be mistaken for a JWT signature.
        self._key = hmac.new(secret_key.encode(), b"conveyor.otp", hashlib.sha256).digest()
        self.policy = policy or OtpPolicy()

    def hash_code(self, subject: str, code: str) -> str:
        message = f"{subject}\x00{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def retry_after(self, previous: OtpRecord | None, now: datetime) -> timedelta:
        """How long until a new code may be sent (zero when it may be sent now)."""
        if previous is None:
            return timedelta(0)
        return max(timedelta(0), previous.created_at + self.policy.resend_cooldown - now)

    def issue(
        self, subject: str, now: datetime, previous: OtpRecord | None = None
    ) -> tuple[str, OtpRecord]:
        """A new code (to send) and the record that replaces ``previous`` (to store).

        Raises OtpCooldown when ``previous`` was issued less than the cooldown ago. The new
        code always differs from the previous one, so the old code is certainly dead.
        """
        wait = self.retry_after(previous, now)
        if wait > timedelta(0):
            raise OtpCooldown(retry_after=math.ceil(wait.total_seconds()))
        code = generate_code()
        while previous is not None and self._matches(previous, code):
            code = generate_code()
        record = OtpRecord(
            subject=subject,
            code_hash=self.hash_code(subject, code),
            created_at=now,
            expires_at=now + self.policy.ttl,
        )
        return code, record

    def check(self, record: OtpRecord, code: str, now: datetime) -> OtpCheck:
        """Judge one attempt. Every guess at a live code counts, right or wrong."""
        if record.used_at is not None:
            return OtpCheck(OtpOutcome.USED, record)
        if record.attempts >= self.policy.max_attempts:
            return OtpCheck(OtpOutcome.LOCKED, record)
        if now >= record.expires_at:
            return OtpCheck(OtpOutcome.EXPIRED, record)
        counted = replace(record, attempts=record.attempts + 1)
        if not self._matches(record, "".join(code.split())):
            return OtpCheck(OtpOutcome.WRONG, counted)
        return OtpCheck(OtpOutcome.OK, replace(counted, used_at=now))

    def _matches(self, record: OtpRecord, code: str) -> bool:
        if len(code) != CODE_DIGITS or not (code.isascii() and code.isdigit()):
            return False
        return hmac.compare_digest(self.hash_code(record.subject, code), record.code_hash)
