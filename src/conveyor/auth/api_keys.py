"""API keys for programs: ``cvk_`` followed by 256 random bits, stored only as a SHA-256 hash.

A plain (unsalted, fast) SHA-256 is enough here, unlike for passwords: the key is random
with 256 bits of entropy, so nothing is gained by slowing down guesses, and a deterministic
hash lets the store find a key by an indexed lookup of its hash. The plaintext is shown to
its owner once; afterwards only the short display prefix identifies it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

KEY_PREFIX = "cvk_"
_RANDOM_BYTES = 32
_DISPLAY_CHARS = 8
# token_urlsafe(32) yields 43 characters from the URL-safe base64 alphabet.
_KEY_PATTERN = re.compile(r"cvk_[A-Za-z0-9_-]{43}")


class NewApiKey(NamedTuple):
    """A freshly generated key: give ``plaintext`` to its owner, store the other two."""

    plaintext: str
    display_prefix: str
    key_hash: str


def generate() -> NewApiKey:
    """Make a new random key with its display prefix (e.g. ``cvk_AbCd1234``) and hash."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
    display_prefix = plaintext[: len(KEY_PREFIX) + _DISPLAY_CHARS]
    return NewApiKey(plaintext, display_prefix, hash_key(plaintext))


def hash_key(plaintext: str) -> str:
    """The hex SHA-256 of a key, the only form the store keeps."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def verify_key(plaintext: str, key_hash: str) -> bool:
    """True when ``plaintext`` hashes to ``key_hash`` (compared in constant time)."""
    return hmac.compare_digest(hash_key(plaintext), key_hash)


def looks_like_api_key(value: str) -> bool:
    """True for strings shaped like our keys, so a door can tell them from JWTs cheaply."""
    return _KEY_PATTERN.fullmatch(value) is not None
