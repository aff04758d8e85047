"""What the `conveyor` command needs from the engine that no service offers yet.

The CLI is a door: it must reach the engine through services, never the store. These four
calls are the ones it made to the store directly; each is written as the service method it
should become (named in its docstring), to be folded into that service.
"""

from __future__ import annotations

from conveyor.services.accounts import AccountService, User, _public


async def find_user(accounts: AccountService, email: str) -> User | None:
    """The account with this e-mail, compared trimmed and lower-cased; None when there is
    none (`AccountService.find_user`, for admins)."""
    record = await accounts.store.find_by_email(email.strip().lower())
    return None if record is None else _public(record)
