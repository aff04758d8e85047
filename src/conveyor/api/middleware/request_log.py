"""Request ids and one log line per request (both done by `edge.RequestEdge`)."""

from __future__ import annotations

import logging
import uuid

from starlette.types import Scope

log = logging.getLogger("conveyor.http")


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when it is printable (at most 64 characters of it), else a
    new one; echoed as X-Request-ID and set in `conveyor.logs.request_id` for every log
    line the request causes."""
    incoming = ""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
    return incoming[:64] if incoming.isprintable() and incoming else uuid.uuid4().hex


def log_request(scope: Scope, status: int, elapsed_ms: float, request_id: str) -> None:
    log.info(
        "%s %s %d %.1fms",
        scope["method"],
        scope["path"],
        status,
        elapsed_ms,
        extra={"request_id": request_id},
    )
