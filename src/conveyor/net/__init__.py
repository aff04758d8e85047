"""SSRF-safe outbound HTTP: one fetcher for every call that leaves the process.

Only http(s), only the allowed ports, only public addresses (in every spelling), connected
to exactly the address that was checked, redirects re-checked, bodies capped, time bounded.
"""

from __future__ import annotations

from conveyor.net.addresses import is_public, parse_host, refusal_reason
from conveyor.net.errors import BlockedUrl, FetchError, FetchFailed, TooLarge
from conveyor.net.fetch import FetchResult, fetch
from conveyor.net.policy import FetchPolicy
from conveyor.net.resolve import Resolver

__all__ = [
    "BlockedUrl",
    "FetchError",
    "FetchFailed",
    "FetchPolicy",
    "FetchResult",
    "Resolver",
    "TooLarge",
    "fetch",
    "is_public",
    "parse_host",
    "refusal_reason",
]
