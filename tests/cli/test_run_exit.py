"""`conveyor run`, a real OS process on SQLite, exits promptly on SIGTERM (issue #13 item 8).

It took seconds to exit after its worker had stopped, and an open event stream held it up
for good: uvicorn waited for every connection to close, and the interpreter's teardown came
after. The bound is generous for a loaded machine (CONVEYOR_HTTP_SHUTDOWN_GRACE is 1 s here);
before the fix the stream case never exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx
import pytest

from conveyor.domain.jobs import NewJob
from conveyor.store.factory import open_backend
from tests.net.world import free_port
from tests.support.processes import Cluster, eventually

pytestmark = pytest.mark.slow

ACCOUNT = {"email": "stream@example.com", "password": "a-password-long-enough-123"}


async def _stream(base: str, opened: asyncio.Event) -> None:
    """Hold the API's event stream open (as a dashboard or `jobs wait` does) until cut."""
    async with httpx.AsyncClient(base_url=base, timeout=60, trust_env=False) as http:
        assert (await http.post("/api/v1/auth/register", json=ACCOUNT)).status_code < 300
        token = (await http.post("/api/v1/auth/login", json=ACCOUNT)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with http.stream("GET", "/api/v1/events", headers=headers) as answer:
            assert answer.status_code == 200
            opened.set()
            async for _ in answer.aiter_lines():
                pass


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("streaming", [False, True], ids=["idle", "event-stream-open"])
async def test_conveyor_run_exits_soon_after_sigterm(
    db_url: str, tmp_path: Path, streaming: bool
) -> None:
    cluster = Cluster(db_url, tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        "port": str(port),
        "data_dir": str(tmp_path / "data"),
        "email_verification": "false",
        "http_shutdown_grace": "1",
    }
    proc = cluster.spawn("run", ["run"], settings)
    stream: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5, trust_env=False) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=60, what=f"conveyor run on port {port}")
        backend = open_backend(db_url)  # some work done first, as in real life
        try:
            await backend.enqueue([NewJob(type="record", payload={}) for _ in range(50)])
        finally:
            await backend.close()
        await eventually(lambda: len(cluster.runs("end")) >= 50, timeout=60, what="50 jobs")
        if streaming:
            opened = asyncio.Event()
            stream = asyncio.create_task(_stream(base, opened))
            await asyncio.wait_for(opened.wait(), 30)
        signalled = time.monotonic()
        proc.send(signal.SIGTERM)
        code = await proc.wait_exit(30)
        took = time.monotonic() - signalled
        assert code == 0, proc.output()
        assert took < 5.0, f"exited {took:.1f} s after SIGTERM\n{proc.output()}"
    finally:
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(BaseException):
                await stream
        cluster.close()
