"""Password hashing with argon2id (through pwdlib) and the password policy: a length, and
none of the 10,000 most common passwords (common_passwords.txt, which names its source;
common_passwords_build.py writes it).

Hashing is deliberately slow (tens of milliseconds of CPU): callers on an event loop should
run these functions in a thread (``asyncio.to_thread``) rather than block the loop.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from secrets import token_urlsafe

import argon2
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from conveyor.auth.errors import PasswordPolicyError

MIN_LENGTH = 8
MAX_LENGTH = 1024

_ARGON2 = Argon2Hasher()
_HASHER = PasswordHash((_ARGON2,))


def configure_argon2(time_cost: int | None = None, memory_kib: int | None = None) -> None:
    """Choose argon2's cost (CONVEYOR_ARGON2_TIME_COST / _MEMORY_KIB); None keeps the
    library's recommended value. Existing hashes stay valid and are upgraded on login."""
    global _ARGON2, _HASHER
    _ARGON2 = Argon2Hasher(
        time_cost=time_cost or argon2.DEFAULT_TIME_COST,
        memory_cost=memory_kib or argon2.DEFAULT_MEMORY_COST,
    )
    _HASHER = PasswordHash((_ARGON2,))
    _dummy_hash.cache_clear()  # it must cost what a real check costs


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short to resist guessing, long enough to cost us CPU, or
    among the common ones every guessing list tries first (compared in lower case)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordPolicyError(
            f"The password must be between {MIN_LENGTH} and {MAX_LENGTH} characters long.",
            min_length=MIN_LENGTH,
            max_length=MAX_LENGTH,
        )
    if password.lower() in common_passwords():
        raise PasswordPolicyError(
            "This password is one of the most common ones, which are guessed first; choose another."
        )


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list, read once."""
    return frozenset(ranked_common_passwords())


def ranked_common_passwords() -> list[str]:
    """The shipped list in its order, most common first."""
    text = files("conveyor.auth").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return entries_of(text)


def entries_of(text: str) -> list[str]:
    """The entries of a list file: what follows its header, which ends at the first empty
    line (an entry may itself start with "#", so "#" cannot mark comments)."""
    _header, _, body = text.partition("\n\n")
    return body.splitlines()


def hash_password(password: str) -> str:
    """Check the policy, then return an encoded ``$argon2id$...`` hash to store."""
    check_password_policy(password)
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash``.

    The policy is not applied here (a stored password may predate it), except that an
    over-long input is refused before hashing so a login call cannot be used to burn CPU.
    A hash this module cannot read counts as a mismatch rather than a crash at login.
    """
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(password, password_hash)
    except UnknownHashError:
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters; rehash it after a good login."""
    if not _ARGON2.identify(password_hash):
        return True
    return _ARGON2.check_needs_rehash(password_hash)


def verify_dummy(password: str) -> bool:
    """Spend the time of one real verification and return False.

    A login for an unknown e-mail calls this so that it costs as long as a login with a
    wrong password, and response time does not reveal which accounts exist.
    """
    verify_password(password, _dummy_hash())
    return False


@cache
def _dummy_hash() -> str:
    # Made with the current parameters (not a literal) so its cost always matches real hashes.
    return _HASHER.hash(token_urlsafe(16))
