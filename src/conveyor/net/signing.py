"""HMAC-SHA256 signatures of outbound bodies: one scheme for the `webhook` job type and the
webhooks sink, so a receiver verifies both the same way.

The signature covers ``f"{t}.".encode() + body`` (``t`` the Unix time of sending, ``body``
the exact bytes sent) and travels as ``t=<t>,v1=<hex>``. Putting the time under the MAC is
what lets a receiver refuse a replayed request: an old ``t`` cannot be swapped for a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_TOLERANCE = 300
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret (256 bits), shown to its owner once."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


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
