"""The chaos proxy against a real echo server: pass, cut (closed and refused), partition
(held back, then delivered), and back to pass on the same port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from chaos.proxy import Proxy

READ_S = 10.0  # bound for a read that must succeed (a loaded machine)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    started = Proxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await started.start()
    yield started
    await started.stop()
    server.close()
    await server.wait_closed()


async def _connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(proxy: Proxy, data: bytes = b"ping") -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(data)), READ_S)
    finally:
        writer.close()


async def test_pass_forwards_both_ways(proxy: Proxy) -> None:
    assert await _roundtrip(proxy) == b"ping"


async def test_cut_closes_open_connections_refuses_new_ones_and_heals(proxy: Proxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), READ_S) == b"a"

    await proxy.set_mode("cut")
    assert await asyncio.wait_for(reader.read(10), READ_S) == b""  # closed by the proxy
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await _connect(proxy)

    await proxy.set_mode("pass")
    assert await _roundtrip(proxy, b"again") == b"again"  # the same port serves again


async def test_partition_holds_bytes_both_ways_without_closing_then_delivers(
    proxy: Proxy,
) -> None:
    reader, writer = await _connect(proxy)
    await proxy.set_mode("partition")
    writer.write(b"held")
    with pytest.raises(TimeoutError):  # nothing comes back, and nothing closes
        await asyncio.wait_for(reader.readexactly(4), 0.5)
    opened = asyncio.create_task(_roundtrip(proxy, b"new"))  # a new connection hangs too
    await asyncio.sleep(0.3)
    assert not opened.done()

    await proxy.set_mode("pass")
    assert await asyncio.wait_for(reader.readexactly(4), READ_S) == b"held"
    assert await opened == b"new"
    writer.close()


async def test_retarget_ends_open_connections_and_sends_new_ones_to_the_new_server(
    proxy: Proxy,
) -> None:
    async def shout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data.upper())
                await writer.drain()
        writer.close()

    other = await asyncio.start_server(shout, "127.0.0.1", 0)
    try:
        reader, writer = await _connect(proxy)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), READ_S) == b"a"

        await proxy.retarget("127.0.0.1", other.sockets[0].getsockname()[1])
        assert await asyncio.wait_for(reader.read(10), READ_S) == b""  # the old link ended
        writer.close()
        assert await _roundtrip(proxy, b"new") == b"NEW"  # the same port, the new server
    finally:
        other.close()
        await other.wait_closed()
