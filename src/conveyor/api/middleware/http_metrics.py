"""HTTP metrics: requests counted and timed by route template (by `edge.RequestEdge`)."""

from __future__ import annotations

from starlette.types import Scope

from conveyor.metrics import UNMATCHED


def route_template(scope: Scope, root_path: str) -> str:
    """The matched route's path template (`/api/v1/jobs/{job_id}`), never the raw path,
    which would make one series per id. The router records the matched route in the scope
    it shares with the middleware, so it is read after the response, at no extra cost. For
    a mount (static files), its prefix + /{path}; UNMATCHED when nothing matched (404s,
    and bodies refused before routing)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    mounted = str(scope.get("root_path", ""))[len(root_path) :]
    return f"{mounted}/{{path}}" if mounted else UNMATCHED
