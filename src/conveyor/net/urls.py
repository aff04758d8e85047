"""The URL-level checks: scheme, credentials, port and host syntax, before any lookup.

Messages name the origin only (``scheme://host:port``): paths and queries often carry
tokens, and userinfo always does.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from conveyor.net.addresses import IPAddress, parse_host
from conveyor.net.errors import BlockedUrl
from conveyor.net.policy import FetchPolicy

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A URL that passed the URL-level checks, and where it asks to connect."""

    url: httpx.URL
    host: str
    """The host exactly as the HTTP layer dials it: ASCII (IDNA), IPv6 without brackets."""
    port: int
    literal: IPAddress | None
    """The address when the host is an IP literal (in any spelling), else None."""

    @property
    def origin(self) -> str:
        return origin(self.url)


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """The parsed URL, or BlockedUrl; the parser's message is not echoed, it may quote it."""
    try:
        return url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise BlockedUrl("not a valid URL") from exc


def origin(url: httpx.URL) -> str:
    """``scheme://host[:port]``: what a message may say about a URL."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def check_url(url: str | httpx.URL, policy: FetchPolicy) -> Target:
    """The target of ``url`` if its scheme, credentials, port and host are allowed."""
    parsed = parse_url(url)
    if parsed.scheme not in DEFAULT_PORTS:
        raise BlockedUrl(
            f"only http and https URLs are allowed, not {parsed.scheme or 'none'!r}",
            reason="scheme",
        )
    if parsed.userinfo and not policy.allow_userinfo:
        raise BlockedUrl("URLs with credentials are not allowed", url=origin(parsed))
    host = parsed.raw_host.decode("ascii")
    port = DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if not 0 < port < 65536:
        raise BlockedUrl(f"{origin(parsed)}: not a valid port", url=origin(parsed), reason="port")
    if policy.ports is not None and port not in policy.ports:
        allowed = ", ".join(str(number) for number in sorted(policy.ports))
        raise BlockedUrl(
            f"{origin(parsed)}: port {port} is not allowed (only {allowed})",
            url=origin(parsed),
            reason="port",
        )
    try:
        literal = parse_host(host)
    except ValueError as exc:
        raise BlockedUrl(f"{origin(parsed)}: {exc}", url=origin(parsed), reason="host") from exc
    return Target(url=parsed, host=host, port=port, literal=literal)
