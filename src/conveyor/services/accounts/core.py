"""What every part of the account service shares: its stores, keys, clock and settings."""

from __future__ import annotations

from datetime import timedelta

from conveyor.auth.otp import OtpCodes
from conveyor.auth.tokens import Clock, TokenService, utc_now
from conveyor.domain.accounts import UserRecord
from conveyor.errors import NotFound
from conveyor.handlers.account_mail import AccountLetters
from conveyor.services.jobs import JobService
from conveyor.store.users import UserStore


class AccountCore:
    """The state the registration, sign-in, API key and admin parts all use.

    Mail goes out as durable `account_mail` jobs submitted through ``jobs`` in the same
    transaction as the change that causes it; ``letters`` writes (and seals) their payloads.
    """

    def __init__(
        self,
        store: UserStore,
        tokens: TokenService,
        otp: OtpCodes,
        jobs: JobService,
        letters: AccountLetters,
        *,
        email_verification: bool,
        password_change_revokes_api_keys: bool = False,
        register_notice_cooldown: timedelta = timedelta(seconds=60),
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.otp = otp
        self.jobs = jobs
        self.letters = letters
        self.email_verification = email_verification
        self.password_change_revokes_api_keys = password_change_revokes_api_keys
        self.register_notice_cooldown = register_notice_cooldown
        self._clock = clock or utc_now
        # An API key's hash -> (key id, owner id): fixed for the key's life (credentials.py)
        self._key_owners: dict[str, tuple[str, str]] = {}

    async def _record(self, user_id: str) -> UserRecord:
        record = await self.store.get_user(user_id)
        if record is None:
            raise NotFound("no such user", user_id=user_id)
        return record
