"""Administration: direct account creation, roles, disabling, and the first admin.

Callers check `require_admin` first; these operations assume an admin asked.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TypedDict, Unpack

from conveyor.auth.errors import PasswordPolicyError
from conveyor.auth.passwords import hash_password
from conveyor.domain.accounts import UserChanges
from conveyor.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import User, public
from conveyor.services.accounts.rules import check_role, normalize_email, normalize_username

log = logging.getLogger("conveyor.accounts")

MAX_PAGE = 1000
MAX_FAIR_WEIGHT = 1000.0
DEFAULT_FAIR_WEIGHT = 1.0
MAX_QUOTA = 1_000_000_000  # a cap beyond an INTEGER column is a mistake, not a wish


class FlowChanges(TypedDict, total=False):
    """A user's flow settings an admin changes (docs/flow-control.md); a key left out is kept.

    fair_weight: the user's share under fair dispatch, > 0 and ≤ 1000 (None: back to 1).
    max_queued, max_running: the user's own quotas (None: the settings' default; 0: no cap).
    """

    fair_weight: float | None
    max_queued: int | None
    max_running: int | None


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

    async def set_flow(self, user_id: str, **changes: Unpack[FlowChanges]) -> User:
        """An admin's change of a user's fair-dispatch weight and quotas; InvalidInput for a
        value out of range, nothing changed then."""
        values: UserChanges = {}
        if "fair_weight" in changes:
            values["fair_weight"] = _fair_weight(changes["fair_weight"])
        for name in ("max_queued", "max_running"):
            if name in changes:
                values[name] = _quota(name, changes[name])
        if not values:
            return await self.get_user(user_id)
        return await self._update(user_id, **values)

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


def _fair_weight(weight: float | None) -> float:
    if weight is None:
        return DEFAULT_FAIR_WEIGHT
    if isinstance(weight, bool) or not 0 < weight <= MAX_FAIR_WEIGHT:
        raise InvalidInput(
            f"fair_weight must be above 0 and at most {MAX_FAIR_WEIGHT:g}", field="fair_weight"
        )
    return float(weight)


def _quota(name: str, cap: int | None) -> int | None:
    if cap is not None and (isinstance(cap, bool) or not 0 <= cap <= MAX_QUOTA):
        raise InvalidInput(f"{name} must be between 0 (no cap) and {MAX_QUOTA}", field=name)
    return cap
