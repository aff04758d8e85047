"""The enqueue side of a peer, run by the harness as a subprocess in ``bench/.venv-peers``.

    python -m bench.peers.client --driver celery setup|purge|settle|versions
    python -m bench.peers.client --driver celery enqueue --n 2000 --mode single|batch
    python -m bench.peers.client --driver celery trickle --n 200 --gap-ms 20
    python -m bench.peers.client --driver celery probe --n 20000 [--interval-s 0.1]

The client is standard-library only, so Conveyor's systems run it too, in the project venv
(``--driver conveyor``): every system's enqueues are timed by this same code.

Every command prints exactly one JSON object on stdout (logs go to stderr), so the harness in
the project venv never imports a peer; ``probe`` alone prints one per sample,
``{"t0": before the read, "t": after it, "done": durably completed jobs}``, as it goes (see
peers/probe.py). Timings exclude interpreter start-up and connecting: the clock starts after
:meth:`Driver.open`, as it would in a long-running application.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

DRIVERS = {
    "celery": "bench.peers.celery_app",
    "dramatiq": "bench.peers.dramatiq_app",
    "procrastinate": "bench.peers.procrastinate_app",
    "huey": "bench.peers.huey_app",
    "rq": "bench.peers.rq_app",
    # Conveyor's driver runs this same client in the project venv (bench/conveyor_driver.py).
    "conveyor": "bench.conveyor_driver",
}
MAX_JOBS = 1_000_000  # bounds every loop below


class Driver(Protocol):
    """What each peer module's ``Driver`` class provides."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def setup(self) -> None: ...
    def purge(self) -> None: ...
    def settle(self) -> None: ...
    def send_single(self, indices: range) -> None: ...
    def send_batch(self, indices: range) -> None: ...
    def probe(
        self, n: int, interval_s: float, timeout_s: float
    ) -> Iterator[tuple[float, float, int]]: ...
    def server_version(self) -> str: ...
    def versions(self) -> dict[str, str]: ...


def _enqueue(driver: Driver, args: argparse.Namespace) -> dict[str, Any]:
    indices = range(args.start, args.start + args.n)
    driver.open()
    started = time.perf_counter()
    if args.mode == "single":
        driver.send_single(indices)
    else:
        for first in range(indices.start, indices.stop, args.batch_size):
            driver.send_batch(range(first, min(first + args.batch_size, indices.stop)))
    seconds = time.perf_counter() - started
    return {"n": args.n, "mode": args.mode, "batch_size": args.batch_size, "seconds": seconds}


def _trickle(driver: Driver, args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue one job at a time, ``gap_ms`` apart; report when each enqueue was called and
    when it returned (Conveyor: committed; a peer: whatever its client waits for). A driver
    whose client is asyncio's (Conveyor's) trickles in its own loop (``Driver.trickle``)."""
    driver.open()
    indices = range(args.start, args.start + args.n)
    own = getattr(driver, "trickle", None)
    if own is not None:
        enqueued_at, accepted_at = own(indices, args.gap_ms / 1000)
    else:
        enqueued_at, accepted_at = [], []
        for index in indices:
            enqueued_at.append(time.time())
            driver.send_single(range(index, index + 1))
            accepted_at.append(time.time())
            time.sleep(args.gap_ms / 1000)
    return {
        "n": args.n, "start": args.start, "enqueued_at": enqueued_at, "accepted_at": accepted_at,
    }  # fmt: skip


def _probe(driver: Driver, args: argparse.Namespace) -> dict[str, Any]:
    """Stream durable-completion samples until ``n`` are done or the timeout passes."""
    last = 0
    for before, after, done in driver.probe(args.n, args.interval_s, args.timeout_s):
        sys.stdout.write(json.dumps({"t0": before, "t": after, "done": done}) + "\n")
        sys.stdout.flush()
        last = done
    return {"n": args.n, "done": last, "end": True}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", choices=sorted(DRIVERS), required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="create what the peer needs, empty")
    commands.add_parser("purge", help="drop every pending job")
    commands.add_parser("settle", help="steady-state the store after a bulk fill (ANALYZE)")
    commands.add_parser("versions", help="package and server versions")
    enqueue = commands.add_parser("enqueue", help="time N enqueues")
    enqueue.add_argument("--n", type=int, required=True)
    enqueue.add_argument("--mode", choices=("single", "batch"), required=True)
    enqueue.add_argument("--batch-size", type=int, default=500)
    enqueue.add_argument("--start", type=int, default=0)
    trickle = commands.add_parser("trickle", help="enqueue one job at a time, spaced")
    trickle.add_argument("--n", type=int, required=True)
    trickle.add_argument("--gap-ms", type=float, default=20.0)
    trickle.add_argument("--start", type=int, default=0)
    probe = commands.add_parser("probe", help="stream durably completed counts (JSON lines)")
    probe.add_argument("--n", type=int, required=True)
    probe.add_argument("--interval-s", type=float, default=0.1)
    probe.add_argument("--timeout-s", type=float, default=120.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "n", 0) > MAX_JOBS or getattr(args, "n", 0) < 0:
        raise SystemExit(f"--n must be between 0 and {MAX_JOBS}")
    driver: Driver = importlib.import_module(DRIVERS[args.driver]).Driver()
    try:
        if args.command == "setup":
            driver.setup()
            result: dict[str, Any] = {"ok": True}
        elif args.command == "purge":
            driver.purge()
            result = {"ok": True}
        elif args.command == "settle":
            driver.settle()
            result = {"ok": True}
        elif args.command == "versions":
            result = {"packages": driver.versions(), "server": driver.server_version()}
        elif args.command == "probe":
            result = _probe(driver, args)
        elif args.command == "enqueue":
            result = _enqueue(driver, args)
        else:
            result = _trickle(driver, args)
    finally:
        driver.close()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
