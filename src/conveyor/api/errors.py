"""Typed errors become one JSON shape, mapped once here: {"error": {code, message, details?}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.api.schemas import body_path
from conveyor.auth.errors import InvalidToken, OtpCooldown
from conveyor.errors import (
    Conflict,
    ConveyorError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("conveyor.api")

STATUS: list[tuple[type[ConveyorError], int]] = [
    (InvalidToken, 401),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (RateLimited, 429),
    (OtpCooldown, 429),
    (Unavailable, 503),
]


def status_of(exc: ConveyorError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = jsonable_encoder(details)
    return {"error": error}


def _headers(exc: ConveyorError, status: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = exc.details.get("retry_after")
    if retry_after is None and status == 503:
        retry_after = 1  # every 503 says when to come back (a client's backoff reads it)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(float(retry_after) + 0.999)))
    return headers


async def _conveyor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    status = status_of(exc)
    if status == 503:
        log.warning("503 on %s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details),
        status_code=status,
        headers=_headers(exc, status),
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": body_path(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(
        error_body("validation_error", "the request is not valid", details), status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}.get(
        exc.status_code, "http_error"
    )
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method of every route at the request's path. Starlette's 405 names only those of
    the first route it matched, while one path often has a route per method."""
    path = request.scope.get("route_path") or request.url.path
    by_params: dict[int, set[str]] = {}
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            params = str(getattr(route, "path_format", "")).count("{")
            by_params.setdefault(params, set()).update(getattr(route, "methods", None) or ())
    # `/jobs/batch` is also `/jobs/{job_id}`: the path written out wins, as it is documented.
    return sorted(by_params[min(by_params)]) if by_params else []


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
