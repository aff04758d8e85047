"""Entry point of ``make bench``: ``python -m bench.run [--systems a,b] [--n N] [--quick]``.

Runs every selected system one after the other on this machine (never two at once, so they
do not compete for the 2 cores), prints the table and writes ``bench/results/latest.json``.
Exit status: 0 if every system was measured, 1 if one failed, 2 if a selection is invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import peers_venv
from bench.measure import Plan, SystemResult, measure
from bench.procs import BenchError
from bench.report import RESULTS_DIR, now, print_table, to_json, write_json
from bench.systems import REGISTRY, SystemUnavailable, create, default_systems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    known, default = ", ".join(REGISTRY), ", ".join(default_systems())
    parser.add_argument("--systems", help=f"comma-separated, from: {known} (default: {default})")
    parser.add_argument("--n", type=int, help="drain size for every system (default: per system)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (~1 min)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--keep-run-dir", action="store_true", help="keep records and worker logs")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="start no further system after this many seconds (default: 540)",
    )
    return parser


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP (make or CI giving up) unwind like Ctrl-C, so every finally block
    stops its workers: they run in their own sessions and would not get the signal."""
    raise KeyboardInterrupt(f"signal {signum}")


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    if args.n is not None:
        if not 1 <= args.n <= 1_000_000:
            raise SystemExit("--n must be between 1 and 1,000,000")
        plan = dataclasses.replace(plan, drain_n=args.n)
    return plan


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, entry in REGISTRY.items():
            print(f"{name:20} {'enabled' if entry.enabled() else 'disabled'}")
        return 0
    names = args.systems.split(",") if args.systems else default_systems()
    plan = _plan(args)
    try:
        systems = [create(name.strip()) for name in names if name.strip()]
    except SystemUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if any(REGISTRY[s.name].peer for s in systems):
        try:
            peers_venv.ensure_peers_venv()
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"bench: building {peers_venv.VENV_DIR} failed: {exc}", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    started, clock = now(), time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    results: list[SystemResult] = []
    try:
        for system in systems:
            if time.monotonic() - clock > args.budget_s:
                skipped = SystemResult(system.name, system.label, {}, error="skipped: over budget")
                results.append(skipped)
                continue
            results.append(measure(system, plan, work / system.name))
    except BenchError as exc:  # teardown itself failed: stop, but report what we have
        print(f"bench: aborted: {exc}", file=sys.stderr)
    finally:
        for system in systems:  # belt and braces: nothing outlives the run
            system.stop_workers()
        if args.keep_run_dir:
            print(f"bench: records and worker logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - clock
    print_table(results)
    write_json(to_json(results, plan, started, elapsed), args.out)
    print(f"bench: {len(results)} systems in {elapsed:.0f} s; wrote {args.out}", file=sys.stderr)
    failed = len(results) < len(systems) or any(r.error for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
