"""A span per HTTP request when tracing is on (docs/tracing.md), by `edge.RequestEdge`.

Its parent is the caller's W3C `traceparent` (and `tracestate`) when the request has one,
so a client that traces sees its submit, and the job's wait and run, in its own trace; a
job submitted in the request stores this span's context (domain/jobs.py NewJob). Named by
method and route template once the router has matched (never the raw path: one name per
id would make every request its own kind).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from starlette.types import Scope

from conveyor import tracing
from conveyor.api.middleware.http_metrics import route_template
from conveyor.tracing import Span

_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


def request_span(scope: Scope) -> AbstractContextManager[Span]:
    """Around the request; the shared do-nothing span when not tracing (no header read)."""
    if not tracing.enabled():
        return tracing.NO_SPAN
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in _CONTEXT_HEADERS
    }
    method = scope["method"]
    return tracing.span(
        method,
        kind="server",
        headers=headers,
        attributes={
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
        },
    )


def ended(span: Span, scope: Scope, root_path: str, status: int) -> None:
    """The answer's status and the matched route; a server error marks the span failed."""
    if span is tracing.NO_SPAN:
        return
    route = route_template(scope, root_path)
    span.set("http.route", route)
    span.set("http.response.status_code", status)
    span.rename(f"{scope['method']} {route}")
    if status >= 500:
        span.fail(f"HTTP {status}")
