"""Error answers become typed exceptions: the class by status, the server's code and words."""

from __future__ import annotations

import httpx
import pytest

from conveyor.client import (
    BadRequest,
    ConveyorAPIError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    ValidationFailed,
)
from conveyor.client.errors import error_from


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://x/api/v1/jobs")
    if body is None:
        return httpx.Response(status, text="<html>proxy error</html>", request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def error(code: str, message: str, details: object = None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "details": details}}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (404, NotFound), (418, BadRequest), (500, ServerError), (502, ServerError)],
)
def test_the_class_follows_the_status(status: int, kind: type[ConveyorAPIError]) -> None:
    exc = error_from(answer(status, error("some_code", "it went wrong")))
    assert type(exc) is kind and exc.code == "some_code" and exc.status == status


def test_field_errors_in_both_shapes_the_server_uses() -> None:
    request_shape = error_from(
        answer(422, error("validation_error", "the request is not valid", [
            {"loc": ["body", "priority"], "msg": "too big", "type": "less_than_equal"}
        ]))
    )  # fmt: skip
    assert isinstance(request_shape, ValidationFailed)
    assert str(request_shape) == "the request is not valid: priority: too big"
    service_shape = error_from(
        answer(
            422, error("invalid_input", "bad payload", {"errors": [{"loc": ["n"], "msg": "no"}]})
        )
    )
    assert str(service_shape) == "bad payload: n: no"
    one_field = error_from(answer(422, error("invalid_input", "give one", {"field": "delay"})))
    assert str(one_field) == "delay: give one"


def test_retry_after_and_bodies_that_are_not_ours() -> None:
    limited = error_from(answer(429, error("rate_limited", "slow down"), **{"Retry-After": "7"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    down = error_from(answer(503))
    assert isinstance(down, ServiceUnavailable) and down.retry_after is None
    assert down.code == "http_503" and "proxy error" in down.message
