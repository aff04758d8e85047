"""Celery peer: a no-op task on Redis or RabbitMQ, chosen by ``BENCH_CELERY_BROKER``.

Worker (started by the harness): ``celery -A bench.peers.celery_app worker --pool prefork
--concurrency 2 --prefetch-multiplier 64 -Q bench_celery``.

Settings follow Celery's documentation for short tasks on a 2-core box: the prefork pool with
concurrency = CPUs (the documented default) and a large prefetch multiplier (the Optimizing
guide: "If you have many short-running tasks ... this number should be large"). Results are
ignored (no result backend), as for any fire-and-forget job; acknowledgement is Celery's
default (early).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from importlib import metadata

from celery import Celery

from bench.peers.probe import Sample, poll, rabbitmq_samples
from bench.peers.record import record

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/14")
QUEUE = "bench_celery"

app = Celery("bench_celery", broker=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop", ignore_result=True)
def noop(index: int, enqueued_at: float) -> None:
    """Do nothing but record the execution (``enqueued_at`` travels for inspection only)."""
    record(index, time.time())


def _is_redis() -> bool:
    return BROKER_URL.startswith("redis")


class Driver:
    """Enqueue, purge and versions for ``bench.peers.client``."""

    packages = ("celery", "kombu", "redis" if _is_redis() else "amqp")

    def open(self) -> None:
        """Connect the producer pool before any timing starts."""
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=3)

    def close(self) -> None:
        app.close()

    def setup(self) -> None:
        """Nothing to create: the queue is declared on first publish."""

    def purge(self) -> None:
        """Drop every message. On Redis flush the dedicated db (queue and unacked keys)."""
        if _is_redis():
            with app.connection_for_write() as conn:
                conn.default_channel.client.flushdb()
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=3)
                app.control.purge(connection=conn)

    def settle(self) -> None:
        """Nothing to do: a broker queue has no planner statistics."""

    def send_single(self, indices: Sequence[int]) -> None:
        """One ``apply_async`` per job, as an application would call ``task.delay``."""
        for index in indices:
            noop.apply_async((index, time.time()))

    def send_batch(self, indices: Sequence[int]) -> None:
        """Celery has no bulk publish: ``group(...).apply_async()`` is this same loop over
        ``apply_async`` with one shared producer, which we write out without the group id."""
        with app.producer_or_acquire() as producer:
            for index in indices:
                noop.apply_async((index, time.time()), producer=producer)

    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        """Messages the broker no longer holds: n - queued - unacknowledged. Celery acks
        early (its default), so a message leaves the broker just before its task runs."""
        if not _is_redis():
            yield from rabbitmq_samples(QUEUE, n, interval_s, timeout_s)
            return
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
            client = conn.default_channel.client

            def count() -> int:  # kombu's Redis transport: the queue list + the unacked hash
                return n - int(client.llen(QUEUE)) - int(client.hlen("unacked"))

            yield from poll(count, n, interval_s, timeout_s)

    def server_version(self) -> str:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
            if _is_redis():
                info = conn.default_channel.client.info("server")
                return f"redis {info['redis_version']}"
            props = conn.connection.server_properties
            version = props.get("version", "?")
            if isinstance(version, bytes):
                version = version.decode()
            return f"rabbitmq {version}"

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}
