"""HTTP metrics: requests counted and timed by route template."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.metrics import UNMATCHED, observe_request


class HttpMetrics:
    """Counts and times every request by route template (`/api/v1/jobs/{job_id}`), never by
    raw path, which would make one series per id. The router records the matched route in
    the scope it shares with us, so it is read after the response, at no extra cost."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = route_template(scope, root_path)
            observe_request(route, scope["method"], status, time.perf_counter() - started)


def route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template; for a mount (static files), its prefix + /{path};
    UNMATCHED when nothing matched (404s, and bodies refused before routing)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    mounted = str(scope.get("root_path", ""))[len(root_path) :]
    return f"{mounted}/{{path}}" if mounted else UNMATCHED
