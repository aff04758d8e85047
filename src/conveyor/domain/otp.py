"""One-time codes as the store keeps them: the record of a subject's current code, and the
outcome of one check with the record to write back. The rules that make and judge codes are
in ``conveyor.auth.otp``; these are the values that cross the store boundary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class OtpRecord:
    """The persisted state of the current code of one subject."""

    subject: str
    code_hash: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    used_at: datetime | None = None


class OtpOutcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    USED = "used"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class OtpCheck:
    """The result of a check and the record to persist (unchanged unless a guess counted)."""

    outcome: OtpOutcome
    record: OtpRecord

    @property
    def ok(self) -> bool:
        return self.outcome is OtpOutcome.OK
