"""What the sync and async clients share that is not I/O: credentials, request building,
and the retry rules. Each client only sends what this builds and sleeps when it says so.

Retries: a call is retried (with exponential backoff, honouring `Retry-After`) on a 503 or a
connection error only when sending it twice cannot do anything twice: GET and DELETE, and a
POST that carries an idempotency key. Any other POST is sent once, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from conveyor.client.models import Tokens

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
TokensCallback = Callable[[Tokens], None]
API = "/api/v1"


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in all (1: never retry); pauses `backoff`, 2x, 4x ... at most `cap` s."""

    attempts: int = 4
    backoff: float = 0.25
    cap: float = 5.0

    def pause(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        return min(self.backoff * 2.0 ** (attempt - 1), self.cap)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, whether it may be sent twice, how to read the answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False
    authenticated: bool = True


class Credentials:
    """An API key or access token as given, or a login's tokens, which rotate: each refresh
    answers a new pair, handed to `on_tokens` so a caller can keep it (the CLI saves it)."""

    def __init__(
        self,
        token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: TokensCallback | None = None,
    ) -> None:
        self.token = token
        self.refresh_token = refresh_token
        self.on_tokens = on_tokens

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def update(self, tokens: Tokens) -> None:
        self.token, self.refresh_token = tokens.access_token, tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)

    def clear(self) -> None:
        self.token = self.refresh_token = None


class Core:
    """The client's state and rules, shared by `Client` and `AsyncClient`."""

    def __init__(
        self,
        credentials: Credentials,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.credentials = credentials
        self.retry = retry or RetryPolicy()

    def request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], **extra: Any
    ) -> httpx.Request:
        headers = dict(call.headers)
        if call.authenticated:
            headers.update(self.credentials.header())
        return http.build_request(
            call.method, API + call.path, params=call.params, json=call.json, headers=headers,
            **extra,
        )  # fmt: skip

    def retries(self, call: Call[Any], attempt: int) -> bool:
        """Whether a call that just failed (503 or no connection) is sent again."""
        return call.idempotent and attempt < self.retry.attempts

    def stale_token(self, call: Call[Any], response: httpx.Response) -> str | None:
        """The access token a 401 refused, when a refresh token can renew it."""
        if response.status_code != 401 or not call.authenticated:
            return None
        if self.credentials.refresh_token is None:
            return None
        sent = response.request.headers.get("authorization", "")
        return sent.removeprefix("Bearer ") or None

    def needs_refresh(self, stale: str) -> bool:
        """False when another call renewed the token meanwhile (a refresh token works once:
        presenting it twice would sign the whole login out)."""
        return self.credentials.token == stale

    def refresh_call(self) -> Call[Tokens]:
        body = {"refresh_token": self.credentials.refresh_token}
        return Call("POST", "/auth/refresh", model(Tokens), json=body, authenticated=False)


def model(kind: type[M]) -> Callable[[httpx.Response], M]:
    """A parser reading the answer as one `kind`."""
    return lambda response: kind.model_validate(response.json())


def models(kind: type[M]) -> Callable[[httpx.Response], list[M]]:
    """A parser reading the answer as a list of `kind`."""
    return lambda response: [kind.model_validate(item) for item in response.json()]


def nothing(response: httpx.Response) -> None:
    return None
