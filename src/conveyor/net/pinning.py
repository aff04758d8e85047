"""An httpcore network backend that dials only the addresses that were checked.

httpcore hands ``connect_tcp`` the host name from the URL and uses the same name for TLS
(SNI and certificate verification) and for nothing else at the socket level. Swapping the
name for the checked address here, and only here, keeps ``Host``, SNI and the certificate
check on the real name while the socket goes exactly where the check said it may.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpcore

from conveyor.net.errors import BlockedUrl


@dataclass(frozen=True)
class Pin:
    """One host and port, and the checked addresses it may be reached at, in order."""

    host: str
    port: int
    addresses: tuple[str, ...]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects ``pin.host:pin.port`` to the pinned addresses; refuses any other target."""

    def __init__(self, pin: Pin, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._pin = pin
        self._inner = inner or httpcore.AnyIOBackend()
        self.connected: str | None = None
        """The address the last connection went to."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface names it)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if (host, port) != (self._pin.host, self._pin.port):
            raise BlockedUrl("a connection to an unchecked host was refused")
        failure: Exception = httpcore.ConnectError("the host has no checked address")
        for address in self._pin.addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            self.connected = address
            return stream
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface names it)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedUrl("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
