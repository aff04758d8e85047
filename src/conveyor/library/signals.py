"""Stopping a process's parts on SIGINT/SIGTERM: the first signal drains, the second forces.

Shared by the `conveyor` processes (cli/processes.py) and `conveyor.run`, the blocking entry
of a worker embedded in the user's own process, so both answer signals the same way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("conveyor.signals")
T = TypeVar("T")


async def until_signalled(stoppers: list[Callable[[bool], None]], main: Awaitable[T]) -> T:
    """Await `main`; each SIGINT/SIGTERM meanwhile calls every stopper with `force`: False
    the first time (graceful stop), True after that (stop at once)."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_signal() -> None:
        hits["n"] += 1
        log.info("signal received (%d); %s", hits["n"], "stopping" if hits["n"] == 1 else "forcing")
        for stop in stoppers:
            stop(hits["n"] > 1)

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        return await main
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
