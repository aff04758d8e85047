"""What the account service hands to the doors: accounts without their password hash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.domain.accounts import Role, UserRecord


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
    # flow control: share under fair dispatch, own quotas (None: the settings'; 0: no cap)
    fair_weight: float = 1.0
    max_queued: int | None = None
    max_running: int | None = None

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


def public(record: UserRecord) -> User:
    return User(
        id=record.id,
        email=record.email,
        username=record.username,
        role=record.role,
        verified=record.verified,
        disabled=record.disabled,
        created_at=record.created_at,
        fair_weight=record.fair_weight,
        max_queued=record.max_queued,
        max_running=record.max_running,
    )
