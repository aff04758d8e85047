"""The Python client against a real `conveyor run` process: submits per second (one by one,
and batched) and how soon `wait()` returns after a job finished.

`python -m bench.client [--database-url URL] [--jobs 1000]` starts `conveyor run` on a free
loopback port (a temporary SQLite file unless a URL is given; a PostgreSQL database must be
empty or migrated), logs in as its admin with `conveyor.client.Client` and measures:

- submit/s one by one: `--jobs` calls of `submit("noop")`, one after another, one connection,
  in rounds alternating with the same POST sent with bare httpx (what HTTP alone costs);
- submit/s batched: the same number through `submit_many` in batches of 500;
- wait latency: 30 `sleep` jobs of 0.2 s (one progress step), each followed with `wait()`;
  latency = the moment `wait()` returned minus the job's `finished_at` (one machine, one clock);
  p50 and p99 in milliseconds.
The worker inside `conveyor run` is running during the submits (as in production).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.procs import spawn, stop
from conveyor.client import Client, ConnectionFailed

ADMIN, PASSWORD = "bench@example.com", "bench-password-123"
BATCH = 500
ROUNDS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_PORT": str(port),
        "CONVEYOR_DATA_DIR": str(workdir / "data"),
        "CONVEYOR_LOG_FILE": "",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "CONVEYOR_ADMIN_EMAIL": ADMIN,
        "CONVEYOR_ADMIN_PASSWORD": PASSWORD,
        "CONVEYOR_RATE_LIMIT_SUBMIT": "1000000/minute",
        "CONVEYOR_RATE_LIMIT_JOBS": "10000000/minute",
        "CONVEYOR_RATE_LIMIT_AUTH": "1000/minute",
    }
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    proc = spawn([conveyor, "run"], env, workdir / "run.log")
    return proc, f"http://127.0.0.1:{port}"


def _ready(url: str, timeout: float = 30.0) -> tuple[Client, str]:
    deadline = time.monotonic() + timeout
    while True:
        client = Client(url)
        try:
            return client, client.login(ADMIN, PASSWORD).access_token
        except ConnectionFailed:
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _one_by_one(client: Client, token: str, jobs: int) -> tuple[float, float]:
    """Submits/s through the client, and with bare httpx (what HTTP alone costs), in
    alternating rounds, so that both meet the same worker load and table size."""
    http = httpx.Client(base_url=client.base_url, headers={"Authorization": f"Bearer {token}"})
    spent = {"client": 0.0, "httpx": 0.0}
    with http:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(jobs // ROUNDS):
                client.submit("noop")
            spent["client"] += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(jobs // ROUNDS):
                http.post("/api/v1/jobs", json={"type": "noop"}).raise_for_status()
            spent["httpx"] += time.perf_counter() - started
    done = jobs // ROUNDS * ROUNDS
    return done / spent["client"], done / spent["httpx"]


def measure(client: Client, token: str, jobs: int) -> dict[str, float]:
    one_by_one, raw = _one_by_one(client, token, jobs)
    started = time.perf_counter()
    for first in range(0, jobs, BATCH):
        client.submit_many([{"type": "noop"} for _ in range(min(BATCH, jobs - first))])
    batched = jobs / (time.perf_counter() - started)

    latencies = []
    for _ in range(30):
        job = client.submit("sleep", {"seconds": 0.2, "steps": 1})
        done = client.wait(job.id, timeout=60)
        returned = datetime.now(UTC)
        assert done.finished_at is not None
        latencies.append((returned - done.finished_at).total_seconds() * 1000)
    latencies.sort()
    return {
        "httpx_submit_per_s": raw,
        "submit_per_s": one_by_one,
        "submit_batched_per_s": batched,
        "wait_p50_ms": statistics.median(latencies),
        "wait_p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{workdir / 'conveyor.db'}"
        proc, base = _start(url, workdir)
        try:
            client, token = _ready(base)
            with client:
                figures = measure(client, token, args.jobs)
        finally:
            stop(proc)
    kind = url.split(":", 1)[0]
    for name, value in figures.items():
        print(f"{kind:<10} {name:<22} {value:10.1f}")


if __name__ == "__main__":
    main()
