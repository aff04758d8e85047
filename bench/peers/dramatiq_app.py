"""Dramatiq peer: a no-op actor on RabbitMQ (``BENCH_AMQP_URL``).

Worker (started by the harness): ``dramatiq bench.peers.dramatiq_app --processes 2
--threads 8 --queues bench_dramatiq``: Dramatiq's documented defaults, one process per CPU
and 8 threads per process. Broker options are Dramatiq's defaults (no publisher confirms,
default middleware).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from importlib import metadata

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.peers.probe import Sample, rabbitmq_samples
from bench.peers.record import record

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = "bench_dramatiq"

broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_noop")
def noop(index: int, enqueued_at: float) -> None:
    """Do nothing but record the execution (``enqueued_at`` travels for inspection only)."""
    record(index, time.time())


class Driver:
    """Enqueue, purge and versions for ``bench.peers.client``."""

    packages = ("dramatiq", "pika")

    def open(self) -> None:
        """Open the connection and declare the queue before any timing starts."""
        broker.declare_queue(QUEUE, ensure=True)

    def close(self) -> None:
        broker.close()

    def setup(self) -> None:
        broker.declare_queue(QUEUE, ensure=True)

    def purge(self) -> None:
        """Purge the queue and its delay and dead-letter queues."""
        broker.flush(QUEUE)

    def settle(self) -> None:
        """Nothing to do: a broker queue has no planner statistics."""

    def send_single(self, indices: Sequence[int]) -> None:
        """One ``send`` per job."""
        for index in indices:
            noop.send(index, time.time())

    def send_batch(self, indices: Sequence[int]) -> None:
        """Dramatiq's batch API is ``group(...).run()``; it publishes each message in turn
        on the same channel (RabbitMQ has no multi-message publish)."""
        dramatiq.group([noop.message(index, time.time()) for index in indices]).run()

    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        """Messages acknowledged: n - ready - unacknowledged, read inside the broker.
        Dramatiq acknowledges a message after its actor returned."""
        yield from rabbitmq_samples(QUEUE, n, interval_s, timeout_s)

    def server_version(self) -> str:
        props = broker.connection._impl.server_properties
        version = props.get("version", "?")
        if isinstance(version, bytes):
            version = version.decode()
        return f"rabbitmq {version}"

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}
