"""Flow control as it stands now, as the store reads it for the doors: limit definitions,
jobs per limit and key, rate buckets (docs/flow-control.md, "Seeing limits")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class LimitDefinition:
    """A limit as flow_limits holds it (synced from the job types)."""

    name: str
    kind: str  # "concurrency" | "rate"
    max_running: int | None
    rate_limit: int | None
    per_s: float | None
    burst: int | None


@dataclass(frozen=True, slots=True)
class KeyCount:
    """One limit's key: its jobs running and ready (queued) now."""

    name: str
    key: str
    running: int
    ready: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """A rate limit's bucket as stored: `tokens` at `refreshed_at`."""

    name: str
    key: str
    tokens: float
    refreshed_at: datetime
