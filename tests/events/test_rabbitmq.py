"""The RabbitMQ sink on the real broker: exactly the created and completed events arrive,
also when `conveyor results` is killed midway and restarted (both databases)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL

from conveyor.domain import events as ev
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState
from conveyor.events import Relay, RelayConfig
from conveyor.events.rabbitmq import EXCHANGE, QUEUES, RabbitMQSink
from conveyor.events.schema import SCHEMA
from conveyor.runtime import Engine
from conveyor.store.backend import QueueBackend
from tests.api.conftest import api_settings
from tests.events.conftest import Broker, Cuttable, finished_jobs, visible_events
from tests.support.processes import Cluster, eventually

pytestmark = pytest.mark.rabbitmq


def wanted(events: list[ev.Event]) -> dict[str, list[str]]:
    """The ids each contract queue must carry, in relay order: created events, and those of
    every finished job (completed, failed, cancelled)."""
    return {
        queue: [str(e.id) for e in events if f"jobs.{e.type}" in keys]
        for queue, keys in QUEUES.items()
    }


async def received(broker: Broker) -> dict[str, list[AbstractIncomingMessage]]:
    return {key: await broker.drain(key) for key in ("jobs.created", "jobs.completed")}


def check_message(message: AbstractIncomingMessage, queue: str) -> None:
    body = json.loads(message.body)
    assert message.message_id == str(body["event_id"])  # the dedupe key, on every copy
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    key = f"jobs.{body['type']}"
    assert body["schema"] == SCHEMA and key in QUEUES[queue]
    assert message.routing_key == message.type == key  # the distinct key stays
    assert set(body["job"]) == {"id", "type", "queue", "owner_id", "state", "attempt"}


async def caught_up(backend: QueueBackend, last: ev.Position) -> None:
    """The sink's cursor at `last` or past it: events that became readable after `last` was
    read (the outbox's horizon moves as other transactions end) may be relayed too."""

    async def there() -> bool:
        at = await backend.cursor("rabbitmq")
        return (at.xid, at.id) >= (last.xid, last.id)

    await eventually(there, timeout=30, what="the RabbitMQ sink's cursor to reach the end")


@contextlib.asynccontextmanager
async def relaying(backend: QueueBackend, broker: Broker) -> AsyncIterator[Relay]:
    sink = RabbitMQSink(broker.url, prefix=broker.prefix)
    relay = Relay(backend, [sink], RelayConfig(poll_interval=0.05, batch=50, lease_ttl=0.5))
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_consumer_gets_exactly_the_created_and_completed_events(
    backend: QueueBackend, broker: Broker
) -> None:
    await finished_jobs(backend, 40)
    events = await visible_events(backend, 40)
    async with relaying(backend, broker):
        await caught_up(backend, events[-1].position)
    got = await received(broker)
    for queue, ids in wanted(events).items():
        assert [m.message_id for m in got[queue]] == ids  # in order, once
        for message in got[queue]:
            check_message(message, queue)
    completed = json.loads(got["jobs.completed"][0].body)
    assert completed["data"] == {"result": {"ok": completed["job"]["id"]}}
    assert completed["job"]["state"] == "completed" and completed["job"]["attempt"] == 1


async def test_every_finished_job_reaches_the_completed_queue(
    backend: QueueBackend, broker: Broker
) -> None:
    """Completed, failed and cancelled alike (CONTRACTS.md 001), each saying how it ended."""
    done, failing, cancelled = (
        m.id for m in await backend.enqueue([NewJob(type="noop", payload={}) for _ in range(3)])
    )
    await backend.cancel(cancelled)
    claimed = {c.id: c for c in await backend.claim("w", ["default"], 2, 30)}
    outcomes = [
        Outcome(done, claimed[done].attempt, "completed", result={"ok": True}),
        Outcome(failing, claimed[failing].attempt, "failed", error=ErrorInfo("Boom", "it broke")),
    ]
    assert await backend.finish("w", outcomes) == {done, failing}
    events: list[ev.Event] = []

    async def all_there() -> bool:  # 3 created, 2 started, 3 finished
        events[:] = await backend.read_events(ev.Position(), 100)
        return len(events) == 8

    await eventually(all_there, timeout=30, what="the 8 events")
    async with relaying(backend, broker):
        await caught_up(backend, events[-1].position)
    got = await received(broker)
    assert [m.message_id for m in got["jobs.completed"]] == wanted(events)["jobs.completed"]
    bodies = {}
    for message in got["jobs.completed"]:
        check_message(message, "jobs.completed")
        body = json.loads(message.body)
        bodies[body["job"]["id"]] = body
    assert {job: (b["type"], b["job"]["state"]) for job, b in bodies.items()} == {
        done: ("completed", "completed"),
        failing: ("failed", "failed"),
        cancelled: ("cancelled", "cancelled"),
    }
    assert bodies[done]["data"] == {"result": {"ok": True}}
    assert bodies[failing]["data"] == {"error": {"type": "Boom", "message": "it broke"}}
    assert bodies[cancelled]["data"] == {}
    assert len(got["jobs.created"]) == 3


class Producer:
    """Finishes two jobs every 20 ms while `running()`."""

    def __init__(self, backend: QueueBackend) -> None:
        self.backend = backend
        self.made = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        on = asyncio.Event()
        on.set()

        async def produce() -> None:
            while on.is_set():
                await finished_jobs(self.backend, 2)
                self.made += 2
                await asyncio.sleep(0.02)

        task = asyncio.create_task(produce())
        try:
            yield
        finally:
            on.clear()
            await task


async def test_a_dropped_connection_is_reopened_and_nothing_is_lost(
    backend: QueueBackend, broker: Broker
) -> None:
    url = URL(broker.url)
    proxy = Cuttable(url.host or "127.0.0.1", url.port or 5672)
    await proxy.start()
    sink = RabbitMQSink(str(url.with_port(proxy.port)), prefix=broker.prefix)
    relay = Relay(backend, [sink], RelayConfig(poll_interval=0.05, backoff_max=0.5, lease_ttl=0.5))
    task = asyncio.create_task(relay.run())
    try:
        await finished_jobs(backend, 10)
        await caught_up(backend, (await visible_events(backend, 10))[-1].position)
        proxy.cut()
        await finished_jobs(backend, 10)
        events = await visible_events(backend, 20)
        await caught_up(backend, events[-1].position)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await proxy.close()
    got = await received(broker)
    for queue, ids in wanted(events).items():
        assert {m.message_id for m in got[queue]} == set(ids)


@pytest.mark.slow
async def test_a_killed_relay_loses_nothing_and_repeats_only_across_the_crash(
    backend: QueueBackend, broker: Broker, cluster: Cluster
) -> None:
    batch = 10
    settings = {
        "amqp_url": broker.url,
        "amqp_prefix": broker.prefix,
        "relay_batch": str(batch),
        "relay_poll_interval": "0.05",
        "relay_lease_seconds": "1",  # SQLite: the dead relay's lease ends soon
    }
    seen: Counter[str] = Counter()
    copies: dict[str, bytes] = {}

    async def consume() -> int:
        for queue, messages in (await received(broker)).items():
            for message in messages:
                check_message(message, queue)
                assert copies.setdefault(str(message.message_id), message.body) == message.body
                seen[str(message.message_id)] += 1
        return len(seen)

    async def consume_until(count: int) -> bool:
        return await consume() >= count

    producer = Producer(backend)
    await finished_jobs(backend, 50)  # waiting before any relay runs
    first = cluster.spawn("results-1", ["results"], settings)
    await eventually(lambda: consume_until(1), timeout=60, what="the first relay to start")
    async with producer.running():  # it is relaying a stream of events when it dies
        await eventually(lambda: consume_until(100), timeout=30, what="some messages")
        first.send(signal.SIGKILL)
        assert await first.wait_exit(10) == -signal.SIGKILL
        await asyncio.sleep(0.3)  # and jobs go on finishing with no relay at all
    second = cluster.spawn("results-2", ["results"], settings)
    async with producer.running():
        target = len(seen) + 50
        await eventually(lambda: consume_until(target), timeout=60, what="the new relay")
    events = await visible_events(backend, 50 + producer.made)
    await caught_up(backend, events[-1].position)
    second.send(signal.SIGTERM)
    assert await second.wait_exit(15) == 0
    await consume()

    expected = {i for ids in wanted(events).values() for i in ids}
    assert set(seen) == expected  # every created and completed event, nothing else
    repeated = sorted((int(i) for i, n in seen.items() if n > 1))
    print(f"{50 + producer.made} jobs, {len(seen)} messages, repeated after the crash: {repeated}")
    assert max(seen.values()) <= 2
    # Only what the killed relay published but had not yet recorded: within one batch.
    assert len(repeated) <= batch, repeated
    if repeated:
        window = [e.id for e in events]
        assert window.index(repeated[-1]) - window.index(repeated[0]) < batch


async def test_a_workflows_end_is_published_as_workflows_state(
    db_url: str, tmp_path: Path, broker: Broker
) -> None:
    """A consumer bound to `workflows.#` gets the workflow's settled event; the contract
    queues (jobs.created, jobs.completed) get only the steps' own events."""
    exchange = await broker.channel.get_exchange(f"{broker.prefix}{EXCHANGE}")
    mine = await broker.channel.declare_queue(f"{broker.prefix}workflows", durable=True)
    await mine.bind(exchange, routing_key="workflows.#")
    engine = await Engine.open(api_settings(db_url, tmp_path))
    try:
        spec = WorkflowSpec(
            "pair", (StepSpec("a", "noop"), StepSpec("b", "noop", depends_on=("a",)))
        )
        user = await engine.accounts.create_user("ada@example.com", "correct horse battery")
        wid = (await engine.workflows.submit(spec, owner_id=user.id)).workflow.id

        async def settled() -> bool:
            await engine.worker("default", concurrency=2, burst=True).run()
            return (await engine.workflows.get(wid)).workflow.state is WorkflowState.COMPLETED

        await eventually(settled, timeout=30, what="the workflow to complete")
        events: list[ev.Event] = []

        async def readable() -> bool:
            # Below the outbox's horizon: a transaction of another test's database that
            # has just taken its id can hold the horizon below our last commit a moment.
            events[:] = await engine.backend.read_events(ev.Position(), 100)
            return any(e.type == "workflow" and e.job_id == wid for e in events)

        await eventually(readable, timeout=30, what="the workflow's event to be readable")
        async with relaying(engine.backend, broker):
            await caught_up(engine.backend, events[-1].position)
        got = await broker.drain("workflows")
        (message,) = got
        assert message.routing_key == message.type == "workflows.completed"
        body = json.loads(message.body)
        assert body["type"] == "workflow" and body["job"]["id"] == wid
        assert body["workflow"]["name"] == "pair" and body["workflow"]["state"] == "completed"
        finished = await broker.drain("jobs.completed")
        assert {json.loads(m.body)["type"] for m in finished} == {"completed"}
        assert len(finished) == 2  # the two steps, not the workflow
    finally:
        await broker.channel.queue_delete(f"{broker.prefix}workflows")
        await engine.close()
