"""Slow and numerous clients against a real server on a loopback socket, configured as
`conveyor run` and `conveyor api` configure theirs (`uvicorn_options`): headers and bodies
that trickle in are cut off within their bound, idle connections too, connections beyond
the limit are refused, and a normal upload of the largest allowed size still passes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor.api.connections import uvicorn_options
from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.settings import Settings
from tests.api.conftest import PASSWORD, api_settings
from tests.support.serving import serving

HEADER_S, BODY_S, MAX_CONNECTIONS = 1.0, 2.0, 6
MARGIN = 4.0  # scheduling slack on a busy machine; an unbounded server never closes at all
GIVE_UP = 20.0  # how long a test waits for a close that should come within the bound


@dataclass
class Running:
    host: str
    port: int
    url: str
    engine: Engine
    settings: Settings
    key: str  # an API key of a verified user

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


@pytest.fixture
async def running(db_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = api_settings(
        db_url,
        tmp_path,
        http_header_timeout=HEADER_S,
        http_body_timeout=BODY_S,
        http_max_connections=MAX_CONNECTIONS,
    )
    engine = await Engine.open(settings)
    try:
        app = create_app(settings, engine=engine)
        async with serving(app, options=uvicorn_options(settings)) as (_server, url):
            user = await engine.accounts.create_user("ada@example.com", PASSWORD, verified=True)
            _record, key = await engine.accounts.create_api_key(user, "slow")
            port = int(url.rsplit(":", 1)[1])
            yield Running("127.0.0.1", port, url, engine, settings, key)
    finally:
        await engine.close()


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, until it is all sent or the server hangs up."""
    for byte in data:
        await asyncio.sleep(every)
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, OSError):
            return


async def until_closed(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it sent before."""
    started = time.monotonic()
    received = b""
    try:
        async with asyncio.timeout(GIVE_UP):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {GIVE_UP} s; received {received!r}")
    return time.monotonic() - started, received


async def cut_off(running: Running, head: bytes, slow: bytes, every: float) -> tuple[float, bytes]:
    reader, writer = await running.connect()
    writer.write(head)
    await writer.drain()
    sender = asyncio.create_task(trickle(writer, slow, every))
    try:
        return await until_closed(reader)
    finally:
        sender.cancel()
        writer.close()


def request_head(running: Running, length: int) -> bytes:
    return (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {running.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def stored_jobs(running: Running) -> int:
    async with httpx.AsyncClient(base_url=running.url) as client:
        r = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {running.key}"})
        assert r.status_code == 200, r.text
        return len(r.json()["items"])


async def test_a_body_sent_a_byte_a_second_is_cut_off_with_408(running: Running) -> None:
    size = running.settings.max_body_bytes
    body = json.dumps({"type": "noop", "payload": {"x": "y" * (size - 40)}}).encode()
    assert len(body) <= size
    took, answer = await cut_off(running, request_head(running, len(body)), body, every=1.0)
    assert took < BODY_S + MARGIN, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert await stored_jobs(running) == 0


async def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(running: Running) -> None:
    head = b"GET /api/v1/jobs HTTP/1.1\r\nHost: test\r\n"
    slow = b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    took, answer = await cut_off(running, head, slow, every=0.25)
    assert took < HEADER_S + MARGIN, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_connection_that_sends_nothing_is_closed(running: Running) -> None:
    reader, writer = await running.connect()
    try:
        took, answer = await until_closed(reader)
    finally:
        writer.close()
    assert took < HEADER_S + MARGIN, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_kept_alive_connection_gets_the_header_bound_again(running: Running) -> None:
    """The first request passes; the second one's headers trickle and are cut off."""
    reader, writer = await running.connect()
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 "), first
        length = next(
            int(line.split(b":")[1]) for line in first.split(b"\r\n") if b"content-length" in line
        )
        await reader.readexactly(length)
        second = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100
        sender = asyncio.create_task(trickle(writer, second, 0.2))
        took, answer = await until_closed(reader)
        sender.cancel()
    finally:
        writer.close()
    assert took < HEADER_S + MARGIN, took
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_normal_upload_of_the_allowed_size_passes(running: Running) -> None:
    size = running.settings.max_body_bytes
    body = json.dumps({"type": "noop", "payload": {"x": "y" * (size - 40)}}).encode()
    assert size - 100 < len(body) <= size
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        r = await client.post(
            "/api/v1/jobs",
            content=body,
            headers={"Authorization": f"Bearer {running.key}", "Content-Type": "application/json"},
        )
    assert r.status_code == 201, r.text[:300]
    assert await stored_jobs(running) == 1


async def test_connections_beyond_the_limit_are_refused_at_once(running: Running) -> None:
    held = [await running.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await running.connect()
        started = time.monotonic()
        _took, answer = await until_closed(reader)
        writer.close()
        assert time.monotonic() - started < HEADER_S, "refused only by the header bound"
        assert answer.startswith(b"HTTP/1.1 503 "), answer
    finally:
        for _reader, held_writer in held:
            held_writer.close()
    await asyncio.sleep(0.2)  # the server sees them closed
    async with httpx.AsyncClient(base_url=running.url) as client:
        assert (await client.get("/health")).status_code == 200
