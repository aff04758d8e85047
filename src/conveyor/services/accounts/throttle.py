"""The hook through which a door throttles sign-in attempts per account.

The per-IP limit alone lets many addresses guess one account's password together; a
per-account throttle slows that, but must not let the guessers lock the real owner out.
The policy (docs/deploy.md) lives with the rate limiter of the door that serves the
request (`conveyor.api.ratelimit.SigninThrottle`), since only the door knows the client's
address; the door passes it with the credentials (`login(..., throttle=...)`), and checking
them here consults it. Callers that pass none (the CLI) are not throttled.
"""

from __future__ import annotations

from typing import Protocol


class SigninThrottle(Protocol):
    """Per-account sign-in limits for the current request's client."""

    async def check(self, login: str) -> None:
        """Raise RateLimited when attempts for ``login`` from this client must wait."""

    async def failed(self, login: str) -> None:
        """Count a failed attempt against ``login``."""

    async def succeeded(self, login: str) -> None:
        """Remember that this client signed in as ``login``."""


def throttle_key(login: str) -> str:
    """The same key for every spelling of a login (case, surrounding spaces), known or not,
    so a throttled answer says nothing about whether the account exists."""
    return login.strip().lower()
