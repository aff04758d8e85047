"""Every HTTP request's database work is bounded (`db_request_timeout`): answered in time."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class DatabaseDeadline:
    """Run each HTTP request in the engine's request path: a database that does not answer
    (a partition, a locked SQLite file) costs the request a 503 with Retry-After after the
    timeout, never a hang. Before the app is wired (no engine yet) requests pass as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = getattr(scope["app"].state, "conveyor", None) if "app" in scope else None
        if scope["type"] != "http" or context is None:
            await self.app(scope, receive, send)
            return
        with context.engine.health.request_path():
            await self.app(scope, receive, send)
