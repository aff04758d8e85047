"""An asyncio TCP proxy in front of the database, with three modes.

* ``pass``: bytes flow both ways.
* ``cut``: every open connection is closed and the listening socket too, so a new connection
  is refused (what clients see when the server is down or restarting).
* ``partition``: connections stay open and nothing passes either way, no FIN, no RST; new
  connections are accepted by the kernel and hang. When the partition heals, the bytes held
  back are delivered: a dropped TCP segment is retransmitted, so an application behind a
  real partition sees a stall, not a corrupted stream (a proxy that threw the bytes away
  would desynchronise the database protocol, which no network does).

`drop_at(marker, toward, after)` ends the first link that, after carrying `after` (either
way), carries `marker` toward the client (or the server), before that chunk passes: an
answer the server sent that never arrives (a COMMIT applied, its reply lost), or a request
that never reaches it.

`retarget` sends new connections to another server and ends the open ones, as a virtual IP
moved to a promoted standby (or Patroni's HAProxy, whose health check follows the primary)
would: the failover scenario.

The proxy runs on the caller's event loop; the suite points processes at ``127.0.0.1:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["pass", "cut", "partition"]
Toward = Literal["client", "server"]
CHUNK = 65536

log = logging.getLogger("chaos.proxy")


class Proxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``; `set_mode` injects faults."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: Mode = "pass"
        self._server: asyncio.Server | None = None
        self._healed = asyncio.Event()
        self._healed.set()
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self._drop: _Drop | None = None  # armed by `drop_at`
        self.dropped = asyncio.Event()  # set when the armed drop happened

    async def start(self) -> int:
        """Listen (on a free port unless one was given); the port is kept across cuts."""
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: Mode) -> None:
        """Switch at once; returns when the new mode is in force."""
        previous, self.mode = self.mode, mode
        if mode == "partition":
            self._healed.clear()
        else:
            self._healed.set()
        if mode == "cut":
            await self._close_listener()
            await self._drop_links()
        elif previous == "cut":
            await self._listen()
        log.info("proxy :%d %s -> %s", self.port, previous, mode)

    def drop_at(self, marker: bytes, toward: Toward, after: bytes) -> None:
        """Arm a one-off drop (see the module's docstring); `dropped` is set when it fires."""
        self.dropped.clear()
        self._drop = _Drop(marker, toward, after)

    async def retarget(self, target_host: str, target_port: int) -> None:
        """From now on connect to `target_host:target_port`; every open connection is ended
        (it leads to the old server: after a failover, one that is gone or no longer the
        primary, as HAProxy's ``on-marked-down shutdown-sessions`` ends them)."""
        previous, self.target = self.target, (target_host, target_port)
        await self._drop_links()
        log.info("proxy :%d retargeted %s:%d -> %s:%d", self.port, *previous, *self.target)

    async def stop(self) -> None:
        await self._close_listener()
        await self._drop_links()

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _drop_links(self) -> None:
        """Abort both ends of every link; each link's task then ends by itself."""
        for writer in list(self._writers):
            writer.transport.abort()
        if self._links:
            await asyncio.wait(list(self._links), timeout=5)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(client_w)
        try:
            await self._healed.wait()  # a connection opened during a partition hangs
            if self.mode == "cut" or client_w.is_closing():
                return
            server_r, server_w = await asyncio.open_connection(*self.target)
            self._writers.add(server_w)
            try:
                link = _Link()
                await _first_done(
                    self._pump(client_r, server_w, "server", link),
                    self._pump(server_r, client_w, "client", link),
                )
            finally:
                self._writers.discard(server_w)
                _close(server_w)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the target refused or reset: the client sees its connection close
        finally:
            self._writers.discard(client_w)
            _close(client_w)
            self._links.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        toward: Toward,
        link: _Link,
    ) -> None:
        while data := await source.read(CHUNK):
            await self._healed.wait()  # held back, as a partitioned network holds segments
            if sink.is_closing():
                return
            if (drop := self._drop) is not None:
                if link.carried_after and drop.toward == toward and drop.marker in data:
                    self._drop = None
                    sink.transport.abort()  # not delivered; the link's task ends the rest
                    self.dropped.set()
                    return
                link.carried_after = link.carried_after or drop.after in data
            sink.write(data)
            await sink.drain()


@dataclass(frozen=True)
class _Drop:
    marker: bytes
    toward: Toward
    after: bytes


@dataclass
class _Link:
    carried_after: bool = False  # the armed drop's `after` has passed on this link


async def _first_done(*coros: Coroutine[Any, Any, None]) -> None:
    """Run both directions; when one ends (EOF or error), stop the other."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
