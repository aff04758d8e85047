"""Client CPU and wall time per job of the store's hot path, in one process.

``python -m bench.hotpath [postgres|sqlite] [--n N] [--rounds R] [--limited] [--claim C]``: a
scratch database, N jobs enqueued in batches of 500, 300 single enqueues, then claim C (64) +
finish until empty; with ``--limited`` the batches' jobs are each under a concurrency limit of
2 per key over 1,000 keys (the flow bench's shape: the admission's cost). CPU is
this process's (`time.process_time`), so it moves much less than wall time when the machine
is busy: use it to A/B two trees of the store (run each tree with its own PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.scratch_db import scratch_database
from conveyor.domain.flow import Concurrency, LimitKey
from conveyor.domain.jobs import NewJob, Outcome
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend
from conveyor.store.migrate import migrate

BATCH, SINGLES, CLAIM = 500, 300, 64
LIMIT, KEYS = Concurrency("hotpath", 2), 1_000


def _job(i: int, limited: bool) -> NewJob:
    keys = (LimitKey(LIMIT.name, f"k{i % KEYS}"),) if limited else ()
    return NewJob(type="noop", payload={"i": i}, queue="q", limit_keys=keys)


async def _enqueue_batches(backend: QueueBackend, n: int, limited: bool) -> None:
    for start in range(0, n, BATCH):
        await backend.enqueue([_job(i, limited) for i in range(start, start + BATCH)])


async def _enqueue_singles(backend: QueueBackend) -> None:
    for i in range(SINGLES):
        await backend.enqueue([NewJob(type="noop", payload={"s": i}, queue="other")])


async def _drain(backend: QueueBackend, claim: int) -> int:
    done = 0
    while jobs := await backend.claim("hotpath", ["q"], claim, 30.0):
        outcomes = [Outcome(job_id=j.id, attempt=j.attempt, kind="completed") for j in jobs]
        await backend.finish("hotpath", outcomes)
        done += len(jobs)
    return done


async def one_round(
    kind: str, n: int, limited: bool = False, claim: int = CLAIM
) -> dict[str, float]:
    """µs of CPU and of wall time per job for each phase."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with scratch_database(kind, Path(tmp), "hotpath") as url:
            backend = open_backend(url)
            await migrate(backend.db)
            try:
                await backend.define_limits([LIMIT])
                for name, call, per in (
                    ("batch enqueue", _enqueue_batches(backend, n, limited), n),
                    ("single enqueue", _enqueue_singles(backend), SINGLES),
                    ("claim+finish", _drain(backend, claim), n),
                ):
                    cpu, wall = time.process_time(), time.perf_counter()
                    await call
                    figures[f"{name} cpu"] = 1e6 * (time.process_time() - cpu) / per
                    figures[f"{name} wall"] = 1e6 * (time.perf_counter() - wall) / per
            finally:
                await backend.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("kind", choices=("postgres", "sqlite"), nargs="?", default="postgres")
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limited", action="store_true", help="jobs under a per-key limit")
    parser.add_argument("--claim", type=int, default=CLAIM, help="jobs per claim")
    args = parser.parse_args()
    print(f"{args.kind}: µs per job (cpu / wall), {args.n} jobs")
    for r in range(args.rounds):
        f = asyncio.run(one_round(args.kind, args.n, args.limited, args.claim))
        print(
            f"round {r + 1}: "
            + " | ".join(
                f"{name} {f[name + ' cpu']:.0f} / {f[name + ' wall']:.0f}"
                for name in ("batch enqueue", "single enqueue", "claim+finish")
            )
        )


if __name__ == "__main__":
    main()
