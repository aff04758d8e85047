"""Accounts as the services see them: users, API keys, and what may change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict

Role = Literal["admin", "user"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored user, password hash included: it never leaves the service layer."""

    id: str
    email: str
    username: str | None
    role: Role
    verified: bool
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_hash: str
    # flow control (docs/flow-control.md): share under fair dispatch, own quotas (None: the
    # settings' default; 0: no cap)
    fair_weight: float = 1.0
    max_queued: int | None = None
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key. Only its hash is kept, and that stays in the store."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class UserChanges(TypedDict, total=False):
    """The columns `UserStore.update_user` may change."""

    email: str
    username: str | None
    password_hash: str
    role: Role
    verified: bool
    disabled: bool
    fair_weight: float
    max_queued: int | None
    max_running: int | None


def otp_subject(user_id: str) -> str:
    """The subject an e-mail verification code of this user is issued for.

    The table keeps one row per user and not the subject, so the subject is rebuilt from
    the user id; it is part of the code's MAC, so a row copied to another user is useless.
    """
    return f"verify-email:{user_id}"
