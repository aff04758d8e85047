"""HMAC-SHA256 signatures of outbound bodies: one scheme for the `webhook` job type and the
webhooks sink, so a receiver verifies both the same way.

The signature covers ``f"{t}.".encode() + body`` (``t`` the Unix time of sending, ``body``
the exact bytes sent) and travels as ``t=<t>,v1=<hex>``. Putting the time under the MAC is
what lets a receiver refuse a replayed request: an old ``t`` cannot be swapped for a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

SIGNATURE_TOLERANCE = 300
SECRET_PREFIX = "whsec_"


class SecretKeys:
    """Signing secrets derived from the server key, so the database never holds one.

    A secret is HMAC-SHA256(key, purpose, row id, nonce), `key` itself an HMAC of the
    SECRET_KEY under a label of its own (the same key never signs tokens and secrets). The row
    keeps only the random nonce: a leaked database or backup cannot forge a signature without
    the SECRET_KEY, rotation is a new nonce, and changing the SECRET_KEY changes every secret.
    The purpose and row id under the MAC mean a nonce copied to another row derives nothing
    that row's receiver accepts. The webhook stores are given one as their `SecretDeriver`;
    they choose the purposes and keep the nonces (store/webhooks.py).
    """

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), b"conveyor.signing-secrets", hashlib.sha256)

    def derive(self, purpose: str, row_id: str, nonce: str) -> str:
        mac = self._key.copy()
        mac.update(json.dumps([purpose, row_id, nonce]).encode())  # unambiguous framing
        return SECRET_PREFIX + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Conveyor-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """A receiver's check: the signature matches and is at most ``tolerance`` seconds old."""
    fields = dict(part.strip().partition("=")[::2] for part in header.split(","))
    timestamp = fields.get("t", "")
    if not timestamp.isdigit():
        return False
    age = (time.time() if now is None else now) - int(timestamp)
    expected = sign(secret, body, int(timestamp)).rpartition("v1=")[2]
    return abs(age) <= tolerance and hmac.compare_digest(expected, fields.get("v1", ""))
