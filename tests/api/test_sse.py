"""Server-sent events over a real socket (httpx's ASGI transport buffers whole responses, so
a stream needs a real server): a job's story in order, resuming without gaps or repeats,
and nobody seeing another user's events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.api import sse
from conveyor.domain.events import Position
from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.services.events import EventFeed, Scope, _largest
from conveyor.services.jobs import Submission
from tests.api.conftest import Api, api_settings
from tests.support.serving import serving

TIMEOUT = 10.0
STREAM = {"Accept": "text/event-stream"}


@dataclass(frozen=True)
class Message:
    id: str
    event: str
    data: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.data["job"]["id"])


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app under uvicorn on a free loopback port, a client for it, and a worker."""
    settings = api_settings(db_url, tmp_path)
    engine = await Engine.open(settings)
    worker = engine.worker(concurrency=4)
    working = asyncio.create_task(worker.run())
    try:
        async with serving(create_app(settings, engine=engine)) as (server, base):
            client = httpx.AsyncClient(
                base_url=base, headers=STREAM, timeout=TIMEOUT, trust_env=False
            )
            async with client:
                yield Api(client, engine, settings, Path(settings.mail_url.removeprefix("file://")))
            # Every stream the tests closed has ended on the server too (no request left
            # running).
            async with asyncio.timeout(TIMEOUT):
                while server.server_state.tasks:
                    await asyncio.sleep(0.02)
    finally:
        worker.stop(force=True)
        await working
        await engine.close()


