"""A webhook receiver: what the relay (`conveyor results`) delivered, by job and event type.

A minimal HTTP/1.1 server on the suite's event loop: it reads each request's headers and
body (keep-alive, Content-Length), notes ``X-Conveyor-Job`` and ``X-Conveyor-Event-Type``,
and answers 200. The relay's total-queue check: every completed job's event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Receiver:
    def __init__(self) -> None:
        self.events: Counter[tuple[str, str]] = Counter()  # (job id, event type) -> deliveries
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def received(self, job_id: str, event: str = "completed") -> bool:
        return self.events[(job_id, event)] > 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = _headers(head)
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                job, event = headers.get("x-conveyor-job"), headers.get("x-conveyor-event-type")
                if job and event:
                    self.events[(job, event)] += 1
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}
