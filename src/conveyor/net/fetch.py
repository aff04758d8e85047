"""The one fetcher every outbound HTTP call goes through.

Each hop is checked (scheme, credentials, port, every resolved address), then connected
through a fresh pool whose network backend dials only the checked addresses, so nothing
resolves the name a second time. Redirects are followed here, each one a new, fully checked
hop. A non-2xx answer is a result, not an error: callers decide what it means.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import httpcore
import httpx

from conveyor.net.body import read_capped
from conveyor.net.errors import FetchFailed
from conveyor.net.pinning import Pin, PinnedBackend
from conveyor.net.policy import FetchPolicy
from conveyor.net.redirects import REDIRECT_STATUSES, Outgoing, redirected
from conveyor.net.resolve import Resolver, checked_addresses
from conveyor.net.urls import Target, check_url, origin, parse_url

# Framing is ours to set; a caller's value for these would desynchronise the exchange.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class FetchResult:
    """The final answer: status, headers, the body as received, the final URL, and the
    address the connection actually went to."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    address: str

    def raise_for_status(self) -> FetchResult:
        """This result if the status is 2xx, else FetchFailed naming the status."""
        if not 200 <= self.status < 300:
            where = origin(httpx.URL(self.url))
            raise FetchFailed(f"{where}: the server answered {self.status}", status=self.status)
        return self


@dataclass(frozen=True)
class _Route:
    """How hops are made: the policy, and the seams tests use to stand in for the world."""

    policy: FetchPolicy
    resolver: Resolver | None
    network: httpcore.AsyncNetworkBackend | None
    ssl_context: ssl.SSLContext | None


async def fetch(
    url: str | httpx.URL,
    *,
    policy: FetchPolicy,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    resolver: Resolver | None = None,
    network: httpcore.AsyncNetworkBackend | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchResult:
    """Fetch ``url`` under ``policy``: BlockedUrl, FetchFailed or TooLarge when it cannot.

    ``resolver`` replaces the OS resolver, ``network`` the socket layer under the pin, and
    ``ssl_context`` the certifi trust store; tests use them, services normally do not.
    """
    request = Outgoing(method.upper(), parse_url(url), _initial_headers(headers, policy), content)
    route = _Route(policy, resolver, network, ssl_context)
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _follow(request, route)
    except TimeoutError as exc:
        where = origin(request.url)
        message = f"{where}: gave up after {policy.total_timeout:g} s"
        raise FetchFailed(message, reason="timeout") from exc


async def _follow(request: Outgoing, route: _Route) -> FetchResult:
    for _ in range(route.policy.max_redirects + 1):
        result = await _hop(request, route)
        location = result.headers.get("location")
        if result.status not in REDIRECT_STATUSES or location is None:
            return result
        request = redirected(request, result.status, location)
    limit = route.policy.max_redirects
    raise FetchFailed(f"{origin(request.url)}: more than {limit} redirects", reason="redirects")


async def _hop(request: Outgoing, route: _Route) -> FetchResult:
    """One checked request: resolve and check, then connect only to what was checked."""
    target = check_url(request.url, route.policy)
    addresses = await checked_addresses(target, route.policy, route.resolver)
    backend = PinnedBackend(Pin(target.host, target.port, addresses), route.network)
    pool = httpcore.AsyncConnectionPool(
        ssl_context=route.ssl_context or _default_ssl_context(),
        network_backend=backend,
        max_connections=1,
    )
    async with pool:
        with _network_errors(target):
            return await _exchange(pool, request, route.policy, backend)


async def _exchange(
    pool: httpcore.AsyncConnectionPool,
    request: Outgoing,
    policy: FetchPolicy,
    backend: PinnedBackend,
) -> FetchResult:
    """Send one request and read the body under the cap; a redirect's body is not wanted,
    so it is never read."""
    async with pool.stream(
        request.method,
        _core_url(request.url),
        headers=_wire_headers(request, policy),
        content=request.content,
        extensions={"timeout": _timeouts(policy)},
    ) as response:
        headers = httpx.Headers(response.headers)
        body = b""
        if response.status not in REDIRECT_STATUSES or "location" not in headers:
            body = await read_capped(response.aiter_stream(), policy.max_bytes)
    return FetchResult(response.status, headers, body, str(request.url), backend.connected or "")


@contextmanager
def _network_errors(target: Target) -> Iterator[None]:
    """httpcore's failures as FetchFailed, naming the origin only."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise FetchFailed(f"{target.origin}: timed out", reason="timeout") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise FetchFailed(f"{target.origin}: {str(exc) or type(exc).__name__}") from exc
    except OSError as exc:
        raise FetchFailed(f"{target.origin}: {exc.strerror or type(exc).__name__}") from exc


def _initial_headers(headers: Mapping[str, str] | None, policy: FetchPolicy) -> httpx.Headers:
    """Defaults, then the caller's headers. ``identity`` keeps the byte cap honest: what is
    counted is what the caller gets, with no decompression after the count."""
    merged = httpx.Headers(
        {"User-Agent": policy.user_agent, "Accept": "*/*", "Accept-Encoding": "identity"}
    )
    for name, value in (headers or {}).items():
        if name.lower() not in _RESERVED_HEADERS:
            merged[name] = value
    return merged


def _wire_headers(request: Outgoing, policy: FetchPolicy) -> list[tuple[bytes, bytes]]:
    headers = httpx.Headers(request.headers)
    headers["Host"] = request.url.netloc.decode("ascii")
    if policy.allow_userinfo and request.url.userinfo and "authorization" not in headers:
        pair = f"{request.url.username}:{request.url.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers.raw


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )


def _timeouts(policy: FetchPolicy) -> dict[str, float]:
    read = policy.read_timeout
    return {"connect": policy.connect_timeout, "read": read, "write": read, "pool": read}


@cache
def _default_ssl_context() -> ssl.SSLContext:
    """certifi's trust store, loaded once: building a context costs milliseconds."""
    return httpcore.default_ssl_context()
