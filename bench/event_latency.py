"""Event latency: from a job's change to an SSE client and to a RabbitMQ consumer.

`python -m bench.event_latency --db sqlite|postgres [--jobs 200]` runs, in one process, the
API under uvicorn on a loopback port (an admin follows `GET /api/v1/events`), a worker, and the
relay with the RabbitMQ sink (a consumer reads a private `jobs.#` queue). Jobs are submitted
one at a time 20 ms apart; every event of every job (created, started, completed) is timed
from its `at` (stamped by the statement that wrote it) to its arrival at each consumer.
Prints p50/p99 in milliseconds per consumer. Needs PostgreSQL and RabbitMQ on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import httpx
from tests.support.serving import serving

from bench.scratch_db import scratch_database
from conveyor.events import Relay
from conveyor.events.rabbitmq import EXCHANGE, RabbitMQSink
from conveyor.events.setup import relay_config
from conveyor.runtime import Engine
from conveyor.server import create_app
from conveyor.services.jobs import Submission
from conveyor.settings import Settings
from conveyor.store.database import Database
from conveyor.store.migrate import migrate

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ADMIN = ("admin@example.com", "admin-password-123")


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def age_ms(at: str) -> float:
    sent = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return (datetime.now(UTC) - sent).total_seconds() * 1000


class Arrivals:
    """Each consumer's event ages; `all_in` is set once each has seen `want` events."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.ages: dict[str, list[float]] = {"sse": [], "rabbitmq": []}
        self.all_in = asyncio.Event()

    def add(self, consumer: str, at: str) -> None:
        self.ages[consumer].append(age_ms(at))
        if min(len(ages) for ages in self.ages.values()) >= self.want:
            self.all_in.set()


async def follow_sse(base: str, token: str, got: Arrivals, ready: asyncio.Event) -> None:
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=base, timeout=None, trust_env=False) as client,
        client.stream("GET", "/api/v1/events", headers=headers) as response,
    ):
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                got.add("sse", json.loads(line[5:])["at"])


async def follow_amqp(prefix: str, got: Arrivals, ready: asyncio.Event) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"{prefix}{EXCHANGE}", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "jobs.#")
        ready.set()
        async with queue.iterator() as messages:
            async for message in messages:
                got.add("rabbitmq", json.loads(message.body)["at"])
                await message.ack()


async def run(kind: str, jobs: int) -> dict[str, tuple[float, float, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with scratch_database(kind, workdir, "bench_events") as url:
            await migrate(Database(url))
            prefix = f"bench-{uuid.uuid4().hex[:8]}."
            settings = Settings(
                database_url=url, data_dir=workdir / "data", log_file=None,
                secret_key="bench-secret-key-that-is-long-enough-for-hs256",
                mail_url=f"file://{workdir / 'mail'}", admin_email=ADMIN[0],
                admin_password=ADMIN[1], rate_limit_submit="100000/minute",
                rate_limit_jobs="10000000/minute",
                amqp_url=AMQP_URL, amqp_prefix=prefix,
            )  # fmt: skip
            return await measure(settings, jobs)


async def measure(settings: Settings, jobs: int) -> dict[str, tuple[float, float, int]]:
    engine = await Engine.open(settings)
    try:
        async with serving(create_app(settings, engine=engine), grace=2) as (_server, base):
            arrivals = await follow(engine, base, jobs)
    finally:
        await engine.close()
    return {
        name: (percentile(got, 0.5), percentile(got, 0.99), len(got))
        for name, got in arrivals.ages.items()
    }


async def admin_token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]}
        )
    token: str = login.json()["access_token"]
    return token


async def follow(engine: Engine, base: str, jobs: int) -> Arrivals:
    """Submit `jobs` jobs 20 ms apart and collect each event's age at each consumer."""
    settings = engine.settings
    worker = engine.worker(concurrency=4)
    sink = RabbitMQSink(AMQP_URL, prefix=settings.amqp_prefix)
    relay = Relay(engine.backend, [sink], relay_config(settings))
    arrivals = Arrivals(3 * jobs)  # created, started, completed
    ready = [asyncio.Event(), asyncio.Event()]
    token = await admin_token(base)
    tasks = [
        asyncio.create_task(worker.run()),
        asyncio.create_task(relay.run()),
        asyncio.create_task(follow_sse(base, token, arrivals, ready[0])),
        asyncio.create_task(follow_amqp(settings.amqp_prefix, arrivals, ready[1])),
    ]
    try:
        for flag in ready:
            await flag.wait()
        await asyncio.sleep(1.0)
        for i in range(jobs):
            await engine.jobs.submit(Submission(type="noop", payload={"i": i}))
            await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await arrivals.all_in.wait()
    finally:
        worker.stop(force=True)
        relay.stop()
        for task in tasks[2:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    figures = asyncio.run(run(args.db, args.jobs))
    for name, (p50, p99, count) in figures.items():
        print(f"{args.db} {name}: p50 {p50:.1f} ms  p99 {p99:.1f} ms  ({count} events)")


if __name__ == "__main__":
    main()
