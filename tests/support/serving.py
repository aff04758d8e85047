"""An ASGI app under uvicorn on a free loopback port, on the test's own event loop.

httpx's ASGI transport buffers whole responses, so streams (SSE) and browsers need a real
socket; serving on the test's loop keeps the engine callable from the test directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def serving(
    app: Any, *, timeout: float = 10.0, grace: int = 5, options: dict[str, Any] | None = None
) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    """The running server and its base URL until the block ends (then shut down); `options`
    adds to uvicorn's config (e.g. `conveyor.api.connections.uvicorn_options`)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        ws="none",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace,
        **(options or {}),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(timeout):
            while not server.started:
                if task.done():  # it failed to start: say why
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
