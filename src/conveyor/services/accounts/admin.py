"""Administration: direct account creation, roles, disabling, and the first admin.

Callers check `require_admin` first; these operations assume an admin asked.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Unpack

from conveyor.auth.errors import PasswordPolicyError
from conveyor.auth.passwords import hash_password
from conveyor.domain.accounts import UserChanges
from conveyor.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import User, public
from conveyor.services.accounts.rules import check_role, normalize_email, normalize_username

log = logging.getLogger("conveyor.accounts")

MAX_PAGE = 1000


class Administration(AccountCore):
    async def get_user(self, user_id: str) -> User:
        return public(await self._record(user_id))

    async def find_user(self, email: str) -> User | None:
        """The account with this e-mail (trimmed, any case), or None: for the admin CLI."""
        record = await self.store.find_by_email(email.strip().lower())
        return None if record is None else public(record)

    async def list_users(self, *, after_id: str | None = None, limit: int = 50) -> list[User]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        records = await self.store.list_users(after_id=after_id, limit=limit)
        return [public(record) for record in records]

    async def create_user(
        self,
        email: str,
        password: str,
        role: str = "user",
        *,
        verified: bool = True,
        username: str | None = None,
    ) -> User:
        """An admin's direct creation: no mail, and a taken e-mail is a plain Conflict."""
        address = normalize_email(email)
        wanted = check_role(role)
        name = None if username is None else normalize_username(username)
        password_hash = await asyncio.to_thread(hash_password, password)
        record = await self.store.create_user(
            email=address,
            password_hash=password_hash,
            role=wanted,
            verified=verified,
            username=name,
        )
        if record is None:
            raise Conflict("the e-mail or username is taken")
        return public(record)

    async def set_role(self, user_id: str, role: str) -> User:
        wanted = check_role(role)
        if wanted != "admin":
            await self._keep_an_admin(user_id)
        return await self._update(user_id, role=wanted)

    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        """Disable (and sign out everywhere) or re-enable an account."""
        if disabled:
            await self._keep_an_admin(user_id)
        user = await self._update(user_id, disabled=disabled)
        if disabled:
            await self.store.revoke_all_for_user(user_id)
        return user

    async def set_verified(self, user_id: str, verified: bool) -> User:
        return await self._update(user_id, verified=verified)

    async def ensure_admin(
        self, email: str, password: str | None, *, username: str | None = "admin"
    ) -> str | None:
        """Create the first admin when there is none; the generated password, if any.

        With ``password`` None a random one is made and returned, for the caller to print
        once; otherwise, and whenever an admin already exists, the result is None. Two
        processes starting together create one admin: the insert is conditional and the
        e-mail unique. The username lets the JobScope door's ``{"username": "admin"}`` work.
        """
        if await self.store.has_admin():
            return None
        try:
            address = normalize_email(email)
            name = None if username is None else normalize_username(username)
        except InvalidInput as exc:
            raise ConfigurationError(f"the admin account is not acceptable: {exc}") from exc
        secret = password if password is not None else secrets.token_urlsafe(18)
        try:
            password_hash = await asyncio.to_thread(hash_password, secret)
        except PasswordPolicyError as exc:
            raise ConfigurationError(f"the admin password is not acceptable: {exc}") from exc
        record = await self.store.create_user(
            email=address,
            password_hash=password_hash,
            role="admin",
            verified=True,
            username=name,
            only_if_no_admin=True,
        )
        if record is None:
            await self._admin_race_lost(address)
            return None
        log.info("created the first admin account %s", address)
        return secret if password is None else None

    async def _update(self, user_id: str, **changes: Unpack[UserChanges]) -> User:
        record = await self.store.update_user(user_id, **changes)
        if record is None:
            raise NotFound("no such user", user_id=user_id)
        return public(record)

    async def _keep_an_admin(self, user_id: str) -> None:
        """Refuse to demote or disable the last admin who can sign in: nobody could undo it."""
        record = await self._record(user_id)
        if record.role != "admin" or record.disabled:
            return
        if await self.store.count_active_admins() <= 1:
            raise Conflict("the last admin cannot be demoted or disabled")

    async def _admin_race_lost(self, address: str) -> None:
        """After a refused insert: another process made the admin, or the e-mail is taken."""
        if await self.store.has_admin():
            return
        raise ConfigurationError(
            f"cannot create the first admin: {address} or its username belongs to an account "
            "that is not an admin; set another admin e-mail or promote that account"
        )
