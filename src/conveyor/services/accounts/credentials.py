"""Who a request speaks for: access tokens and API keys, checked against the store.

A check has two halves. `credential(token)` reads what the token claims without the
database (a JWT's signature and claims; an API key's hash, looked up once per process);
`users_for(credentials, tx)` then checks every claim against the account, its session or
its key, inside a transaction the caller passes, so a job submission checks its caller in
the transaction that inserts its job (services/intake.py): one transaction, and a
session ended or a key revoked before it commits stops the request. Requests that share a
credential share its query.

API keys are 256 random bits stored as their SHA-256 (`conveyor.auth.api_keys`): as cheap
to check as a JWT. A key's hash maps to its id and owner for good (keys never change hands),
so that mapping is remembered per process; whether the key is live is asked every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.auth.api_keys import hash_key, looks_like_api_key
from conveyor.domain.accounts import ApiKeyRecord, UserRecord
from conveyor.errors import ConveyorError, Forbidden, Unauthenticated
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import User, public
from conveyor.services.accounts.registration import REGISTRATION_ROLE, VERIFY_FIRST
from conveyor.store.transaction import Transaction

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)
CANNOT_SIGN_IN = "this account cannot sign in"
SIGNED_OUT = "this session was signed out; sign in again"
INVALID_API_KEY = "invalid API key"
KEY_OWNERS_KEPT = 10_000  # remembered key hashes per process (then forgotten, all at once)


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request's token claims, before the store has confirmed it."""

    user_id: str
    family: str | None = None  # an access token's session (its refresh family)
    issued_at: datetime | None = None  # an access token's `iat`
    registering: bool = False  # a registration token (an account that may not exist)
    key_id: str | None = None  # an API key's id; None for an access token


_Found = tuple[UserRecord | None, bool | ApiKeyRecord | None]


class Credentials(AccountCore):
    async def credential(self, token: str) -> Credential:
        """The claim of an access token (checked signature, type and times) or an API key.

        Raises the token errors of `conveyor.auth` or Unauthenticated; nothing is asked of
        the database except, once per process and key, which key and owner a hash names.
        """
        if looks_like_api_key(token):
            return await self._key_credential(token)
        claims = self.tokens.decode(token, "access")
        return Credential(
            claims.sub, claims.family, claims.iat, registering=claims.role == REGISTRATION_ROLE
        )

    async def users_for(
        self, credentials: Sequence[Credential], tx: Transaction | None = None, *, verified: bool
    ) -> list[User | ConveyorError]:
        """Each credential's account as it is now, or the error its request answers.

        In ``tx`` when given. ``verified``: an unverified account is refused too (Forbidden,
        while e-mail verification is on), as every jobs route refuses it.
        """
        found: dict[Credential, _Found] = {}
        for credential in dict.fromkeys(credentials):
            found[credential] = await self._lookup(credential, tx)
        out: list[User | ConveyorError] = []
        used: dict[Credential, None] = {}  # live keys of active accounts, in order
        for credential in credentials:
            try:
                user = self._verdict(credential, found[credential])
            except (Unauthenticated, Forbidden) as exc:
                out.append(exc)
                continue
            if credential.key_id is not None:
                used[credential] = None
            if verified and self.email_verification and not user.verified:
                out.append(Forbidden(VERIFY_FIRST))
            else:
                out.append(user)
        await self._touch_keys([found[c][1] for c in used], tx)
        return out

    async def user_from_access_token(self, token: str) -> User:
        """The account an access token speaks for, as it is now (role, disabled), while the
        session it was issued for lasts: signed out, its access tokens stop at once."""
        claims = self.tokens.decode(token, "access")
        credential = Credential(
            claims.sub, claims.family, claims.iat, registering=claims.role == REGISTRATION_ROLE
        )
        return await self._user(credential)

    async def user_from_api_key(self, key: str) -> User:
        """The owner of a live API key; records the use at most once a minute."""
        if not looks_like_api_key(key):
            raise Unauthenticated(INVALID_API_KEY)
        return await self._user(await self._key_credential(key))

    async def _user(self, credential: Credential) -> User:
        (verdict,) = await self.users_for([credential], verified=False)
        if isinstance(verdict, ConveyorError):
            raise verdict
        return verdict

    async def _key_credential(self, key: str) -> Credential:
        digest = hash_key(key)
        owners = self._key_owners
        known = owners.get(digest)
        if known is None:
            record = await self.store.find_api_key(digest)
            if record is None:
                raise Unauthenticated(INVALID_API_KEY)
            if len(owners) >= KEY_OWNERS_KEPT:
                owners.clear()
            known = owners[digest] = (record.id, record.user_id)
        key_id, user_id = known
        return Credential(user_id, key_id=key_id)

    async def _lookup(self, credential: Credential, tx: Transaction | None) -> _Found:
        if credential.key_id is not None:
            return await self.store.api_key_owner(credential.key_id, tx)
        assert credential.issued_at is not None
        return await self.store.get_user_in_session(
            credential.user_id, credential.family, credential.issued_at, tx
        )

    def _verdict(self, credential: Credential, found: _Found) -> User:
        """The rules, the same for one request or many (raises what the request answers)."""
        record, state = found
        live_key = isinstance(state, ApiKeyRecord) and state.revoked_at is None
        if credential.key_id is not None and not live_key:
            raise Unauthenticated(INVALID_API_KEY)
        # A registration token answers like an unverified account whether or not the
        # address was new: telling them apart would reveal who is registered.
        unverified = record is None or not record.verified
        if credential.registering and self.email_verification and unverified:
            raise Forbidden(VERIFY_FIRST)
        if record is None or record.disabled:
            raise Unauthenticated(CANNOT_SIGN_IN)
        if state is True:  # an access token whose session has ended
            raise Unauthenticated(SIGNED_OUT)
        return public(record)

    async def _touch_keys(self, keys: Sequence[object], tx: Transaction | None) -> None:
        """Record the keys' use, each at most once a minute (in ``tx`` when given)."""
        now = self._clock()
        since = now - API_KEY_TOUCH_INTERVAL
        for key in keys:
            assert isinstance(key, ApiKeyRecord)
            if key.last_used_at is None or key.last_used_at < since:
                await self.store.touch_api_key(key.id, now, unless_since=since, tx=tx)
