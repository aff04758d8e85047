"""Limits on connections, below the ASGI app: how long a client may take to send a request's
headers and then its body, and how many connections one API process holds open.

uvicorn bounds none of these. Its keep-alive timer runs only between requests and every byte
received resets it, so a client sending a byte a second held its connection (and a slot of
every limit above it) for as long as it liked; its `limit_concurrency` is checked once the
headers are in, which a slow client never reaches. `uvicorn_options(settings)` gives the
server (`conveyor run`, `conveyor api`) a protocol that enforces all three:

- the request line and headers within HTTP_HEADER_TIMEOUT of the connection opening (or of
  the request's first byte, on a kept-alive connection), else 408 and the connection closed;
- the body within HTTP_BODY_TIMEOUT of the headers, else 408 if nothing was answered yet,
  and the connection closed either way (the app reading the body sees a disconnect);
- at most HTTP_MAX_CONNECTIONS open connections, beyond which a new one gets 503 and is
  closed at once (streams count: each SSE client holds one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.api.errors import error_body
from conveyor.settings import Settings

log = logging.getLogger("conveyor.http")


def _reply(status: str, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_SLOW = _reply("408 Request Timeout", "request_timeout", "the request took too long to arrive")
TOO_MANY = _reply("503 Service Unavailable", "unavailable", "too many open connections")


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the three limits of this module's docstring."""

    header_timeout: ClassVar[float] = 20.0
    body_timeout: ClassVar[float] = 60.0
    max_connections: ClassVar[int] = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d are open", len(self.connections) - 1)
            transport.write(TOO_MANY)
            transport.close()
            return
        self._arm(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        upgraded = self.parser.should_upgrade() and self._should_upgrade()  # websocket's now
        if not self.pipeline and not upgraded:  # a queued request's body waits for its turn
            self._arm(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        """No app runs yet for this request: the 408 is ours to write."""
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closed a connection: its headers took over %s s", self.header_timeout)
            self.transport.write(TOO_SLOW)
            self.transport.close()

    def _body_too_slow(self) -> None:
        """The app may be waiting for the body: it is told the client left (and whatever it
        sends is dropped), and the client gets the 408 unless an answer had begun."""
        self._deadline = None
        if self.transport.is_closing():
            return
        log.debug("closed a connection: its body took over %s s", self.body_timeout)
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if not answered:
            self.transport.write(TOO_SLOW)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttp]:
    """The protocol class with `settings`' limits (uvicorn builds one per connection)."""
    limits = {
        "header_timeout": settings.http_header_timeout,
        "body_timeout": settings.http_body_timeout,
        "max_connections": settings.http_max_connections,
    }
    return cast(type[GuardedHttp], type("GuardedHttp", (GuardedHttp,), limits))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` that bound slow and numerous clients."""
    return {"http": guarded_protocol(settings), "timeout_keep_alive": 5}
