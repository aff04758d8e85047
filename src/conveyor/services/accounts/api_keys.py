"""API keys: made, listed and revoked by their owner; the plaintext is shown once."""

from __future__ import annotations

from conveyor.auth.api_keys import generate
from conveyor.domain.accounts import ApiKeyRecord
from conveyor.errors import InvalidInput, NotFound
from conveyor.services.accounts.core import AccountCore
from conveyor.services.accounts.records import User

MAX_API_KEY_NAME_LENGTH = 200


class ApiKeys(AccountCore):
    async def create_api_key(self, user: User, name: str) -> tuple[ApiKeyRecord, str]:
        """A new key and its plaintext, which is shown this once and never stored."""
        label = name.strip()
        if not 1 <= len(label) <= MAX_API_KEY_NAME_LENGTH or not label.isprintable():
            raise InvalidInput(
                f"an API key name is 1 to {MAX_API_KEY_NAME_LENGTH} printable characters",
                field="name",
            )
        new = generate()
        record = await self.store.create_api_key(
            user_id=user.id, name=label, prefix=new.display_prefix, key_hash=new.key_hash
        )
        return record, new.plaintext

    async def list_api_keys(
        self, user: User, *, include_revoked: bool = False
    ) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys(user.id, include_revoked=include_revoked)

    async def revoke_api_key(self, user: User, key_id: str) -> ApiKeyRecord:
        """Revoke one of the user's keys; another user's key is NotFound, like a missing one."""
        record = await self.store.revoke_api_key(user.id, key_id)
        if record is None:
            raise NotFound("no such API key", key_id=key_id)
        return record
