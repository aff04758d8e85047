"""What flow control reports, by limit name: admissions refused, drift the reconcile fixed."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.metrics.families import LIMIT_DRIFT_CORRECTED, LIMIT_REFUSED


def count_refused(refused: Mapping[str, int]) -> None:
    """Limited jobs a claim picked and left queued, by the limit that held each back."""
    for name, count in refused.items():
        LIMIT_REFUSED.labels(name).inc(count)


def count_drift(name: str) -> None:
    """One slot the reconcile freed: it was held by no running job."""
    LIMIT_DRIFT_CORRECTED.labels(name).inc()
