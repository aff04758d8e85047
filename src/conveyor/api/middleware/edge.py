"""The one middleware layer every HTTP request passes, outside `body_limits`: its id, its
database deadline, its metrics and log line, its span when tracing, and the nosniff header
on its answer.

They were four ASGI layers, each with its own frame and its own wrapper around `send`;
one layer does the same work once per message (a sixth of a single submit's CPU was
middleware). What each concern does lives in its module; this composes them.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.middleware.db_deadline import request_path
from conveyor.api.middleware.http_metrics import route_template
from conveyor.api.middleware.request_log import log_request, request_id_of
from conveyor.api.middleware.request_span import ended, request_span
from conveyor.api.middleware.security_headers import with_nosniff
from conveyor.logs import request_id as request_id_var
from conveyor.metrics import observe_request


class RequestEdge:
    """Outermost of ours, so every answer gets the headers, refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        id_header = (b"x-request-id", request_id.encode())
        token = request_id_var.set(request_id)
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = with_nosniff([*message.get("headers", []), id_header])
            await send(message)

        try:
            with request_span(scope) as span, request_path(scope):
                try:
                    await self.app(scope, receive, send_with_headers)
                finally:
                    ended(span, scope, root_path, status)
        finally:
            elapsed = time.perf_counter() - started
            observe_request(route_template(scope, root_path), scope["method"], status, elapsed)
            log_request(scope, status, elapsed * 1000, request_id)
            request_id_var.reset(token)
