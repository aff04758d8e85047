"""`webhook`: POST a JSON body to a URL through the SSRF guard, signed when a secret is given.

What the receiver gets:

- the body: ``body`` as compact JSON (UTF-8), ``Content-Type: application/json``;
- ``X-Conveyor-Job``: the job id, the same on every attempt (deduplicate on it), and
  ``X-Conveyor-Attempt``: 1, 2, ...;
- with a ``secret``: ``X-Conveyor-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
  HMAC-SHA256 keyed with the secret over ``f"{t}.{body}"`` (``body`` the exact bytes sent).
  Recompute it, compare in constant time and refuse a ``t`` more than a few minutes old, which
  stops replays; ``verify`` does all three. Each attempt is signed afresh. Without a secret
  nothing is signed: there is no server-side default key, since a receiver would have no way
  to learn it.

An answer of 5xx, 408, 425 or 429, a network error or a timeout is retried with backoff
(1 s, 3 s, 9 s, ... up to 8 attempts); any other 4xx, a redirect (never followed: the
signature is for this URL), a refused address or an oversized answer fails the job at once.
The secret is part of the job's payload, so the job's owner (and administrators) can read it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from conveyor.domain.retry import RetryPolicy
from conveyor.errors import ConveyorError, NonRetryableError
from conveyor.net import BlockedUrl, FetchFailed, FetchPolicy, FetchResult, fetch
from conveyor.net.policy import MiB
from conveyor.net.signing import SIGNATURE_TOLERANCE, sign, verify
from conveyor.net.urls import check_url, origin, parse_url
from conveyor.settings import Settings
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()

SIGNATURE_HEADER = "X-Conveyor-Signature"
JOB_HEADER = "X-Conveyor-Job"
ATTEMPT_HEADER = "X-Conveyor-Attempt"
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Host",
        "Content-Length",
        "Content-Type",
        "Transfer-Encoding",
        "Connection",
        SIGNATURE_HEADER,
        JOB_HEADER,
        ATTEMPT_HEADER,
    )
)
RETRYABLE_STATUSES = frozenset({408, 425, 429})
__all__ = ["SIGNATURE_TOLERANCE", "WebhookPayload", "encode", "sign", "verify", "webhook"]


def _fetchable(url: str) -> str:
    """Refuse at submission what the guard refuses anywhere (syntax, scheme, credentials)."""
    try:
        check_url(url, FetchPolicy(ports=None))
    except BlockedUrl as exc:
        raise ValueError(exc.message) from None
    return url


HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")]
HeaderValue = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\r\n\x00]*$")]


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(max_length=2048), AfterValidator(_fetchable)]
    body: JsonValue = Field(description="Sent as compact JSON.")
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=50)
    secret: str | None = Field(
        None, min_length=16, max_length=512, description="Signs each delivery (see the module)."
    )

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, headers: dict[str, str]) -> dict[str, str]:
        taken = sorted(name for name in headers if name.lower() in RESERVED_HEADERS)
        if taken:
            raise ValueError(f"these headers are set by Conveyor: {', '.join(taken)}")
        return headers


class WebhookResult(BaseModel):
    status: int
    attempt: int


class DeliveryFailed(ConveyorError):
    """The receiver could not take the delivery now; it is retried."""

    code = "webhook_delivery_failed"


class DeliveryRefused(NonRetryableError):
    """The receiver refused the delivery; retrying would get the same answer."""

    code = "webhook_delivery_refused"


def webhook_policy(settings: Settings) -> FetchPolicy:
    """The service's policy, tighter: short timeouts, a small answer, no redirects."""
    base = FetchPolicy.from_settings(settings)
    return replace(
        base, max_bytes=MiB, connect_timeout=5.0, read_timeout=10.0, total_timeout=15.0,
        max_redirects=0,
    )  # fmt: skip


def encode(body: JsonValue) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _headers(ctx: JobContext, payload: WebhookPayload, body: bytes) -> dict[str, str]:
    headers = {
        **payload.headers,
        "Content-Type": "application/json",
        JOB_HEADER: ctx.job_id,
        ATTEMPT_HEADER: str(ctx.attempt),
    }
    if payload.secret is not None:
        headers[SIGNATURE_HEADER] = sign(payload.secret, body, int(time.time()))
    return headers


def _judge(result: FetchResult, attempt: int) -> WebhookResult:
    """2xx is delivered; 5xx and the "try later" 4xx are retried; anything else is refused."""
    if 200 <= result.status < 300:
        return WebhookResult(status=result.status, attempt=attempt)
    where = origin(parse_url(result.url))
    message = f"{where}: the receiver answered {result.status}"
    if result.status >= 500 or result.status in RETRYABLE_STATUSES:
        raise DeliveryFailed(message, status=result.status)
    raise DeliveryRefused(message, status=result.status)


@blueprint.job("webhook", max_attempts=8, timeout=60, retry=RetryPolicy(base=1.0, factor=3.0))
async def webhook(ctx: JobContext, payload: WebhookPayload) -> WebhookResult:
    """POST `body` as JSON to `url`, signed with `secret` if given; retried on 5xx and
    network errors, failed at once on other 4xx, redirects and refused addresses."""
    body = encode(payload.body)
    try:
        result = await fetch(
            payload.url,
            policy=webhook_policy(ctx.settings),
            method="POST",
            headers=_headers(ctx, payload, body),
            content=body,
        )
    except FetchFailed as exc:
        if exc.details.get("reason") == "redirects":
            where = origin(parse_url(payload.url))
            raise DeliveryRefused(f"{where}: answered a redirect, which is not followed") from exc
        raise DeliveryFailed(exc.message) from exc
    return _judge(result, ctx.attempt)
