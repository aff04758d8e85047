"""Signing in and out: passwords, access and refresh tokens, API keys as credentials.

Argon2 runs in threads (`asyncio.to_thread`): it takes tens of milliseconds of CPU, which
would otherwise stall every request on the event loop. Sessions are short access tokens
plus rotating refresh tokens (`conveyor.auth.refresh`); signing out, changing the password,
reusing a refresh token and disabling the account revoke refresh-token families, and an
access token (which names its family) is checked against the stored account and its family
on every use, in one indexed query (`credentials.py`): a disabled account or an ended session
stops at once and a role change applies at once.
"""

from __future__ import annotations

import asyncio

from conveyor.auth.errors import InvalidToken, PasswordPolicyError
from conveyor.auth.passwords import (
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from conveyor.auth.refresh import issue_session, rotate
from conveyor.auth.tokens import IssuedToken
from conveyor.domain.accounts import UserRecord
from conveyor.errors import InvalidInput, Unauthenticated
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import TokenPair, User, public
from conveyor.services.accounts.throttle import SigninThrottle, throttle_key

INVALID_CREDENTIALS = "invalid credentials"


class SignIn(AccountCore):
    async def login(
        self, login: str, password: str, *, throttle: SigninThrottle | None = None
    ) -> TokenPair:
        """Sign in with an e-mail or username; every failure is the same Unauthenticated.

        An unknown login spends the time of a real password check, and a disabled account
        is refused only after its password was checked, so timing tells nothing either.
        ``throttle`` is the door's per-account throttle for the request's client, if any.
        """
        user = await self._check_credentials(login, password, throttle)
        access, refresh = await issue_session(user.id, user.role, self.store, tokens=self.tokens)
        return self._pair(access, refresh, user)

    async def authenticate(
        self, login: str, password: str, *, throttle: SigninThrottle | None = None
    ) -> User:
        """The account a login and password belong to, without starting an API session (the
        dashboard keeps its own, `conveyor.services.accounts.web_sessions`). Fails like `login`."""
        return public(await self._check_credentials(login, password, throttle))

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

    async def change_password(self, user: User, old: str, new: str) -> None:
        """Set a new password after checking the old one, and sign out every session.

        Every session's access and refresh tokens stop at once. API keys are kept, as
        GitHub keeps personal access tokens: they are separate credentials for machines,
        each revocable on its own, and a routine password change should not break every
        deployment. ``password_change_revokes_api_keys`` revokes them too.
        """
        check_password_policy(new)
        record = await self._record(user.id)
        if not await asyncio.to_thread(verify_password, old, record.password_hash):
            raise InvalidInput("the current password is not correct", field="old_password")
        password_hash = await asyncio.to_thread(hash_password, new)
        await self.store.update_user(user.id, password_hash=password_hash)
        await self.store.revoke_all_for_user(user.id)
        if self.password_change_revokes_api_keys:
            await self.store.revoke_all_api_keys(user.id)

    async def _check_credentials(
        self, login: str, password: str, throttle: SigninThrottle | None
    ) -> UserRecord:
        """The account, or Unauthenticated; under the door's per-account throttle, if any
        (`conveyor.services.accounts.throttle`), which counts failures and known clients."""
        if throttle is None:
            return await self._verify_credentials(login, password)
        key = throttle_key(login)
        await throttle.check(key)
        try:
            user = await self._verify_credentials(login, password)
        except Unauthenticated:
            await throttle.failed(key)
            raise
        await throttle.succeeded(key)
        return user

    async def _verify_credentials(self, login: str, password: str) -> UserRecord:
        user = await self.store.find_by_login(login.strip())
        if user is None:
            await asyncio.to_thread(verify_dummy, password)
            raise Unauthenticated(INVALID_CREDENTIALS)
        matches = await asyncio.to_thread(verify_password, password, user.password_hash)
        if not matches or user.disabled:
            raise Unauthenticated(INVALID_CREDENTIALS)
        await self._rehash_if_needed(user, password)
        return user

    async def _rehash_if_needed(self, user: UserRecord, password: str) -> None:
        """Upgrade a hash made with old parameters while the password is at hand."""
        if not needs_rehash(user.password_hash):
            return
        try:
            password_hash = await asyncio.to_thread(hash_password, password)
        except PasswordPolicyError:
            return  # a password from before the policy: keep it until the user changes it
        await self.store.update_user(user.id, password_hash=password_hash)

    def _pair(self, access: str, refresh: IssuedToken, user: UserRecord) -> TokenPair:
        expires_in = int(self.tokens.access_ttl.total_seconds())
        return TokenPair(access, refresh.token, expires_in, public(user))
