"""The outbox relay: every event, in order, to every sink, surviving crashes and outages.

One lane per sink (lane.py) so a sink that is down delays only itself; a periodic prune
deletes events every configured sink has delivered once they are past retention. Any number
of relay processes may run: each sink is served by one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from conveyor.domain.clock import utcnow
from conveyor.events.config import RelayConfig
from conveyor.events.lane import Lane
from conveyor.events.sinks import Serving, Sink
from conveyor.store.backend import QueueBackend

log = logging.getLogger("conveyor.events.relay")


class Relay:
    """`run()` until `stop()`; it closes its sinks when it ends."""

    def __init__(
        self, backend: QueueBackend, sinks: Sequence[Sink], config: RelayConfig | None = None
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must differ (they key the cursors): {names}")
        self.backend = backend
        self.sinks = list(sinks)
        self.config = config or RelayConfig()
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self.lanes = [Lane(backend, s, self.config, self.id, self._stopping) for s in sinks]

    def stop(self) -> None:
        self._stopping.set()
        for lane in self.lanes:
            lane.wake()

    async def run(self) -> int:
        """0 after `stop()`; 1 if a lane ended on its own (a bug: better a visible exit)."""
        log.info("relay %s started; sinks: %s", self.id, ", ".join(s.name for s in self.sinks))
        tasks = [
            asyncio.create_task(lane.run(), name=f"relay:{lane.sink.name}") for lane in self.lanes
        ]
        tasks.append(asyncio.create_task(self._prune_forever(), name="relay:prune"))
        tasks += [  # sinks with work of their own (the webhooks dispatcher), in every process
            asyncio.create_task(sink.serve(self._stopping), name=f"relay:{sink.name}:serve")
            for sink in self.sinks
            if isinstance(sink, Serving)
        ]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return 0
            log.error("relay %s: %s ended unexpectedly; stopping", self.id, _names(done))
            return 1
        finally:
            self._stopping.set()
            await _finish([*tasks, stopping], self.config.grace)
            for sink in self.sinks:
                await _close(sink, self.config.grace)
            log.info("relay %s stopped", self.id)

    async def prune(self) -> int:
        """Delete events past retention that every sink in use has delivered: those
        configured here, and any other whose cursor moved within the retention (a sink
        configured in another relay process). The scheduler prunes the same way. Slice by
        slice, each a short transaction; this task delays nothing else of the relay.
        """
        before = utcnow() - timedelta(seconds=self.config.retention)
        sinks = [sink.name for sink in self.sinks]
        pruned = await self.backend.prune_events(before, sinks, self.config.prune_batch)
        if pruned:
            log.info("pruned %d delivered events", pruned)
        return pruned

    async def _prune_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.prune()
            except Exception as exc:
                log.warning("pruning events failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.prune_every):
                    await self._stopping.wait()


async def _finish(tasks: Sequence[asyncio.Task[Any]], grace: float) -> None:
    """Let a delivery under way end (fewer duplicates after a restart), then cancel.

    A stop takes two graces at most: a task still running a grace after its cancel (a
    client library that swallows `CancelledError`) is left behind, said at ERROR with where
    it was, and the process goes on to exit rather than hang (CI once saw a relay's stop
    outlast ten seconds)."""
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=grace)
        for task in stuck:
            log.error(
                "relay task %s did not stop within %.1fs of its cancel; left behind at:\n%s",
                task.get_name(), grace, _where(task),
            )  # fmt: skip
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("relay task %s failed", task.get_name(), exc_info=task.exception())


async def _close(sink: Sink, grace: float) -> None:
    """Close `sink` within `grace`; a failure or a hang is said, and the stop goes on."""
    try:
        async with asyncio.timeout(grace):
            await sink.close()
    except TimeoutError:
        log.error("closing sink %s took over %.1fs; given up", sink.name, grace)
    except Exception as exc:
        log.warning("closing sink %s failed: %s: %s", sink.name, type(exc).__name__, exc)


# A coroutine's, a generator's (an awaitable's `__await__`), an async generator's.
_FRAME = ("cr_frame", "gi_frame", "ag_frame")
_AWAIT = ("cr_await", "gi_yieldfrom", "ag_await")


def _where(task: asyncio.Task[Any]) -> str:
    """The awaits `task` is suspended in, outermost first (`Task.print_stack` shows only
    the outermost frame of a suspended coroutine)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = next((getattr(awaited, a) for a in _FRAME if getattr(awaited, a, None)), None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = next((getattr(awaited, a) for a in _AWAIT if getattr(awaited, a, None)), None)
    return "\n".join(lines) or f"  {task!r}"


def _names(tasks: Iterable[asyncio.Task[Any]]) -> str:
    return ", ".join(sorted(task.get_name() for task in tasks))
