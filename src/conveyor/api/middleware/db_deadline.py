"""Every HTTP request's database work is bounded (`db_request_timeout`): answered in time."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from starlette.types import Scope


def request_path(scope: Scope) -> AbstractContextManager[None]:
    """Each HTTP request runs in the engine's request path (`edge.RequestEdge`): a database
    that does not answer (a partition, a locked SQLite file) costs the request a 503 with
    Retry-After after the timeout, never a hang. Before the app is wired (no engine yet)
    requests pass as they are."""
    context = getattr(scope["app"].state, "conveyor", None) if "app" in scope else None
    if context is None:
        return nullcontext()
    path: AbstractContextManager[None] = context.engine.health.request_path()
    return path
