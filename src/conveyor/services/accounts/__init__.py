"""Accounts: registration with e-mail verification, sign-in, sessions, API keys and admin.

The rules live here and the SQL in `conveyor.store.users`. One `AccountService` serves every
door; its parts are the modules of this package: `registration` (and the account mail it
queues), `signin`, `api_keys`, `admin`, with `rules` (what an e-mail, username or role may
be) and `records` (what the doors get back).

- **No user enumeration.** Registering a taken e-mail, signing in to an unknown account and
  asking for a code for an unknown e-mail answer exactly like their ordinary counterparts
  and cost about the same time: a password is hashed (or a dummy verified) either way, and
  the mail is a queued job either way, so whether a message was sent cannot be timed.
- **Mail is durable.** Verification codes and notices are `account_mail` jobs written in
  the transaction of the change that causes them (`conveyor.handlers.account_mail`).
"""

from __future__ import annotations

from conveyor.services.accounts.credentials import Credential
from conveyor.services.accounts.records import RegisterResult, TokenPair, User
from conveyor.services.accounts.registration import INVALID_CODE
from conveyor.services.accounts.rules import normalize_email, normalize_username, require_admin
from conveyor.services.accounts.service import AccountService

__all__ = [
    "INVALID_CODE",
    "AccountService",
    "Credential",
    "RegisterResult",
    "TokenPair",
    "User",
    "normalize_email",
    "normalize_username",
    "require_admin",
]
