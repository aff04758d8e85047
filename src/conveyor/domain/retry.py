"""Retry policy: exponential backoff with jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before attempt n+1 is ``base * factor**(n-1)``, capped, then jittered.

    Jitter spreads retries of jobs that failed together (a dependency outage) so they do not
    come back as one thundering herd.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.25  # +/- this fraction of the delay

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        raw = min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        spread = raw * self.jitter
        pick = (rng or random).uniform(-spread, spread)
        return max(0.0, raw + pick)


DEFAULT_RETRY = RetryPolicy()
