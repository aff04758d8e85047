"""What a call to a Conveyor server can raise: one class per kind of answer.

The server says what went wrong as `{"error": {"code", "message", "details"?}}` with a status;
each status maps to one class here, and the exception keeps the code, the message, the
details and the status, so callers can branch on the class and still show the server's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class ConveyorClientError(Exception):
    """Something went wrong talking to a Conveyor server."""


class ConnectionFailed(ConveyorClientError):
    """The server could not be reached (refused, reset, timed out), after any retries."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.url = url
        super().__init__(f"cannot reach {url} ({type(cause).__name__}: {cause or 'no answer'})")


class WaitTimeout(ConveyorClientError, TimeoutError):
    """`wait()` gave up before the job reached a terminal state."""

    def __init__(self, job_id: str, timeout: float) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} did not finish within {timeout:g} s")


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where (`loc`, e.g. `["body", "priority"]`) and why."""

    loc: tuple[str | int, ...]
    msg: str
    type: str | None = None

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc if part != "body") or "request"
        return f"{where}: {self.msg}"


class ConveyorAPIError(ConveyorClientError):
    """The server answered with an error; `code` is its machine-readable name."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{message} ({code}, HTTP {status})")


class BadRequest(ConveyorAPIError):
    """400 and any other 4xx without a class of its own."""


class Unauthorized(ConveyorAPIError):
    """401: no credentials, bad ones, or a login that expired and could not be refreshed."""


class Forbidden(ConveyorAPIError):
    """403: the credentials are good but do not allow this."""


class NotFound(ConveyorAPIError):
    """404: no such object, or one that is not yours (the server does not say which)."""


class Conflict(ConveyorAPIError):
    """409: the object is not in a state that allows this (e.g. the result of a running job)."""


class PayloadTooLarge(ConveyorAPIError):
    """413: the request body is over the server's limit."""


class ValidationFailed(ConveyorAPIError):
    """422: the input is not valid; `field_errors` says which fields and why."""

    @property
    def field_errors(self) -> list[FieldError]:
        return field_errors(self.details, self.message)

    def __str__(self) -> str:
        """One line: the message and every field error (or the one field it names)."""
        problems = "; ".join(str(e) for e in self.field_errors)
        if isinstance(self.details, dict) and "field" in self.details:
            return problems
        return f"{self.message}: {problems}" if problems else self.message


class RateLimited(ConveyorAPIError):
    """429: too many requests; `retry_after` is how many seconds the server asks to wait."""

    retry_after: float | None = None


class QuotaExceeded(RateLimited):
    """429 `quota_exceeded`: the submit would take your waiting jobs beyond your quota;
    nothing was stored. Waiting does not help until some of your jobs start or finish;
    `details` has `max_queued`, `waiting` and `requested`."""


class ServerError(ConveyorAPIError):
    """500 and any other 5xx without a class of its own."""


class ServiceUnavailable(ServerError):
    """503: a service the server depends on (its database) is down; nothing was changed."""

    retry_after: float | None = None


_BY_STATUS: dict[int, type[ConveyorAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def field_errors(details: Any, message: str = "is not valid") -> list[FieldError]:
    """The field errors in either shape the server uses: a list of `{loc, msg, type}`
    (request validation), or `{"errors": [...]}` / `{"field": name}` (the services')."""
    if isinstance(details, dict):
        if isinstance(details.get("errors"), list):
            return field_errors(details["errors"])
        if isinstance(details.get("field"), str):
            return [FieldError((details["field"],), message)]
        return []
    if not isinstance(details, list):
        return []
    return [
        FieldError(tuple(item.get("loc") or ()), str(item.get("msg", "")), item.get("type"))
        for item in details
        if isinstance(item, dict)
    ]


def error_from(response: httpx.Response) -> ConveyorAPIError:
    """The typed exception for an error answer (which must already be read)."""
    code, message, details = _error_parts(response)
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else BadRequest)
    if status == 429 and code == "quota_exceeded":
        kind = QuotaExceeded
    error = kind(status, code, message, details)
    if isinstance(error, RateLimited | ServiceUnavailable):
        error.retry_after = retry_after(response)
    return error


def _error_parts(response: httpx.Response) -> tuple[str, str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return error["code"], str(error.get("message", "")), error.get("details")
    text = response.text.strip()[:200] or response.reason_phrase
    return f"http_{response.status_code}", text, None


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the server sends a number, never a date)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
