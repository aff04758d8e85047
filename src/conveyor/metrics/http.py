"""HTTP request metrics, labelled by route template so that ids never become series."""

from __future__ import annotations

from conveyor.metrics.families import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

# Anything else a client sends is one "OTHER" series, not one per invented verb.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """`route` is the template (`/api/v1/jobs/{job_id}`), or UNMATCHED when none matched."""
    verb = method if method in _METHODS else "OTHER"
    HTTP_REQUESTS.labels(route, verb, str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(route, verb).observe(seconds)
