"""Signed JWTs (HS256) for access and refresh, with an injectable clock.

An access token is short-lived, carries the role and names its session (``fam``, the refresh
family it was issued with, so it dies with that session); a refresh token is long-lived, belongs
to a *family* (one login) and is exchanged for a new pair by ``conveyor.auth.refresh``.
The ``typ`` claim keeps the two apart, so one can never be used in place of the other.

PyJWT checks the signature, algorithm, issuer, audience and the presence of the required
claims. It reads the wall clock for ``exp`` and ``iat``, so those two are checked here
against ``clock`` instead; that keeps expiry testable and consistent with issuing.

Verifying a signature and validating claims cost about a tenth of a job submission's CPU;
a client sends the same access token with every request until it expires, so each service
remembers the claims of the access tokens it verified (a bounded number). A token's claims
are a function of its text and the secret alone; the times are checked on every use.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.auth.errors import ExpiredToken, InvalidToken
from conveyor.errors import ConfigurationError

TokenType = Literal["access", "refresh"]
Clock = Callable[[], datetime]

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key must be at least as long as the hash.
_ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub", "iss", "aud"]
VERIFIED_KEPT = 10_000  # access tokens whose claims are remembered (then forgotten, all at once)


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class TokenClaims(BaseModel):
    """The verified content of a token."""

    model_config = ConfigDict(frozen=True)

    sub: str
    jti: str
    type: TokenType = Field(alias="typ")
    role: str | None = None
    family: str | None = Field(default=None, alias="fam")
    iat: datetime
    exp: datetime

    @model_validator(mode="after")
    def _has_its_claims(self) -> TokenClaims:
        if self.type == "access" and self.role is None:
            raise ValueError("an access token needs a role")
        if self.type == "refresh" and self.family is None:
            raise ValueError("a refresh token needs a family")
        return self


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new refresh token and what the refresh store records about it."""

    token: str
    jti: str
    family_id: str
    expires_at: datetime


class TokenService:
    """Issues and verifies Conveyor's JWTs with one secret."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str = "conveyor",
        audience: str = "conveyor",
        access_ttl: timedelta = timedelta(minutes=15),
        refresh_ttl: timedelta = timedelta(days=14),
        leeway: timedelta = timedelta(seconds=10),
        clock: Clock | None = None,
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"The secret key must be at least {MIN_SECRET_BYTES} bytes long "
                "to sign tokens with HS256."
            )
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.leeway = leeway
        self._clock = clock or utc_now
        self._verified: dict[str, TokenClaims] = {}  # access token -> its verified claims

    def issue_access(self, sub: str, role: str, family_id: str | None = None) -> str:
        """A short-lived token that authorizes API calls as ``sub`` with ``role``.

        ``family_id`` names the session (refresh family) it belongs to, so that ending the
        session ends the access token too, not only its refresh tokens.
        """
        extra = {"fam": family_id} if family_id is not None else {}
        token, _, _ = self._encode(sub, "access", self.access_ttl, role=role, **extra)
        return token

    def issue_refresh(self, sub: str, family_id: str | None = None) -> IssuedToken:
        """A long-lived token for ``sub``; a new family (a new login) unless one is given."""
        family_id = family_id or uuid.uuid4().hex
        token, jti, expires_at = self._encode(sub, "refresh", self.refresh_ttl, fam=family_id)
        return IssuedToken(token, jti, family_id, expires_at)

    def decode(self, token: str, expected_type: TokenType) -> TokenClaims:
        """Verify ``token`` and return its claims, or raise InvalidToken / ExpiredToken."""
        claims = self._verified.get(token) or self._verified_claims(token)
        if claims.type != expected_type:
            raise InvalidToken(
                f"The token is not of type {expected_type!r}.", expected=expected_type
            )
        now = self._clock()
        if claims.exp <= now - self.leeway:
            raise ExpiredToken()
        if claims.iat > now + self.leeway:
            raise InvalidToken("The token is not valid yet.")
        if claims.type == "access" and token not in self._verified:
            if len(self._verified) >= VERIFIED_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def _encode(
        self, sub: str, typ: TokenType, ttl: timedelta, **extra: str
    ) -> tuple[str, str, datetime]:
        # JWT times are whole seconds; drop the fraction so expires_at matches the claim.
        now = self._clock().replace(microsecond=0)
        jti = uuid.uuid4().hex
        expires_at = now + ttl
        payload: dict[str, Any] = {
            "sub": sub,
            "typ": typ,
            "jti": jti,
            "iat": now,
            "exp": expires_at,
            "iss": self.issuer,
            "aud": self.audience,
            **extra,
        }
        return jwt.encode(payload, self._secret, algorithm=_ALGORITHM), jti, expires_at

    def _verified_claims(self, token: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,  # checked in decode() against our clock
                    "verify_iat": False,
                },
            )
            return TokenClaims.model_validate(payload)
        except (jwt.InvalidTokenError, ValidationError) as exc:
            raise InvalidToken() from exc
