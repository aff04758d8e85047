"""Typed errors. Each subclass's docstring is its default message; doors map them once."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Something went wrong in Conveyor."""

    code = "error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)


class NotFound(ConveyorError):
    """No such object."""

    code = "not_found"


class Unauthenticated(ConveyorError):
    """Authentication is required, or the credentials are not valid."""

    code = "unauthenticated"


class Forbidden(ConveyorError):
    """You are not allowed to do this."""

    code = "forbidden"


class RateLimited(ConveyorError):
    """Too many requests; try again later."""

    code = "rate_limited"


class QuotaExceeded(RateLimited):
    """This would take your waiting jobs beyond your quota; nothing was stored."""

    code = "quota_exceeded"


class PayloadTooLarge(ConveyorError):
    """The request body is too large."""

    code = "payload_too_large"


class Conflict(ConveyorError):
    """The object is not in a state that allows this."""

    code = "conflict"


class IllegalTransition(Conflict):
    """This state change is not allowed by the job state machine."""

    code = "illegal_transition"


class IdempotencyKeyReused(Conflict):
    """This idempotency key was used for another request (another type, payload or queue);
    nothing was stored."""

    code = "idempotency_key_reused"


class UniqueKeyTaken(Conflict):
    """Another live job of this unique job type holds the same unique key."""

    code = "unique_key_taken"


class InvalidInput(ConveyorError):
    """The input is not valid."""

    code = "invalid_input"


class UnknownJobType(InvalidInput):
    """No handler is registered for this job type."""

    code = "unknown_job_type"


class Unavailable(ConveyorError):
    """A service Conveyor depends on is not reachable; nothing was changed."""

    code = "unavailable"


class ConfigurationError(ConveyorError):
    """The configuration is not valid."""

    code = "configuration_error"


class NonRetryableError(ConveyorError):
    """The job failed in a way that retrying cannot fix."""

    code = "non_retryable"


class JobFailed(NonRetryableError):
    """The job failed; the part of its work that succeeded is kept as its result."""

    code = "job_failed"

    def __init__(self, message: str | None = None, *, result: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.result = result


class JobTimeout(ConveyorError):
    """The job ran longer than its timeout."""

    code = "timeout"
