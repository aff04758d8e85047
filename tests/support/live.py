"""A real Conveyor server on a free loopback port, running in a thread of its own.

The app runs under uvicorn with a worker and a scheduler on the thread's own event loop, so a
test can talk to it with blocking code (the sync client, a `conveyor` subprocess) as well as
from its own event loop (the async client). `LiveServer.run` runs a coroutine on the server's
loop, for setup that goes through the engine (users, API keys).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.services.accounts import User
from conveyor.settings import Settings
from tests.support.serving import serving

T = TypeVar("T")
START_TIMEOUT = 20.0
PASSWORD = "correct horse battery"


@dataclass
class LiveServer:
    url: str
    engine: Engine
    settings: Settings
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def user(self, email: str, password: str = PASSWORD, role: str = "user") -> User:
        """A verified account."""
        return self.run(self.engine.accounts.create_user(email, password, role, verified=True))

    def api_key(self, user: User, name: str = "tests") -> str:
        _record, key = self.run(self.engine.accounts.create_api_key(user, name))
        return key


@contextmanager
def live_server(settings: Settings, *, concurrency: int = 4) -> Iterator[LiveServer]:
    """The server, worker and scheduler until the block ends; then all stopped."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            asyncio.run(_serve(settings, concurrency, box, ready))
        except BaseException as exc:  # told to the test thread, which raises it
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=main, name="live-server", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT) or "error" in box:
        raise RuntimeError("the live server did not start") from box.get("error")
    server: LiveServer = box["server"]
    try:
        yield server
    finally:
        server.loop.call_soon_threadsafe(box["stop"].set)
        thread.join(START_TIMEOUT)
    if "error" in box:
        raise box["error"]


async def _serve(
    settings: Settings, concurrency: int, box: dict[str, Any], ready: threading.Event
) -> None:
    engine = await Engine.open(settings)
    worker, scheduler = engine.worker("*", concurrency), engine.scheduler()
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    try:
        async with serving(create_app(settings, engine=engine), grace=2) as (_server, url):
            box["server"] = LiveServer(url, engine, settings, asyncio.get_running_loop())
            box["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
    finally:
        worker.stop(force=True)
        scheduler.stop()
        await asyncio.gather(*tasks)
        await engine.close()
