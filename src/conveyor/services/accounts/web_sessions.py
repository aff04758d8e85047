"""Browser sessions for the dashboard, kept as refresh-token families, with CSRF tokens.

A signed-in browser holds one cookie: a signed, expiring JWT naming a refresh-token *family*
recorded in the same table as the API's (`conveyor.auth.refresh`). Reusing that machinery
means every way of ending API sessions ends dashboard sessions too: signing out revokes the
family, and disabling an account or changing its password revokes all of the user's
families. The cookie is signed for its own audience, so it is never accepted by the API as a
refresh or access token (and an API token is never accepted as a cookie); it is never
rotated, so concurrent page loads cannot race each other, and it is checked against the
stored family and account on every request.

CSRF tokens are synchronizer tokens bound to the session without server-side storage: an
HMAC of the family id under a key derived from the secret. Before sign-in, the form carries
an HMAC of a random nonce kept in a short-lived cookie (the login form is protected too).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.auth.errors import InvalidToken
from conveyor.auth.refresh import issue_session
from conveyor.auth.tokens import Clock, TokenService
from conveyor.errors import NotFound, Unauthenticated
from conveyor.services.accounts import AccountService, User
from conveyor.services.accounts.throttle import SigninThrottle

AUDIENCE = "conveyor-dashboard"
SIGNED_OUT = "your dashboard session has ended; sign in again"


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: who, which family (the session id), its CSRF token, its end."""

    user: User
    family: str
    csrf: str
    expires_at: datetime


class WebSessions:
    """Starts, resumes and ends dashboard sessions; issues and checks CSRF tokens."""

    def __init__(
        self, accounts: AccountService, secret: str, ttl: timedelta, clock: Clock | None = None
    ) -> None:
        self.accounts = accounts
        self.ttl = ttl
        self.tokens = TokenService(secret, audience=AUDIENCE, refresh_ttl=ttl, clock=clock)
        self._csrf_key = hmac.new(secret.encode(), b"conveyor dashboard csrf", "sha256").digest()

    async def sign_in(
        self, login: str, password: str, *, throttle: SigninThrottle | None = None
    ) -> tuple[str, WebSession]:
        """The cookie value and the session for a login and password (Unauthenticated else),
        under the door's per-account sign-in throttle, if any."""
        user = await self.accounts.authenticate(login, password, throttle=throttle)
        store = self.accounts.store
        _, issued = await issue_session(user.id, user.role, store, tokens=self.tokens)
        return issued.token, self._session(user, issued.family_id, issued.expires_at)

    async def resume(self, cookie: str) -> WebSession:
        """The live session a cookie names, or Unauthenticated (expired, forged, signed out,
        account disabled or gone)."""
        try:
            claims = self.tokens.decode(cookie, "refresh")
        except InvalidToken as exc:
            raise Unauthenticated(SIGNED_OUT) from exc
        family = claims.family
        if family is None or await self.accounts.store.is_revoked(family):
            raise Unauthenticated(SIGNED_OUT)
        try:
            user = await self.accounts.get_user(claims.sub)
        except NotFound as exc:
            raise Unauthenticated(SIGNED_OUT) from exc
        if user.disabled:
            raise Unauthenticated(SIGNED_OUT)
        return self._session(user, family, claims.exp)

    async def sign_out(self, session: WebSession) -> None:
        await self.accounts.store.revoke_family(session.family)

    async def sign_out_everywhere(self, session: WebSession) -> None:
        """Ends every dashboard and API session of the user (refresh tokens included)."""
        await self.accounts.store.revoke_all_for_user(session.user.id)

    # ---- CSRF --------------------------------------------------------------------------------
    def csrf_for(self, family: str) -> str:
        return self._mac(f"session:{family}")

    def check_csrf(self, session: WebSession, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, session.csrf)

    @staticmethod
    def new_nonce() -> str:
        """The pre-session cookie value for a sign-in form."""
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        return self._mac(f"login:{nonce}")

    def check_login_csrf(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.login_csrf(nonce))

    def _mac(self, text: str) -> str:
        return hmac.new(self._csrf_key, text.encode(), hashlib.sha256).hexdigest()

    def _session(self, user: User, family: str, expires_at: datetime) -> WebSession:
        return WebSession(user, family, self.csrf_for(family), expires_at)
