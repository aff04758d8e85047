"""`account_mail`: the mail the account service sends, as a durable job.

The account service enqueues one of these in the transaction that causes the mail (a
registration, a resend), so a process that dies after the commit still has the mail
queued, and one that dies before it has neither the change nor the mail. The job sends at
most once, like `email`: the send is recorded against the job id before the job finishes.

A verification code must not be readable in the jobs table (``otp_codes`` holds only its
HMAC), so the payload carries it sealed: added, digit-wise modulo 10^6, to a pad that is
HMAC-SHA256 of a fresh random nonce under a key derived from the secret key (a one-time
pad from a keyed PRF; the package has no cipher library and needs none for six digits).
The whole payload is then MACed under the same key, so a payload a user submits through
the jobs API cannot make Conveyor mail an address of their choosing.

The code is issued (and its HMAC stored) by the request rather than by this job, so the
resend cooldown, the expiry and "only the newest code is valid" count from the request,
as they always have, however long the job waits for a worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.auth.otp import CODE_DIGITS
from conveyor.domain.retry import RetryPolicy
from conveyor.errors import NonRetryableError
from conveyor.mail import Message
from conveyor.store.deliveries import DeliveryStore
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

ACCOUNT_MAIL = "account_mail"
Kind = Literal["verification_code", "address_taken"]
_MODULUS: int = 10**CODE_DIGITS


class AccountMailPayload(BaseModel):
    """Which mail to whom; ``code`` is sealed and ``seal`` authenticates every field."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    to: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    code: str | None = Field(None, max_length=64, description="Sealed; verification only.")
    minutes: int = Field(0, ge=0, description="How long the code lives (for the text).")
    seal: str = Field(max_length=64)


class AccountMailResult(BaseModel):
    kind: Kind
    message_id: str
    already_sent: bool = False


class ForgedAccountMail(NonRetryableError):
    """This account mail was not made by the account service; nothing was sent."""

    code = "forged_account_mail"


class AccountLetters:
    """Writes account mail payloads (the service) and reads them back (the handler)."""

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), b"conveyor.account-mail", "sha256").digest()

    def verification_code(self, to: str, code: str, ttl: timedelta) -> dict[str, Any]:
        minutes = int(ttl.total_seconds() // 60)
        return self._signed(kind="verification_code", to=to, code=self._seal(code), minutes=minutes)

    def address_taken(self, to: str) -> dict[str, Any]:
        return self._signed(kind="address_taken", to=to, code=None, minutes=0)

    def message(self, payload: AccountMailPayload) -> Message:
        """The mail a payload stands for; ForgedAccountMail if this key did not sign it."""
        fields = payload.model_dump(exclude={"seal"})
        if not hmac.compare_digest(payload.seal, self._mac(fields)):
            raise ForgedAccountMail()
        if payload.kind == "address_taken":
            return _taken_notice(payload.to)
        if payload.code is None:
            raise ForgedAccountMail("a verification mail without a code")
        return _code_message(payload.to, self._unseal(payload.code), payload.minutes)

    def _signed(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "seal": self._mac(fields)}

    def _mac(self, fields: dict[str, Any]) -> str:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._key, b"mac\x00" + text.encode(), hashlib.sha256).hexdigest()

    def _pad(self, nonce: str) -> int:
        digest = hmac.new(self._key, b"pad\x00" + nonce.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") % _MODULUS  # bias below 10^-13: 2^64 >> 10^6

    def _seal(self, code: str) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{(int(code) + self._pad(nonce)) % _MODULUS:0{CODE_DIGITS}d}"

    def _unseal(self, sealed: str) -> str:
        nonce, _, masked = sealed.partition(".")
        if not masked.isdigit():
            raise ForgedAccountMail("a malformed sealed code")
        return f"{(int(masked) - self._pad(nonce)) % _MODULUS:0{CODE_DIGITS}d}"


blueprint = Blueprint()


@blueprint.job(
    ACCOUNT_MAIL, queue="mail", max_attempts=5, timeout=60, retry=RetryPolicy(base=5, cap=600)
)
async def send_account_mail(ctx: JobContext, payload: AccountMailPayload) -> AccountMailResult:
    """Send a verification code or an account notice; a retry after a crash does not resend."""
    message = AccountLetters(ctx.settings.resolved_secret_key()).message(payload)
    deliveries = DeliveryStore(ctx.resources.backend.db)
    previous = await deliveries.sent(ctx.job_id)
    if previous is not None:
        return AccountMailResult(kind=payload.kind, message_id=previous, already_sent=True)
    message_id = await ctx.resources.mail.send(message)
    await deliveries.record(ctx.job_id, message_id, payload.to)  # before the job is acknowledged
    return AccountMailResult(kind=payload.kind, message_id=message_id)


def _code_message(to: str, code: str, minutes: int) -> Message:
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
