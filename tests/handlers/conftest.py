"""Fixtures for the built-in job types: an image site on loopback, an engine, a worker run.

Only loopback exists here, so images come from ``ImageSite`` on 127.0.0.1 and the tests that
run through a worker set ``allow_private_urls``; the tests of the strict policy use the net
tests' fake DNS and internet (``tests/net/world.py``) to reach the same site as a public host.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import TERMINAL
from conveyor.runtime import Engine
from conveyor.services.jobs import Submission
from tests.api.conftest import api_settings
from tests.net.world import LoopbackServer, Seen, respond


@cache
def image_bytes(kind: str, width: int, height: int) -> bytes:
    """A real image of ``kind`` (a Pillow format name, any case) and size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 20)).save(out, kind.upper())
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that only claims its size: enough for the header read, no pixels to speak of."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


class ImageSite:
    """Routes: ``/<format>/<w>x<h>`` (jpeg, png, gif, webp, bmp), ``/slow/<format>/<w>x<h>``
    (held ``hold`` seconds, counting requests in flight), ``/pixels/<w>x<h>`` (a PNG header
    claiming that size), ``/bytes/<n>``, ``/text``, ``/redirect?to=<url>``, else 404."""

    def __init__(self) -> None:
        self.hold = 0.0
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, seen: Seen, writer: asyncio.StreamWriter) -> None:
        parts = seen.path.strip("/").split("/")
        if parts[0] == "slow":
            await self._slow(parts[1:], writer)
        elif len(parts) == 2 and parts[0] in ("jpeg", "png", "gif", "webp", "bmp"):
            await respond(writer, 200, image_bytes(parts[0], *_size(parts[1])))
        elif parts[0] == "pixels":
            await respond(writer, 200, png_header(*_size(parts[1])))
        elif parts[0] == "bytes":
            await respond(writer, 200, b"\x89PNG" + b"x" * (int(parts[1]) - 4))
        elif parts[0] == "text":
            await respond(
                writer, 200, b"<html>not an image</html>", [("Content-Type", "text/html")]
            )
        elif parts[0] == "redirect":
            target = parse_qs(urlsplit(seen.target).query)["to"][0]
            await respond(writer, 302, b"", [("Location", target)])
        else:
            await respond(writer, 404, b"no such image")

    async def _slow(self, parts: list[str], writer: asyncio.StreamWriter) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.in_flight -= 1
        await respond(writer, 200, image_bytes(parts[0], *_size(parts[1])))


@pytest.fixture
async def site() -> AsyncIterator[tuple[ImageSite, LoopbackServer]]:
    app = ImageSite()
    server = await LoopbackServer(app).start()
    yield app, server
    await server.stop()


def url(server: LoopbackServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@asynccontextmanager
async def open_engine(db_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Engine]:
    """An engine on the test database; no processing delay unless a test asks for one."""
    values: dict[str, Any] = {"store_visit_delay": "0", **overrides}
    engine = await Engine.open(api_settings(db_url, tmp_path, **values))
    try:
        yield engine
    finally:
        await engine.close()


async def run_job(engine: Engine, submission: Submission, timeout: float = 15.0) -> JobRecord:
    """Submit, run a worker until the job ends (promoting retries, as the scheduler would),
    and return the job as stored."""
    enqueued = await engine.jobs.submit(submission)
    worker = engine.worker("*", concurrency=4)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            job = await engine.jobs.get(enqueued.id)
            if job.state in TERMINAL:
                return job
            await engine.backend.promote_due()
            await asyncio.sleep(0.02)
        raise AssertionError(f"job {enqueued.id} still {job.state} after {timeout} s")
    finally:
        worker.stop(force=True)
        await task
