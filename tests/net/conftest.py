"""One loopback server with every behaviour the fetch tests need, behind a fake internet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest

from conveyor.net import FetchPolicy
from tests.net.world import (
    OTHER_PUBLIC,
    PUBLIC,
    FakeDns,
    FakeInternet,
    LoopbackServer,
    Seen,
    echo,
    respond,
)

BIG = 64 * 1024


async def app(seen: Seen, writer: asyncio.StreamWriter) -> None:
    """Routes by path; the shapes a hostile or broken server can take."""
    path, query = seen.path, parse_qs(urlsplit(seen.target).query)
    if path == "/small":
        await respond(writer, 200, b"hello")
    elif path == "/echo":
        await echo(seen, writer)
    elif path.startswith("/status/"):
        await respond(writer, int(path.rsplit("/", 1)[1]), b"status page")
    elif path.startswith("/hops/"):
        left = int(path.rsplit("/", 1)[1])
        if left:
            await respond(writer, 302, b"", [("Location", f"/hops/{left - 1}")])
        else:
            await respond(writer, 200, b"arrived")
    elif path.startswith("/redirect/"):
        status = int(path.rsplit("/", 1)[1])
        await respond(writer, status, b"", [("Location", query["to"][0])])
    else:
        await _hostile(path, writer)


async def _hostile(path: str, writer: asyncio.StreamWriter) -> None:
    if path == "/lying-length":
        writer.write(b"HTTP/1.1 200 X\r\nContent-Length: 10\r\n\r\n" + b"x" * (16 * BIG))
    elif path == "/until-close":
        writer.write(b"HTTP/1.1 200 X\r\nConnection: close\r\n\r\n" + b"x" * (16 * BIG))
    elif path == "/chunked":
        writer.write(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(16):
            writer.write(b"%x\r\n%b\r\n" % (BIG, b"x" * BIG))
        writer.write(b"0\r\n\r\n")
    elif path == "/slow-body":
        writer.write(b"HTTP/1.1 200 X\r\nContent-Length: 5\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)
    elif path == "/drip":
        writer.write(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(600):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
    else:
        await respond(writer, 404, b"no such route")
    await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    running = await LoopbackServer(app).start()
    yield running
    await running.stop()


@pytest.fixture
def internet(server: LoopbackServer) -> FakeInternet:
    """public.test (PUBLIC) and other.test (OTHER_PUBLIC) on port 80 both reach ``server``."""
    return FakeInternet({(PUBLIC, 80): server.port, (OTHER_PUBLIC, 80): server.port})


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns(
        {
            "public.test": [[PUBLIC]],
            "other.test": [[OTHER_PUBLIC]],
            "internal.test": [["10.0.0.7"]],
        }
    )


@pytest.fixture
def policy() -> FetchPolicy:
    """The strict default policy, with short timeouts so failures are quick."""
    return FetchPolicy(connect_timeout=1.0, read_timeout=1.0, total_timeout=3.0)
