"""The OpenAPI document says what each operation really answers: the error statuses it can
return, derived from what the route depends on, and who may call it.

Derived, not listed by hand, so a new route is documented by the dependencies it declares:
- a bearer credential (`current_user`, and the dependencies built on it), or a password or
  refresh token in the body: 401;
- a verified or admin caller: 403; a submission or per-IP rate limit: 429;
- a path parameter: 404 (no such thing, or not yours); any input: 422 (and 400 and 413 with
  a body);
- the database (`context`): 503 when it is unreachable; a change, or a thing by id,
  409 (taken, or not in a state that allows it).
A route that documents its own error answers (a reference adapter answering in its
reference's shape) is trusted with them and only gains what it did not name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import BaseRoute

from conveyor.api import deps

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

WHY = {
    400: "The request cannot be handled as sent.",
    401: "No credentials, or they are invalid, expired or revoked.",
    403: "Signed in, but not allowed: the address is unverified, or admins only.",
    404: "No such resource, or it is not yours.",
    409: "The resource is not in a state that allows this.",
    413: "The body is larger than the server accepts.",
    422: "The input is not valid; `details` says where.",
    429: "Too many requests (`rate_limited`): `Retry-After` says when to try again. On a "
    "submit, also `quota_exceeded`: the owner's waiting jobs would pass their queued quota; "
    "nothing was stored (docs/flow-control.md).",
    503: "The database (or another backing service) is unavailable for now.",
}

_CALLER: dict[Callable[..., Any], tuple[int, ...]] = {
    deps.current_user: (401, 403),  # 403: a token that only an unverified user may use
    deps.optional_user: (401, 403),  # a credential that is sent must be valid and enough
    deps.verified_user: (401, 403),
    deps.admin_user: (401, 403),
    deps.submitting_user: (401, 403, 429),
    # refused callers learn it from the intake; it reads the context (503) itself
    deps.submitter: (401, 403, 429, 503),
    deps.context: (503,),
}

_CREDENTIALS = frozenset({"password", "old_password", "refresh_token", "refresh"})
_BODIES = frozenset({"POST", "PUT", "PATCH"})  # the methods whose bodies BodyLimits reads
_CHANGES = _BODIES | {"DELETE"}


def document(schema: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Add each operation's error answers and security to the generated `schema`."""
    schema.setdefault("components", {}).setdefault("schemas", {})
    for route in iter_route_contexts(routes):  # the routes of included routers, as mounted
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = path.get(method.lower())
            if operation is not None:
                _document_operation(operation, route, method)


def _document_operation(operation: dict[str, Any], route: RouteContext, method: str) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    own = type(route.original_route) is not APIRoute  # a route class with its own errors
    for status in sorted(error_statuses(route, method)):
        if own and status == 404:
            continue  # it says itself how it answers a missing thing (400, in its shape)
        responses.setdefault(str(status), _error_response(status))
    for code, answer in responses.items():
        if code[0] in "45" and "content" not in answer and not own:
            answer["content"] = _error_response(int(code))["content"]  # said why, not how
    if deps.optional_user in _direct(route.dependant):
        # Anyone may call it; a credential, when sent, counts (e.g. an admin creating an admin).
        operation["security"] = [*operation.get("security", []), {}]


def error_statuses(route: RouteContext, method: str) -> set[int]:
    """The error statuses `route` can answer to `method`, from what it depends on."""
    statuses: set[int] = set()
    calls = set(_calls(route.dependant))
    for call, answers in _CALLER.items():
        if call in calls:
            statuses.update(answers)
    if any(getattr(c, "__qualname__", "").startswith("limited.") for c in calls):
        statuses.add(429)
    if _body_fields(route) & _CREDENTIALS:
        statuses.add(401)  # a password or refresh token in the body is checked
    flat = _params(route.dependant)
    if flat["path"]:
        statuses.add(404)
    reads_body = route.body_field is not None or method in _BODIES
    if reads_body:
        statuses.update((400, 413, 422))  # unparsable; too large; too deep, or a NUL in it
    if any(flat.values()):
        statuses.add(422)
    if 503 in statuses and (flat["path"] or method in _CHANGES):
        statuses.add(409)
    return statuses


def _body_fields(route: RouteContext) -> set[str]:
    annotation = getattr(getattr(route.body_field, "field_info", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return set(annotation.model_fields)
    return set()


def _error_response(status: int) -> dict[str, Any]:
    return {"description": WHY[status], "content": {"application/json": {"schema": ERROR_REF}}}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _direct(dependant: Dependant) -> set[Callable[..., Any]]:
    return {sub.call for sub in dependant.dependencies if sub.call is not None}


def _params(dependant: Dependant) -> dict[str, bool]:
    """Which kinds of parameter the route or any of its dependencies reads."""
    found = {
        "path": bool(dependant.path_params),
        "other": bool(dependant.query_params or dependant.header_params),
    }
    for sub in dependant.dependencies:
        for kind, present in _params(sub).items():
            found[kind] = found[kind] or present
    return found
