"""How the relay paces itself; `setup.relay_config` fills it from the settings."""

from __future__ import annotations

from dataclasses import dataclass

WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class RelayConfig:
    poll_interval: float = 1.0  # an idle sink looks this often even without a wake-up
    batch: int = 500  # events read and delivered at once
    backoff_initial: float = 0.5  # first wait after a failed delivery, doubled each time
    backoff_max: float = 30.0
    retention: float = WEEK  # delivered events older than this are deleted
    prune_every: float = 300.0
    prune_batch: int = 1000  # events per pruning slice (one short transaction each)
    # How long a sink's lease outlives a relay that stopped renewing it (SQLite's leader
    # lease; PostgreSQL's advisory lock ends with its session). Renewed every third of it.
    lease_ttl: float = 10.0
    deliver_timeout: float = 120.0  # a sink that hangs fails the batch, and is retried
    grace: float = 5.0  # on stop, a delivery under way may finish within this
