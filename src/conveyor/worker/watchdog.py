"""A thread that watches the worker's event loop turn, and keeps its leases while it does not.

A handler that blocks the loop (an ``async def`` calling ``time.sleep``, a CPU-bound loop,
a sync driver) stops every task of the worker, the heartbeat with them. Without this its
leases ran out while the process was alive, the rescuer took back every job it held, and
innocent neighbours ran a second time elsewhere (issue 13 item 4).

The watchdog runs on its own OS thread, with its own small asyncio loop and its own database
connection (the store's one driver per database, a second engine of it opened on first
need): the main loop never has to turn for it. A task on the main loop marks each turn
(`turned`); the main heartbeat marks each renewal (`renewed`). When the loop has not turned
for `STALL_S` (1 s, less with a short lease), the watchdog names the blocking job (the
task the loop is running) and logs the stack the main thread is blocked in; while the
loop stays blocked it renews the leases itself every heartbeat interval, so nothing is
rescued from a worker that is merely slow.

A loop blocked for good must not hold its jobs for good: past `limit` seconds blocked the
watchdog stops renewing, says so, and the leases run out as a dead worker's would; the
rescuer then gives the jobs to other workers. If the loop turns again after that, the main
heartbeat finds the jobs gone and stops them ("lease lost"), and their late results are
fenced out as before.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.logs import job_context
from conveyor.metrics.families import WORKER_LOOP_BLOCKS
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend

log = logging.getLogger("conveyor.worker")

STALL_S = 1.0  # the loop not turning for this long is reported (asyncio's debug mode: 0.1 s),
# or a quarter of the lease if that is shorter: the first renewal must beat the lease
TURN_S = 0.1  # how often the main loop marks a turn
LOOK_S = 0.1  # how often the watchdog looks
STACK_FRAMES = 25  # innermost frames of the blocked stack in the log


@dataclass(frozen=True)
class Blocker:
    """What the loop is running while it does not turn: a job, or something else."""

    job_id: str | None
    job_type: str
    attempt: int

    def __str__(self) -> str:
        if self.job_id is None:
            return self.job_type
        return f"job {self.job_id} ({self.job_type}, attempt {self.attempt})"


class LoopWatchdog:
    """See the module docstring. `blocker` is called on the watchdog's thread, with the
    task the main loop is running (None outside any task), and names it."""

    def __init__(
        self,
        *,
        url: str,
        schema: str = "",
        worker_id: str,
        lease_s: float,
        heartbeat_interval: float,
        limit: float,
        blocker: Callable[[asyncio.Task[Any] | None], Blocker],
    ) -> None:
        self._url = url
        self._schema = schema
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._interval = heartbeat_interval
        self.limit = limit
        self._blocker = blocker
        now = time.monotonic()
        self.turned_at = now  # the main loop's last turn (written there, read here)
        self.renewed_at = now  # the start of the last renewal that succeeded, by either side
        self.renewals = 0  # renewals this thread made (for tests and the log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._main_thread = 0
        self._backend: QueueBackend | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._stall_start = now
        self._stall_s = min(STALL_S, lease_s / 4)
        self._next_try = now  # after a failed renewal, the next is tried a little later

    # ---- the main loop's side --------------------------------------------------------------
    def start(self) -> None:
        """Called on the worker's loop: that is the loop and the thread watched."""
        self._main_loop = asyncio.get_running_loop()
        self._main_thread = threading.get_ident()
        self.turned_at = self.renewed_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="loop-watchdog", daemon=True)
        self._thread.start()

    async def pulse(self) -> None:
        """The task that marks the loop's turns; runs until cancelled."""
        while True:
            self.turned_at = time.monotonic()
            await asyncio.sleep(TURN_S)

    def renewed(self, started: float) -> None:
        """The main heartbeat renewed the leases (in a statement begun at `started`)."""
        self.renewed_at = max(self.renewed_at, started)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)

    # ---- the watchdog's thread ---------------------------------------------------------------
    def _run(self) -> None:
        self._own_loop = asyncio.new_event_loop()
        try:
            self._watch()
        finally:
            if self._backend is not None:
                try:
                    self._own_loop.run_until_complete(self._backend.close())
                except Exception as exc:  # the process is stopping: say it, do not fail
                    log.debug("loop watchdog: closing its connection failed: %s", exc)
            self._own_loop.close()

    def _watch(self) -> None:
        blocked: Blocker | None = None  # reported, while the loop stays blocked
        gave_up = False
        while not self._stop.wait(LOOK_S):
            if self._main_loop is None or not self._main_loop.is_running():
                return  # the loop is gone, not blocked (its worker never stopped us)
            now = time.monotonic()
            stalled = now - self.turned_at
            if stalled < self._stall_s:
                if blocked is not None:
                    self._turned_again(blocked, now - self._stall_start, gave_up)
                    blocked, gave_up = None, False
                continue
            if blocked is None:
                self._stall_start = self.turned_at
                blocked = self._report(stalled)
            if stalled > self.limit:
                if not gave_up:
                    gave_up = True
                    log.error(
                        "event loop blocked for %.1f s (over the %.0f s limit) by %s: no longer "
                        "renewing this worker's leases; its jobs will be rescued by others",
                        stalled, self.limit, blocked,
                    )  # fmt: skip
                continue
            if now - self.renewed_at >= self._interval and now >= self._next_try:
                self._renew(now)

    def _report(self, stalled: float) -> Blocker:
        """Name what blocks the loop and log the stack the main thread is in."""
        loop = self._main_loop
        task = asyncio.current_task(loop) if loop is not None else None
        try:
            blocker = self._blocker(task)
        except Exception:  # naming it is best effort; the stack still says where
            blocker = Blocker(None, "an unknown task", 0)
        frame = sys._current_frames().get(self._main_thread)
        stack = "".join(traceback.format_stack(frame)[-STACK_FRAMES:]) if frame else "?\n"
        WORKER_LOOP_BLOCKS.inc()
        fields = (blocker.job_id, blocker.job_type, blocker.attempt) if blocker.job_id else None
        message = (
            "event loop blocked for %.1f s by %s (an async handler making a blocking call?); "
            "the watchdog keeps this worker's leases for up to %.0f s. Blocked in:\n%s"
        )
        if fields is None:
            log.warning(message, stalled, blocker, self.limit, stack.rstrip())
        else:
            with job_context(*fields):
                log.warning(message, stalled, blocker, self.limit, stack.rstrip())
        return blocker

    def _turned_again(self, blocker: Blocker, stalled_for: float, gave_up: bool) -> None:
        if gave_up:
            log.warning(
                "event loop turned again after %.1f s blocked by %s; its leases were given up",
                stalled_for, blocker,
            )  # fmt: skip
        else:
            log.warning(
                "event loop turned again after %.1f s blocked by %s; leases kept (%d renewals)",
                stalled_for, blocker, self.renewals,
            )  # fmt: skip

    def _renew(self, now: float) -> None:
        """One heartbeat on this thread's own connection; a failure waits for the next look."""
        assert self._own_loop is not None
        if self._backend is None:
            self._backend = open_backend(self._url, pool_size=1, schema=self._schema)
        try:
            self._own_loop.run_until_complete(
                asyncio.wait_for(
                    self._backend.heartbeat(self._worker_id, self._lease_s), self._lease_s
                )
            )
        except Exception as exc:
            log.warning("loop watchdog: renewing the leases failed: %r", exc)
            self._next_try = time.monotonic() + min(1.0, self._interval)
            return
        self.renewals += 1
        self.renewed_at = max(self.renewed_at, now)
        log.debug("loop watchdog renewed the leases of worker %s", self._worker_id)
