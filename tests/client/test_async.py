"""The asyncio client against a real server and worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest

from conveyor.client import (
    AsyncClient,
    ConnectionFailed,
    JobEvent,
    NotFound,
    Progress,
    RetryPolicy,
    Tokens,
    ValidationFailed,
)
from conveyor.domain.states import JobState
from tests.client.conftest import AsyncCounting, Login, Proxy
from tests.support.live import LiveServer


async def signed_in(server: LiveServer, who: Login, **options: object) -> AsyncClient:
    client = AsyncClient(server.url, **options)  # type: ignore[arg-type]
    await client.login(who.email, who.password)
    return client


async def test_submit_list_wait_with_progress(server: LiveServer, ada: Login) -> None:
    async with await signed_in(server, ada) as c:
        batch = await c.submit_many(
            [{"type": "sleep", "payload": {"seconds": 0}, "delay": 3600} for _ in range(5)]
        )
        listed = [job.id async for job in c.list(page_size=2)]
        assert listed == [j.id for j in reversed(batch)]
        assert [j.id async for j in c.list(state=["scheduled"], limit=3)] == listed[:3]

        job = await c.submit("sleep", {"seconds": 0.4, "steps": 4})
        seen: list[Progress] = []
        done = await c.wait(job.id, timeout=20, on_progress=seen.append)
        assert done.state is JobState.COMPLETED and seen[-1].percent == 100
        assert (await c.result(job.id)).result == {"slept": 0.4, "attempt": 1}
        events = [e.type async for e in c.watch(job.id, timeout=10)]
        assert events[0] == "created" and events[-1] == "completed"

        cancelled = await c.cancel(batch[0].id)
        assert cancelled.state is JobState.CANCELLED
        await c.delete(batch[0].id)
        with pytest.raises(NotFound):
            await c.get(batch[0].id)
        with pytest.raises(ValidationFailed) as bad:
            await c.submit("sleep", {"seconds": "soon"})
        assert bad.value.field_errors[0].loc == ("seconds",)


async def test_wait_resumes_after_the_connection_drops(
    server: LiveServer, ada: Login, proxy: Proxy
) -> None:
    async with AsyncClient(proxy.url) as c:
        await c.login(ada.email, ada.password)
        job = await c.submit("sleep", {"seconds": 1.0, "steps": 5})
        events: list[JobEvent] = []

        cuts: list[int] = []

        def cut_once(progress: Progress) -> None:
            if not cuts:  # at the first report (quick ones may be coalesced: not always 20%)
                cuts.append(progress.percent)
                proxy.drop()  # the stream breaks in the middle of the job

        done = await c.wait(job.id, timeout=30, on_progress=cut_once, on_event=events.append)
        assert done.state is JobState.COMPLETED
        whole = [e async for e in c.watch(job.id, timeout=10)]
        assert [e.event_id for e in events] == [e.event_id for e in whole]
        assert cuts and proxy.accepted >= 2


async def test_concurrent_calls_refresh_the_token_once(server: LiveServer, ada: Login) -> None:
    tokens = server.engine.accounts.tokens
    tokens.access_ttl, tokens.leeway = timedelta(seconds=3), timedelta(0)
    renewed: list[Tokens] = []
    async with await signed_in(server, ada, on_tokens=renewed.append) as c:
        job = await c.submit("noop")
        await asyncio.sleep(4.1)
        got = await asyncio.gather(*(c.get(job.id) for _ in range(5)))
        assert {j.id for j in got} == {job.id}
        # One refresh for all five: a refresh token presented twice would end the login.
        assert len(renewed) == 2
        assert (await c.get(job.id)).id == job.id


async def test_connection_errors_are_retried_for_idempotent_calls_only() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    counting = AsyncCounting()
    policy = RetryPolicy(attempts=3, backoff=0.01)
    async with AsyncClient(url, api_key="cvk_x", retry=policy, transport=counting) as c:
        with pytest.raises(ConnectionFailed):
            await c.list_schedules()
        with pytest.raises(ConnectionFailed):
            await c.cancel("some-id")
    assert counting.sent == ["GET /api/v1/schedules"] * 3 + ["POST /api/v1/jobs/some-id/cancel"]
