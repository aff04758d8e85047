"""Webhook figures: deliveries per second to a loopback receiver, and what callbacks cost enqueue.

`python -m bench.webhooks --db sqlite|postgres [--events 2000] [--enqueues 2000]` measures, in
one process on a fresh database:
- dispatch: `--events` events of one user fanned out (the sink's `deliver`, timed) to one
  subscription on a loopback receiver that answers 200 at once, then sent by the dispatcher
  (16 at once, all to that one endpoint); deliveries/s from the first claim to the last row
  settled;
- enqueue: `--enqueues` single-job enqueues one after the other, without and with a
  `callback_url`, median microseconds each. Run it on an older checkout (PYTHONPATH) to
  compare a tree without callbacks: the "without" path is the same statement.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scratch_db import scratch_database
from conveyor.domain.jobs import NewJob
from conveyor.store.database import Database
from conveyor.store.factory import open_backend
from conveyor.store.migrate import migrate


async def receiver() -> tuple[asyncio.Server, int, list[int]]:
    """HTTP/1.1 on loopback: reads one request per connection, answers 204."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        seen.append(length)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    return server, server.sockets[0].getsockname()[1], seen


async def dispatch(url: str, events: int) -> dict[str, float]:
    from conveyor.domain import events as ev
    from conveyor.events import schema
    from conveyor.events.webhooks import DispatchConfig, Dispatcher
    from conveyor.net import FetchPolicy
    from conveyor.net.signing import SecretKeys
    from conveyor.store.webhook_deliveries import WebhookDeliveryStore
    from conveyor.store.webhooks import WebhookStore

    backend = open_backend(url)
    keys = SecretKeys("bench-secret-key")
    hooks, store = WebhookStore(backend.db, keys), WebhookDeliveryStore(backend.db, keys)
    server, port, seen = await receiver()
    try:
        await hooks.create("bench", f"http://127.0.0.1:{port}/hook", ["*"])
        await backend.enqueue(
            [NewJob(type="noop", payload={"i": i}, owner_id="bench") for i in range(events)]
        )
        found: list[ev.Event] = []
        while sum(e.owner_id == "bench" for e in found) < events:  # PostgreSQL's horizon
            await asyncio.sleep(0.1)
            found = await backend.read_events(ev.Position(), 10 * events + 100_000)
        started = time.perf_counter()
        rows = 0
        for start in range(0, len(found), 500):  # the relay's batch
            rows += await store.fan_out(found[start : start + 500], schema.encode)
        fan_out = time.perf_counter() - started
        config = DispatchConfig(concurrency=16, per_endpoint=16, poll_interval=0.05)
        dispatcher = Dispatcher(store, FetchPolicy(allow_private=True, ports=None), config)
        stopping = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stopping))
        started = time.perf_counter()
        while True:  # until nothing is pending
            if not await store.deliveries(state="pending", limit=1):
                break
            await asyncio.sleep(0.02)
        sent = time.perf_counter() - started
        stopping.set()
        await running
        delivered = len(await store.deliveries(state="delivered", limit=events + 1))
        failed = await store.deliveries(state="failed", limit=1)
        if failed:
            print("a failed delivery:", failed[0])
    finally:
        server.close()
        await backend.close()
    return {
        "deliveries": rows,
        "fan_out_rows_per_s": round(rows / fan_out),
        "deliveries_per_s": round(delivered / sent),
        "received": len(seen),
    }


async def enqueue(url: str, count: int) -> dict[str, float]:
    """Median single-job enqueue, the two kinds interleaved in rounds (the machine is shared:
    load drifts, and interleaving gives both kinds the same drift)."""
    backend = open_backend(url)
    kinds = [False, True] if _has_callbacks() else [False]
    times: dict[bool, list[float]] = {kind: [] for kind in kinds}
    try:
        for round_start in range(0, count, 50):
            for kind in kinds:
                for i in range(round_start, min(count, round_start + 50)):
                    job = _job(i, kind)
                    started = time.perf_counter()
                    await backend.enqueue([job])
                    times[kind].append(time.perf_counter() - started)
    finally:
        await backend.close()
    names = {False: "without_callback_us_median", True: "with_callback_us_median"}
    return {names[k]: round(statistics.median(v) * 1e6) for k, v in times.items()}


def _has_callbacks() -> bool:
    return "callback_url" in NewJob.__dataclass_fields__


def _job(i: int, callback: bool) -> NewJob:
    fields: dict[str, Any] = {"type": "noop", "payload": {"i": i}}
    if callback:
        fields["callback_url"] = "http://127.0.0.1:9/cb"
    return NewJob(**fields)


async def main(kind: str, events: int, enqueues: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with scratch_database(kind, Path(tmp), "bench_webhooks") as url:
            db = Database(url)
            await migrate(db)
            await db.dispose()
            figures: dict[str, Any] = {"db": kind, **await enqueue(url, enqueues)}
            if _has_callbacks():
                figures.update(await dispatch(url, events))
            print(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--enqueues", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.db, args.events, args.enqueues))
