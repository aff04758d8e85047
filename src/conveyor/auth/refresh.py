"""Refresh-token rotation with reuse detection, over a storage Protocol.

Every refresh token can be exchanged once. Exchanging it marks it used and returns a new
pair in the same family. If a used token is presented again, either the legitimate client
or a thief holds a copy, and we cannot tell which: the whole family (that login) is revoked
and both must sign in again. Access tokens carry their family id, so the store can refuse
them as soon as their family is revoked. The storage is a Protocol so the store layer can provide it
later without this module knowing SQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from conveyor.auth.errors import InvalidToken, RefreshTokenReused
from conveyor.auth.tokens import IssuedToken, TokenService

RoleLookup = Callable[[str], Awaitable[str | None]]
"""Maps a subject to its current role, or None when it may no longer sign in."""


class RefreshStore(Protocol):
    """What rotation needs persisted about issued refresh tokens."""

    async def record(self, *, jti: str, family_id: str, subject: str, expires_at: datetime) -> None:
        """Remember a newly issued, unused token."""

    async def mark_used(self, jti: str) -> bool:
        """Atomically mark ``jti`` used; False if it was already used or is unknown.

        This must be a compare-and-set (``UPDATE ... WHERE used_at IS NULL``), so that of
        two concurrent exchanges of one token exactly one succeeds.
        """

    async def revoke_family(self, family_id: str) -> None:
        """Revoke every token of the family, used or not."""

    async def is_revoked(self, family_id: str) -> bool:
        """True once ``revoke_family`` was called for this family."""


async def issue_session(
    subject: str, role: str, store: RefreshStore, *, tokens: TokenService
) -> tuple[str, IssuedToken]:
    """Start a new family at login: an access token and a recorded refresh token."""
    refresh = tokens.issue_refresh(subject)
    await _record(store, refresh, subject)
    return tokens.issue_access(subject, role, refresh.family_id), refresh


async def rotate(
    refresh_token: str, store: RefreshStore, *, tokens: TokenService, role_of: RoleLookup
) -> tuple[str, IssuedToken]:
    """Exchange a refresh token for a new access token and refresh token.

    The role is looked up again rather than copied from the old token, so a role change or
    a disabled account takes effect at the next refresh, not 14 days later.
    """
    claims = tokens.decode(refresh_token, "refresh")
    family_id = claims.family
    if family_id is None:  # TokenClaims already refuses this; keeps the type narrow
        raise InvalidToken()
    if await store.is_revoked(family_id):
        raise InvalidToken("This session was signed out; sign in again.")
    if not await store.mark_used(claims.jti):
        await store.revoke_family(family_id)
        raise RefreshTokenReused()
    role = await role_of(claims.sub)
    if role is None:
        await store.revoke_family(family_id)
        raise InvalidToken("This account can no longer sign in.")
    refresh = tokens.issue_refresh(claims.sub, family_id)
    await _record(store, refresh, claims.sub)
    return tokens.issue_access(claims.sub, role, family_id), refresh


async def _record(store: RefreshStore, token: IssuedToken, subject: str) -> None:
    await store.record(
        jti=token.jti, family_id=token.family_id, subject=subject, expires_at=token.expires_at
    )
