"""The process pool of `executor="process"` handlers: it knows which child runs which job.

concurrent.futures' ProcessPoolExecutor marks itself broken for good when one child dies and
fails every pending call with `BrokenProcessPool`, without saying which call the dead child
ran (issue #13 item 3: one `os._exit` dead-lettered every later process job of the worker).
Here each child runs one call at a time, handed to it over its own pipe, so a death is
charged to the one call that was in that child: that call raises `ProcessDied` (with the exit
code or the signal), the child is replaced, and calls still waiting for a free child were
never started anywhere, so they lose nothing and simply run in the next free child.

Children are recycled after `max_tasks` calls, or once their peak resident memory exceeds
`max_memory_mb` (Celery's --max-tasks-per-child and --max-memory-per-child). A call whose
await is cancelled (timeout, cancel, lost lease, shutdown) kills its child: unlike a thread,
a process can be stopped, so a timed-out process job does not keep a child busy.

Children are started with `spawn` (no copy of the worker's event loop, connections or
threads) on first need, and ignore SIGINT: a terminal's Ctrl-C reaches the whole process
group, and the worker decides what becomes of its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from conveyor.metrics.families import PROCESS_CHILDREN_REPLACED

log = logging.getLogger("conveyor.worker")

_REAP_WAIT_S = 2.0  # a child whose pipe closed is given this long to exit, then killed
_BIG_MESSAGE = 64 * 1024  # larger calls are written from a thread: the child may be booting


@dataclass(frozen=True)
class ChildLimits:
    """When a child is replaced although it did nothing wrong; None: never."""

    max_tasks: int | None = None
    max_memory_mb: int | None = None


class ProcessDied(Exception):
    """The child running this call ended before answering (os._exit, a signal, OOM killer)."""

    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid = pid
        self.exitcode = exitcode
        super().__init__(f"the process-pool child (pid {pid}) running this job {_how(exitcode)}")


class ChildTraceback(Exception):
    """The traceback of an exception raised in a child, as the `__cause__` of its copy."""

    def __str__(self) -> str:
        return f"\n\n(in the process-pool child)\n{self.args[0]}"


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "ended without an exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {-exitcode} ({name})"
    return f"exited with code {exitcode}"


@dataclass
class _Reply:
    value: Any
    error: BaseException | None
    trace: str  # the child's formatted traceback of `error`
    rss_kb: int


class _Child:
    """One spawned process and the parent's end of its pipe."""

    def __init__(self, context: SpawnContext) -> None:
        self.conn, theirs = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=_serve, args=(theirs,), name="conveyor-process-job"
        )
        self.process.start()
        theirs.close()  # only the child holds it now: its death is an EOF here
        self.pid: int = self.process.pid or 0
        self.tasks = 0


