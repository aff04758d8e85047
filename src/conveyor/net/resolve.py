"""Turn a target into the addresses a connection may use, every one of them checked.

The addresses returned here are the pin: the connection dials them and nothing else, so a
name that answers differently the next time (DNS rebinding) changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

from conveyor.net.addresses import IPAddress, refusal_reason
from conveyor.net.errors import BlockedUrl, FetchFailed
from conveyor.net.policy import FetchPolicy
from conveyor.net.urls import Target

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``; the default asks the OS, tests inject their own."""


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The OS resolver's answers (``getaddrinfo``), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def checked_addresses(
    target: Target, policy: FetchPolicy, resolver: Resolver | None = None
) -> tuple[str, ...]:
    """The target's addresses, refused as a whole if ANY of them is not public.

    One private answer among public ones is refused too: which answer a client tries first
    is not ours to predict, and a mixed answer is a classic rebinding set-up.
    """
    if target.literal is not None:
        candidates = [target.literal]
    else:
        candidates = await _resolve(target, policy, resolver or system_resolver)
    if not policy.allow_private:
        for address in candidates:
            reason = refusal_reason(address)
            if reason is not None:
                raise BlockedUrl(
                    f"{target.origin}: address {address} is {reason}",
                    url=target.origin,
                    address=str(address),
                    reason="address",
                )
    return tuple(dict.fromkeys(str(address) for address in candidates))


async def _resolve(target: Target, policy: FetchPolicy, resolver: Resolver) -> list[IPAddress]:
    """The resolver's answers as addresses; a lookup counts against the connect timeout."""
    try:
        async with asyncio.timeout(policy.connect_timeout):
            answers = await resolver(target.host, target.port)
    except TimeoutError as exc:
        raise FetchFailed(f"{target.origin}: name resolution timed out") from exc
    except OSError as exc:
        raise FetchFailed(f"{target.origin}: could not resolve the host") from exc
    try:
        addresses = [ipaddress.ip_address(answer) for answer in answers]
    except ValueError as exc:
        raise BlockedUrl(f"{target.origin}: the resolver answered a non-address") from exc
    if not addresses:
        raise FetchFailed(f"{target.origin}: the host has no address")
    return addresses