async def messages(response: httpx.Response) -> AsyncGenerator[Message | str]:
    """The stream's messages, and its comments as strings."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield line[1:].strip()
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield Message(fields["id"], fields["event"], json.loads(fields["data"]))
            fields = {}


async def collect(
    response: httpx.Response, done: Callable[[list[Message]], bool] | None = None
) -> list[Message]:
    """Messages until `done` says so, or (without `done`) until the server ends the stream."""
    seen: list[Message] = []
    async with asyncio.timeout(TIMEOUT), aclosing(messages(response)) as items:
        async for item in items:
            if isinstance(item, Message):
                seen.append(item)
                if done is not None and done(seen):
                    return seen
    assert done is None, f"the stream ended early after {[m.event for m in seen]}"
    return seen


async def story(api: Api, url: str, headers: dict[str, str]) -> list[Message]:
    async with api.client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return await collect(response)


async def submit(api: Api, headers: dict[str, str], seconds: float = 0.0) -> str:
    body = {"type": "sleep", "payload": {"seconds": seconds, "steps": 2}}
    r = await api.client.post("/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def finished(api: Api, job_id: str, headers: dict[str, str]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while (await api.client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()[
            "state"
        ] != "completed":
            await asyncio.sleep(0.05)


async def visible(api: Api, job_id: str) -> None:
    """Until the job's last event can be read. A finished job's events are committed, but on
    PostgreSQL they are read only below the oldest open transaction of the whole server, so
    they may show a moment later; "now" is the newest event that can be read."""
    feed = EventFeed(api.engine.backend)
    async with asyncio.timeout(TIMEOUT):
        while not [
            e for e in await feed.read(Position(), Scope(job_id=job_id)) if e.type == "completed"
        ]:
            await asyncio.sleep(0.05)


def order(message: Message) -> tuple[int, ...]:
    return tuple(int(part) for part in message.id.split("."))


def completed(*job_ids: str) -> Callable[[list[Message]], bool]:
    def done(seen: list[Message]) -> bool:
        return set(job_ids) <= {m.job_id for m in seen if m.event == "completed"}

    return done


async def test_a_subscriber_sees_the_whole_story_in_order_and_the_stream_ends(live: Api) -> None:
    headers = await live.user("ada@example.com")
    job_id = await submit(live, headers, seconds=0.6)
    seen = await story(live, f"/api/v1/jobs/{job_id}/events", headers)

    kinds = [m.event for m in seen]
    assert kinds[:2] == ["created", "started"] and kinds[-1] == "completed", kinds
    assert set(kinds[2:-1]) == {"progress"}, kinds
    assert [m.data["job"]["state"] for m in seen[:2]] == ["queued", "running"]
    assert seen[-1].data["data"] == {"result": {"slept": 0.6, "attempt": 1}}
    assert seen[-2].data["data"]["percent"] == 100
    assert order(seen[0]) < order(seen[1]) < order(seen[-1])
    assert sorted(seen, key=order) == seen
    first = seen[0].data
    assert first["event_id"] == seen[0].id and first["type"] == "created" and first["at"]
    assert first["job"] == {
        "id": job_id,
        "type": "sleep",
        "queue": "default",
        "state": "queued",
        "attempt": 0,
    }


async def test_resuming_with_last_event_id_has_no_gaps_or_repeats(live: Api) -> None:
    headers = await live.user("ada@example.com")
    job_id = await submit(live, headers, seconds=0.6)
    url = f"/api/v1/jobs/{job_id}/events"
    async with live.client.stream("GET", url, headers=headers) as response:
        head = await collect(response, lambda seen: len(seen) == 2)  # then disconnect
    resumed = await story(live, url, {**headers, "Last-Event-ID": head[-1].id})
    whole = await story(live, url, headers)
    assert [m.id for m in head + resumed] == [m.id for m in whole]
    assert whole[-1].event == "completed"

    # `?after=` does the same; the header wins over it (a reconnecting EventSource sends both).
    by_query = await story(live, f"{url}?after={whole[0].id}", headers)
    assert by_query == whole[1:]
    both = await story(
        live, f"{url}?after={whole[0].id}", {**headers, "Last-Event-ID": head[-1].id}
    )
    assert both == resumed

    # After the end: 204, which stops an EventSource from reconnecting.
    done = await live.client.get(url, headers={**headers, "Last-Event-ID": whole[-1].id})
    assert done.status_code == 204

    # The all-jobs stream resumes the same way (this user has only this job).
    async with live.client.stream(
        "GET", "/api/v1/events", headers={**headers, "Last-Event-ID": whole[1].id}
    ) as response:
        rest = await collect(response, lambda seen: len(seen) == len(whole) - 2)
    assert rest == whole[2:]

    bad = await live.client.get(url, headers={**headers, "Last-Event-ID": "not-a-position"})
    assert bad.status_code == 422


async def test_users_see_only_their_own_events_and_admins_see_all(live: Api) -> None:
    ada, bob, admin = (
        await live.user("ada@example.com"),
        await live.user("bob@example.com"),
        await live.admin(),
    )
    earlier = await submit(live, ada)
    await finished(live, earlier, ada)
    await visible(live, earlier)

    async with AsyncExitStack() as streams:
        opened = [
            await streams.enter_async_context(
                live.client.stream("GET", "/api/v1/events", headers=h)
            )
            for h in (bob, admin)
        ]
        assert [r.status_code for r in opened] == [200, 200]
        adas = await submit(live, ada)
        await finished(live, adas, ada)
        bobs = await submit(live, bob)
        bob_seen, admin_seen = await asyncio.gather(
            collect(opened[0], completed(bobs)), collect(opened[1], completed(adas, bobs))
        )

    assert {m.job_id for m in bob_seen} == {bobs}  # none of ada's, though hers came first
    assert {m.job_id for m in admin_seen} == {adas, bobs}  # from "now": not `earlier`
    assert next(m.event for m in admin_seen if m.job_id == adas) == "created"

    # Ada's job is not Bob's to watch, nor to guess at; no token, no stream.
    assert (await live.client.get(f"/api/v1/jobs/{adas}/events", headers=bob)).status_code == 404
    admins = await story(live, f"/api/v1/jobs/{adas}/events", admin)
    assert admins[-1].event == "completed"
    for url in ("/api/v1/events", f"/api/v1/jobs/{adas}/events"):
        assert (await live.client.get(url)).status_code == 401
        # A client that does not ask for a stream would wait forever on one: 406 instead.
        plain = await live.client.get(url, headers={**ada, "Accept": "*/*"})
        assert plain.status_code == 406 and plain.json()["error"]["code"] == "not_acceptable"


async def test_a_quiet_stream_sends_keep_alive_comments(
    live: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.1)
    headers = await live.user("ada@example.com")
    async with (
        live.client.stream("GET", "/api/v1/events", headers=headers) as response,
        asyncio.timeout(TIMEOUT),
        aclosing(messages(response)) as items,
    ):
        first = await anext(items)
    assert first == "keep-alive"


async def test_now_is_the_newest_committed_position(api: Api) -> None:
    """`/events` starts at `EventFeed.head`, which searches rather than reads everything: it
    must land on the last event, whatever the gaps between transactions and ids."""
    feed = EventFeed(api.engine.backend, batch=7)
    assert await feed.head() == Position()
    for n in range(12):  # one transaction each: a new xid on PostgreSQL
        await api.engine.jobs.submit(Submission("noop"), owner_id=f"owner-{n % 3}")
    await api.engine.jobs.submit_many([Submission("noop")] * 9, owner_id="owner-1")  # one xid
    async with asyncio.timeout(TIMEOUT):  # until all can be read (see `visible`)
        while len(await feed.read(Position(), Scope(), limit=1000)) < 21:
            await asyncio.sleep(0.05)
    for owner in (None, "owner-0", "owner-1", "owner-2", "nobody"):
        everything = await feed.read(Position(), Scope(owner), limit=1000)
        newest = everything[-1].position if everything else Position()
        assert await feed.head(owner) == newest, owner


@pytest.mark.parametrize(
    "keys", [{0}, {5}, {1, 2, 3}, {3, 9, 10, 11, 300}, {7, 1000, 1001, 5000}, set(range(0, 99, 4))]
)
async def test_largest_key_search(keys: set[int]) -> None:
    async def at_least(k: int) -> int | None:
        return min((key for key in keys if key >= k), default=None)

    assert await _largest(at_least, min(keys)) == max(keys)
