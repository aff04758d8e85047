"""Stand-ins for the world outside: a raw HTTP server on loopback, a DNS, an internet.

Only loopback exists here, so "the internet" is a network backend that routes a few public
addresses to loopback servers and records every dial. That lets the tests run the real,
strict policy (public addresses, ports 80/443) end to end, and see where sockets went.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import httpcore

PUBLIC = "93.184.216.34"
OTHER_PUBLIC = "151.101.1.1"


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


App = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """A complete, Content-Length framed response."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def echo(seen: Seen, writer: asyncio.StreamWriter) -> None:
    """What the server received, as JSON."""
    described = {
        "method": seen.method,
        "target": seen.target,
        "headers": seen.headers,
        "body": seen.body.decode(),
    }
    await respond(writer, 200, json.dumps(described).encode(), [("Content-Type", "text/json")])


class LoopbackServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 that hands each request to ``app``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.seen: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and cancel handlers still sleeping (slow responses)."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            seen = await _read_request(reader)
            self.seen.append(seen)
            await self.app(seen, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader) -> Seen:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(method, target, headers, body)


class FakeInternet(httpcore.AsyncNetworkBackend):
    """Routes ``(public address, port)`` to loopback ports and records every dial."""

    def __init__(self, routes: Mapping[tuple[str, int], int]) -> None:
        self.routes = dict(routes)
        self.dialed: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.dialed.append((host, port))
        if (host, port) not in self.routes:
            raise httpcore.ConnectError(f"no route to {host}:{port}")
        loopback_port = self.routes[host, port]
        return await self._real.connect_tcp("127.0.0.1", loopback_port, timeout)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


@dataclass
class FakeDns:
    """Answers per name; a name with several answer lists gives the next one on each call
    (the last one sticks), which is how a rebinding name behaves."""

    answers: dict[str, Sequence[Sequence[str]]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        asked = self.calls.count(host)
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        sequence = self.answers[host]
        return sequence[min(asked, len(sequence) - 1)]


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
