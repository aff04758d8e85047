"""The relay on both databases, with test sinks: order, resume, outages, pruning, many relays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from conveyor.domain import events as ev
from conveyor.events import Relay, RelayConfig, Sink
from conveyor.events.rabbitmq import RabbitMQSink
from conveyor.store.backend import QueueBackend
from tests.events.conftest import (
    Recorder,
    all_events,
    closed_port,
    finished_jobs,
    visible_events,
)
from tests.support.processes import eventually

FAST = RelayConfig(
    poll_interval=0.02, backoff_initial=0.01, backoff_max=0.05, lease_ttl=0.3, grace=2
)


@asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    """The relay runs in the block, and stops cleanly at its end: no task it had to leave
    behind (which it would log with where that task waited)."""
    said = _Said()
    logging.getLogger("conveyor.events.relay").addHandler(said)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        try:
            assert await asyncio.wait_for(task, 10) == 0
        finally:
            logging.getLogger("conveyor.events.relay").removeHandler(said)
        assert not said.errors, "\n".join(said.errors)


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage())


def relay_of(backend: QueueBackend, *sinks: Sink, config: RelayConfig = FAST) -> Relay:
    return Relay(backend, sinks, config)


def ids(events: Sequence[ev.Event]) -> list[int]:
    return [event.id for event in events]


def caught_up(recorders: Sequence[Recorder], ids: list[int]) -> Callable[[], bool]:
    return lambda: all(sorted(set(r.ids)) == sorted(ids) for r in recorders)


async def test_every_sink_gets_every_event_in_order_once(backend: QueueBackend) -> None:
    await finished_jobs(backend, 30)
    a, b = Recorder("a"), Recorder("b")
    config = RelayConfig(poll_interval=0.02, batch=7, lease_ttl=0.3, grace=2)
    async with running(relay_of(backend, a, b, config=config)):
        expected = ids(await visible_events(backend, 30))
        await eventually(caught_up([a, b], expected), timeout=10, what="both sinks")
        await finished_jobs(backend, 5)  # and what happens while it runs
        expected = ids(await visible_events(backend, 35))
        await eventually(caught_up([a, b], expected), timeout=10, what="the new events")
    assert a.ids == b.ids == expected  # in order, each once
    assert max(len(batch) for batch in a.batches) == 7
    assert a.closed and b.closed
    last = (await all_events(backend))[-1].position
    assert await backend.cursor("a") == await backend.cursor("b") == last


async def test_a_sink_that_is_down_is_retried_while_the_others_go_on(
    backend: QueueBackend,
) -> None:
    await finished_jobs(backend, 10)
    expected = ids(await visible_events(backend, 10))
    down = RabbitMQSink(f"amqp://guest:guest@127.0.0.1:{closed_port()}/", confirm_timeout=1)
    flaky, healthy = Recorder("flaky", failures=3), Recorder("healthy")
    relay = relay_of(backend, down, flaky, healthy)
    async with running(relay):
        await eventually(caught_up([flaky, healthy], expected), timeout=10, what="the others")
        await eventually(lambda: relay.lanes[0].failures >= 3, timeout=10, what="retries")
    assert flaky.ids == healthy.ids == expected  # the failed attempts delivered nothing twice
    assert flaky.attempts > 3
    assert await backend.cursor("rabbitmq") == ev.Position()  # nothing claimed as delivered


async def test_a_sink_that_hangs_is_given_up_on_and_retried(backend: QueueBackend) -> None:
    await finished_jobs(backend, 3)
    expected = ids(await visible_events(backend, 3))
    stuck = Recorder("stuck", hangs=2)
    config = RelayConfig(poll_interval=0.02, backoff_initial=0.01, deliver_timeout=0.2, grace=2)
    async with running(relay_of(backend, stuck, config=config)):
        await eventually(caught_up([stuck], expected), timeout=10, what="the stuck sink")
    assert stuck.ids == expected and stuck.attempts == 3


async def test_backoff_doubles_up_to_its_cap(backend: QueueBackend) -> None:
    config = RelayConfig(backoff_initial=0.5, backoff_max=30)
    lane = relay_of(backend, Recorder(), config=config).lanes[0]
    waits = []
    for failures in range(1, 10):
        lane.failures = failures
        waits.append(lane.backoff())
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


async def test_a_restarted_relay_resumes_at_each_sinks_cursor(backend: QueueBackend) -> None:
    await finished_jobs(backend, 4)
    first = Recorder("r")
    async with running(relay_of(backend, first)):
        before = ids(await visible_events(backend, 4))
        await eventually(caught_up([first], before), timeout=10, what="the first relay")
    await finished_jobs(backend, 3)
    second = Recorder("r")
    async with running(relay_of(backend, second)):
        after = ids(await visible_events(backend, 7))[len(before) :]
        await eventually(caught_up([second], after), timeout=10, what="the second relay")
    assert second.ids == after  # nothing again, nothing skipped


async def test_pruning_keeps_what_any_sink_has_not_delivered(backend: QueueBackend) -> None:
    await finished_jobs(backend, 5)
    expected = ids(await visible_events(backend, 5))
    config = RelayConfig(poll_interval=0.02, backoff_max=0.05, lease_ttl=0.3, retention=0, grace=2)
    fine, down = Recorder("fine"), Recorder("down", failures=10**6)
    async with running(relay_of(backend, fine, down, config=config)) as relay:
        await eventually(caught_up([fine], expected), timeout=10, what="the healthy sink")
        assert await relay.prune() == 0
    assert ids(await all_events(backend)) == expected
    # Within retention nothing goes, delivered or not.
    back = Recorder("down")
    kept = RelayConfig(poll_interval=0.02, lease_ttl=0.3, grace=2)
    async with running(relay_of(backend, fine, back, config=kept)) as relay:
        await eventually(caught_up([back], expected), timeout=10, what="the recovered sink")
        assert await relay.prune() == 0
    # Past retention and delivered everywhere: gone.
    assert await relay_of(backend, fine, back, config=config).prune() == len(expected)
    assert await all_events(backend) == []


async def test_several_relays_deliver_each_event_once(backend: QueueBackend) -> None:
    first, second = Recorder("shared"), Recorder("shared")
    # A lease long enough that a busy machine's pauses never let it lapse (SQLite).
    config = RelayConfig(poll_interval=0.02, lease_ttl=3, grace=2)
    one, two = relay_of(backend, first, config=config), relay_of(backend, second, config=config)
    async with running(one), running(two):
        for _ in range(5):
            await finished_jobs(backend, 3)
            await asyncio.sleep(0.05)
        expected = ids(await visible_events(backend, 15))
        await eventually(
            lambda: sorted(first.ids + second.ids) == expected, timeout=10, what="every event"
        )
        holder, standby = (one, two) if one.lanes[0].held else (two, one)
        assert not standby.lanes[0].held
        holder.stop()  # releases the lock: the other takes over
        await finished_jobs(backend, 3)
        expected = ids(await visible_events(backend, 18))
        await eventually(
            lambda: sorted(first.ids + second.ids) == expected, timeout=10, what="the takeover"
        )
    assert first.ids and second.ids
    assert len(set(first.ids) & set(second.ids)) == 0  # normally once


async def test_sink_names_must_differ(backend: QueueBackend) -> None:
    with pytest.raises(ValueError, match="sink names"):
        relay_of(backend, Recorder("x"), Recorder("x"))


@dataclass
class Stubborn(Recorder):
    """A sink whose delivery ignores its cancel until `let_go`, and whose close hangs: a
    client library that swallows `CancelledError`."""

    let_go: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(self, events: Sequence[ev.Event]) -> None:
        self.attempts += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.let_go.wait()
            raise

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_stop_ends_within_its_bound_whatever_a_sink_does(
    backend: QueueBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery that ignores its cancel and a close that never returns delay a stop by
    two graces at most; the relay says which task it left behind, and where it was."""
    await finished_jobs(backend, 1)
    sink = Stubborn("stubborn")
    config = RelayConfig(poll_interval=0.02, lease_ttl=0.3, grace=0.3)
    relay = relay_of(backend, sink, config=config)
    task = asyncio.create_task(relay.run())
    await eventually(lambda: sink.attempts > 0, timeout=10, what="a delivery under way")
    relay.stop()
    assert await asyncio.wait_for(task, 10) == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("relay:stubborn did not stop" in line and "deliver" in line for line in said)
    assert any("closing sink stubborn" in line for line in said)
    sink.let_go.set()  # the task left behind ends, its lock keeper with it
    behind = [t for t in asyncio.all_tasks() if "stubborn" in t.get_name()]
    await asyncio.wait(behind, timeout=10)
    assert all(t.done() for t in behind)
