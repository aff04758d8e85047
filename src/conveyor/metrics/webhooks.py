"""What the webhooks dispatcher reports: each attempt's outcome."""

from __future__ import annotations

from conveyor.metrics.families import WEBHOOK_ATTEMPTS

OUTCOMES = {"delivered": "delivered", "pending": "retrying", "failed": "failed"}


def count_webhook_attempt(state: str) -> None:
    """One attempt that ended with the delivery in `state` (pending again means a retry)."""
    WEBHOOK_ATTEMPTS.labels(OUTCOMES.get(state, state)).inc()