class ProcessPool:
    """At most `size` children, one call each at a time; `run()` is called on one event loop."""

    def __init__(self, size: int | None = None, limits: ChildLimits | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        self.limits = limits or ChildLimits()
        self._context = multiprocessing.get_context("spawn")
        self._slots: asyncio.Semaphore | None = None  # made on the loop that first runs a call
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._reapers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> set[int]:
        """The children alive now (idle or busy)."""
        return {c.pid for c in (*self._idle, *self._busy)}

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)` in a child; its exception is re-raised here, its death is ProcessDied."""
        data = bytes(ForkingPickler.dumps((func, args)))  # unpicklable: the call's own error
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:  # waiting here, a call has started nowhere
            child = self._checkout()
            self._busy.add(child)
            try:
                reply = await self._call(child, data)
            finally:
                self._busy.discard(child)
            self._checkin(child, reply.rss_kb)
        if reply.error is not None:
            reply.error.__cause__ = ChildTraceback(reply.trace)
            raise reply.error
        return reply.value

    def _checkout(self) -> _Child:
        if self._closed:
            raise RuntimeError("the process pool is shut down")
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            log.warning(
                "process-pool child (pid %d) %s while idle; replacing it",
                child.pid,
                _how(child.process.exitcode),
            )
            PROCESS_CHILDREN_REPLACED.labels("died").inc()
            child.conn.close()
        return _Child(self._context)

    async def _call(self, child: _Child, data: bytes) -> _Reply:
        try:
            if len(data) > _BIG_MESSAGE:
                await asyncio.to_thread(child.conn.send_bytes, data)
            else:
                child.conn.send_bytes(data)
            await _readable(child.conn)
            answer = child.conn.recv_bytes()
        except (EOFError, OSError):
            raise await self._died(child) from None
        except BaseException:  # cancelled (timeout, cancel, shutdown): the work stops with it
            self._discard(child, kill=True)
            PROCESS_CHILDREN_REPLACED.labels("stopped").inc()
            raise
        try:
            kind, value, trace, peak = ForkingPickler.loads(answer)
        except Exception as exc:  # e.g. an exception class whose __init__ takes other args
            error = TypeError(f"the handler's answer could not be read in the worker: {exc!r}")
            return _Reply(None, error, "", 0)
        if kind == "ok":
            return _Reply(value, None, "", peak)
        return _Reply(None, value, trace, peak)

    async def _died(self, child: _Child) -> ProcessDied:
        """The pipe closed under a running call: wait for the exit status, charge the call."""
        child.conn.close()
        await asyncio.to_thread(_reap, child.process)  # one that closed its end lives on: killed
        PROCESS_CHILDREN_REPLACED.labels("died").inc()
        died = ProcessDied(child.pid, child.process.exitcode)
        log.warning("%s; replacing it", died)
        return died

    def _checkin(self, child: _Child, rss_kb: int) -> None:
        child.tasks += 1
        limits = self.limits
        if limits.max_tasks is not None and child.tasks >= limits.max_tasks:
            reason = "recycled_tasks"
        elif limits.max_memory_mb is not None and rss_kb > limits.max_memory_mb * 1024:
            reason = "recycled_memory"
        elif not self._closed:
            self._idle.append(child)
            return
        else:
            reason = "shutdown"
        log.debug("letting process-pool child (pid %d) go: %s", child.pid, reason)
        PROCESS_CHILDREN_REPLACED.labels(reason).inc()
        self._discard(child, kill=False)

    def _discard(self, child: _Child, *, kill: bool) -> None:
        """Let the child go (its pipe's EOF ends an idle child) and reap it off the loop."""
        if kill:
            with contextlib.suppress(OSError):
                child.process.kill()
        child.conn.close()
        reaper = asyncio.get_running_loop().create_task(asyncio.to_thread(_reap, child.process))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    def shutdown(self) -> None:
        """End every child: idle ones see their pipe close, busy ones are killed."""
        self._closed = True
        children = [*self._idle, *self._busy]
        self._idle.clear()
        for child in children:
            child.conn.close()
            if child in self._busy:
                with contextlib.suppress(OSError):
                    child.process.kill()
        self._busy.clear()
        for child in children:
            _reap(child.process)


def _reap(process: SpawnProcess) -> None:
    """Wait for an ending child; one that does not end is killed."""
    process.join(_REAP_WAIT_S)
    if process.is_alive():
        process.kill()
        process.join()


async def _readable(conn: Connection) -> None:
    """Until the child answers or its end of the pipe closes (both make it readable)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


# ---- in the child ------------------------------------------------------------------------------
def _serve(conn: Connection) -> None:
    """A child's life: read a call, run it, answer `(kind, value, traceback, rss_kb)`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return  # the worker let this child go
        try:
            func, args = ForkingPickler.loads(data)
            reply: tuple[Any, ...] = ("ok", func(*args), "")
        except BaseException as exc:  # SystemExit in a handler is its error, not the child's
            reply = ("error", exc, "".join(traceback.format_exception(exc)))
        try:
            conn.send((*reply, _rss_kb()))
        except Exception as exc:  # the result or the exception does not pickle
            what = "result" if reply[0] == "ok" else "exception"
            error = TypeError(f"the handler's {what} cannot be sent back to the worker: {exc!r}")
            conn.send(("error", error, reply[2], _rss_kb()))


def _rss_kb() -> int:
    """The child's own peak resident memory: Linux's VmHWM, which starts afresh at exec. Not
    ru_maxrss: on Linux that carries the forking parent's resident size across exec, so a
    worker above the limit recycled every child after every job. Elsewhere (macOS, no
    /proc) ru_maxrss, in bytes there."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
