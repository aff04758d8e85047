"""Celery's side of the workflow benchmark (bench/workflow.py): a chord, peers venv.

Worker (started by the harness): ``celery -A bench.peers.celery_chord worker --pool prefork
--concurrency 2 --prefetch-multiplier 64 -Q bench_chord``. Broker: the bench's Redis db
(``BENCH_CELERY_BROKER``, as bench/peers/celery_app.py); result backend: the same Redis db,
the configuration Celery's documentation recommends for chords (the Redis backend counts the
header's results atomically instead of polling them).

    python -m bench.peers.celery_chord --n 10000 --timeout-s 300

flushes the db, runs one no-op task and waits for its result (so the workers' start-up is not
timed), then ``chord(noop.s(i) for i in range(n))(join.s())``: timed from just before
``apply_async`` to the first read that sees the callback's result stored ``SUCCESS`` in the
backend (its durable completion). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from celery import Celery, chord

from bench.peers.record import record

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/14")
QUEUE = "bench_chord"
POLL_S = 0.02

app = Celery("bench_chord", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.chord.noop")
def noop(index: int) -> None:
    """The header's no-op: record the execution, as every bench job does."""
    record(index, time.time())


@app.task(name="bench.chord.join")
def join(results: list[Any], index: int) -> int:
    """The callback: record, and return how many header results it was given."""
    record(index, time.time())
    return len(results)


def run(n: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with app.connection_for_write() as conn:
        conn.default_channel.client.flushdb()
    noop.delay(n + 1).get(timeout=timeout_s)  # the workers are up
    started = time.time()
    result = chord(noop.s(i) for i in range(n))(join.s(n))
    submitted = time.time()
    meta = app.backend.get_task_meta(result.id)
    while meta["status"] not in {"SUCCESS", "FAILURE"} and time.monotonic() < deadline:
        time.sleep(POLL_S)
        meta = app.backend.get_task_meta(result.id)
    done = time.time()
    return {
        "n": n,
        "join_state": meta["status"],
        "join_result": meta.get("result") if meta["status"] == "SUCCESS" else None,
        "submit_s": submitted - started,
        "seconds": done - started if meta["status"] == "SUCCESS" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.timeout_s)))


if __name__ == "__main__":
    main()
