"""Entry point of ``make bench``: ``python -m bench.run [--systems a,b] [--n N] [--quick]``.

Runs every selected system one after the other on this machine (never two at once, so they
do not compete for the 2 cores), then Conveyor's HTTP section and the pgbench single-insert
limit, prints the tables (systems, HTTP, issue #12's targets) and writes
``bench/results/latest.json``. ``--conveyor-src PATH`` (repeatable) runs Conveyor from other
source trees, ``--rounds N`` alternates everything N times and reports medians, ``--soak N``
runs only the long worker-memory run, ``--only flow`` only flow control's drains and
starvation figure (bench/flow.py), ``--only workflow`` only the fan-out/join against a
Celery chord (bench/workflow.py; also at the end of the full run unless ``--no-workflow``).
Exit status: 0 if everything was measured, 1 if a
part failed, 2 if a selection is invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import flow, http_submit, peers_venv, pgbench_limit, soak, targets, workflow
from bench.measure import Plan, SystemResult, measure
from bench.procs import BenchError
from bench.report import (
    RESULTS_DIR,
    http_table,
    now,
    print_table,
    print_tables,
    targets_table,
    to_json,
    write_json,
)
from bench.rounds import medians
from bench.section import Figures, as_json
from bench.systems import (
    REGISTRY,
    System,
    SystemUnavailable,
    conveyor_databases,
    conveyor_with_source,
    create,
    default_systems,
)

HTTP_SECONDS, HTTP_SECONDS_QUICK = 5.0, 2.0
PGBENCH_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    known, default = ", ".join(REGISTRY), ", ".join(default_systems())
    parser.add_argument("--systems", help=f"comma-separated, from: {known} (default: {default})")
    parser.add_argument("--n", type=int, help="drain size for every system (default: per system)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (~2 min)")
    parser.add_argument(
        "--out", type=Path, help="default: bench/results/latest.json (--only flow: flow.json)"
    )
    parser.add_argument("--keep-run-dir", action="store_true", help="keep records and worker logs")
    parser.add_argument("--list", action="store_true", help="list the systems and exit")
    parser.add_argument(
        "--conveyor-src",
        type=Path,
        action="append",
        metavar="PATH",
        help="run Conveyor (client, workers, API) from PATH/src; repeat to A/B several trees",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate N times; medians")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP section")
    parser.add_argument("--no-workflow", action="store_true", help="skip the workflow section")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench limit")
    parser.add_argument(
        "--soak", type=int, metavar="N", help="only the long run: N jobs on PostgreSQL, worker RSS"
    )
    parser.add_argument(
        "--only",
        choices=["flow", "workflow"],
        help="only this section: flow = fair dispatch and limits beside the plain drain, "
        "both databases, and the starvation figure (bench/flow.py); workflow = a fan-out of "
        "10,000 steps and a join on both databases and as a Celery chord (bench/workflow.py)",
    )
    parser.add_argument(
        "--databases",
        default=",".join(flow.DATABASES),
        help="--only flow: comma-separated, from postgres, sqlite (default: both)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(flow.SCENARIOS),
        help=f"--only flow: comma-separated, from {', '.join(flow.SCENARIOS)} (default: all)",
    )
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


def _suffix(source: Path | None) -> str:
    return f"@{source.resolve().name}" if source is not None else ""


def _systems(names: list[str], sources: list[Path | None]) -> list[System]:
    """The selection, each Conveyor system once per source tree (alternated)."""
    systems: list[System] = []
    for name in names:
        if name.startswith("conveyor-") and sources != [None]:
            if not REGISTRY[name].enabled():
                systems.append(create(name))  # raises the reason
            systems.extend(conveyor_with_source(name, source) for source in sources)
        else:
            systems.append(create(name))
    return systems


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _extras(
    args: argparse.Namespace, sources: list[Path | None], names: list[str]
) -> tuple[
    dict[str, list[http_submit.HttpFigures]], pgbench_limit.PgbenchFigures | None, list[str]
]:
    """The HTTP section (per source) and the pgbench limit; errors are collected, not raised."""
    http: dict[str, list[http_submit.HttpFigures]] = {}
    errors: list[str] = []
    conveyor = conveyor_databases(names)
    pgbench = None
    if not args.no_pgbench and "postgres" in conveyor:
        try:
            pgbench = pgbench_limit.measure(PGBENCH_SECONDS)
            print(f"bench: pgbench single-insert limit: {pgbench.tps:,.0f} tps", file=sys.stderr)
        except BenchError as exc:
            errors.append(f"pgbench: {exc}")
    if not args.no_http and conveyor:
        seconds = HTTP_SECONDS_QUICK if args.quick else HTTP_SECONDS
        for source in sources:
            figures: list[http_submit.HttpFigures] = []
            for database in conveyor:
                try:
                    figures.extend(http_submit.measure_store(database, source, seconds))
                except (BenchError, OSError) as exc:
                    errors.append(f"http {database}{_suffix(source)}: {exc}")
            http[_suffix(source)] = figures
    return http, pgbench, errors


def _run_soak(args: argparse.Namespace, sources: list[Path | None], work: Path) -> int:
    started, clock = now(), time.monotonic()
    runs = {}
    for source in sources:
        figures = soak.soak(args.soak, work, source)
        runs[_suffix(source) or "this tree"] = dataclasses.asdict(figures)
        print(f"bench: soak{_suffix(source)}: {figures}", file=sys.stderr)
    document = to_json([], _plan(args), started, time.monotonic() - clock, {"soak": runs})
    write_json(document, args.out)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 1 if any(r["error"] or r["timed_out"] for r in runs.values()) else 0


def _run_part(
    args: argparse.Namespace,
    plan: Plan,
    work: Path,
    part: str,
    run: Callable[[Plan, Path, bool], Sequence[Figures]],
    table: Callable[[Any], Table],
) -> int:
    """One part alone (``--only flow|workflow``): its rows measured, printed and written
    with the plan and the load average before and after."""
    started, clock = now(), time.monotonic()
    load_before = _loadavg()
    rows = run(plan, work, args.quick)
    print_tables([table(rows)])
    extras = {part: as_json(rows), "load_before": load_before, "load_after": _loadavg()}
    write_json(to_json([], plan, started, time.monotonic() - clock, extras), args.out)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 1 if any(r.error for r in rows) else 0


def _flow_part(args: argparse.Namespace) -> Callable[[Plan, Path, bool], Sequence[Figures]]:
    """flow.run with --conveyor-src, --rounds, --databases and --scenarios (checked here)."""
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [d for d in databases if d not in flow.DATABASES]
    bad += [s for s in scenarios if s not in flow.SCENARIOS]
    if bad or not databases or not scenarios:
        raise SystemExit(f"--databases/--scenarios: unknown {bad or 'empty selection'}")
    trees: list[Path | None] = list(args.conveyor_src or [None])

    def part(plan: Plan, work: Path, quick: bool) -> Sequence[Figures]:
        return flow.run(plan, work, quick, trees, args.rounds, databases, scenarios)

    return part


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None:
        args.out = RESULTS_DIR / (f"{args.only}.json" if args.only else "latest.json")
    if args.list:
        for name, entry in REGISTRY.items():
            print(f"{name:20} {'enabled' if entry.enabled() else 'disabled'}")
        return 0
    if not 1 <= args.rounds <= 50:
        raise SystemExit("--rounds must be between 1 and 50")
    sources: list[Path | None] = list(args.conveyor_src or [None])
    names = [n.strip() for n in (args.systems or ",".join(default_systems())).split(",")]
    names = [n for n in names if n]
    plan = _plan(args)
    try:
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise SystemUnavailable(f"unknown system {unknown[0]!r}; known: {', '.join(REGISTRY)}")
        _systems(names, sources)  # every selection valid before anything runs
    except SystemUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    try:
        if args.soak:
            return _run_soak(args, sources, work)
        if args.only == "flow":
            return _run_part(args, plan, work, "flow", _flow_part(args), flow.table)
        if args.only == "workflow":
            trees = args.conveyor_src or [None]

            def workflows(plan: Plan, work: Path, quick: bool) -> Sequence[Figures]:
                return workflow.run(plan, work, quick, sources=trees)

            return _run_part(args, plan, work, "workflow", workflows, workflow.table)
        return _run(args, names, sources, plan, work)
    finally:
        if args.keep_run_dir:
            print(f"bench: records and worker logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    names: list[str],
    sources: list[Path | None],
    plan: Plan,
    work: Path,
) -> int:
    if any(REGISTRY[name].peer for name in names):
        try:
            peers_venv.ensure_peers_venv()
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"bench: building {peers_venv.VENV_DIR} failed: {exc}", file=sys.stderr)
            return 1
    started, clock = now(), time.monotonic()
    load_before = _loadavg()
    http, pgbench, errors = _extras(args, sources, names)
    results, expected = _measure_rounds(args, names, sources, plan, work, clock)
    elapsed = time.monotonic() - clock
    summary = medians(results) if args.rounds > 1 else results
    workflows = _workflows(args, names, plan, work, errors)
    _print(args, sources, summary, http, pgbench, errors)
    if workflows:
        print_tables([workflow.table(workflows)])
    extras: dict[str, Any] = {
        "load_before": load_before,
        "load_after": _loadavg(),
        "http": {k or "this tree": [dataclasses.asdict(f) for f in v] for k, v in http.items()},
        "pgbench": dataclasses.asdict(pgbench) if pgbench else None,
        "errors": errors,
        "workflow": as_json(workflows),
    }
    if args.rounds > 1:
        extras["rounds"] = [dataclasses.asdict(r) for r in results]
    write_json(to_json(summary, plan, started, elapsed, extras), args.out)
    print(
        f"bench: {len(results)} measurements in {elapsed:.0f} s; wrote {args.out}", file=sys.stderr
    )
    failed = len(results) < expected or any(r.error for r in results) or bool(errors)
    return 1 if failed else 0


def _workflows(
    args: argparse.Namespace, names: list[str], plan: Plan, work: Path, errors: list[str]
) -> list[workflow.WorkflowFigures]:
    """The workflow section (bench/workflow.py) for the selected Conveyor databases."""
    databases = conveyor_databases(names)
    if args.no_workflow or not databases:
        return []
    own = dataclasses.replace(plan, drain_n=None)  # its own size, not the drains'
    rows = workflow.run(own, work / "workflow", args.quick, databases)
    errors.extend(f"workflow {r.system} {r.store}: {r.error}" for r in rows if r.error)
    return rows


def _measure_rounds(
    args: argparse.Namespace,
    names: list[str],
    sources: list[Path | None],
    plan: Plan,
    work: Path,
    clock: float,
) -> tuple[list[SystemResult], int]:
    """Every system, ``--rounds`` times alternated; (results, how many were due)."""
    results: list[SystemResult] = []
    expected = 0
    systems: list[System] = []
    try:
        for round_no in range(args.rounds):
            systems = _systems(names, sources)
            expected += len(systems)
            for system in systems:
                if time.monotonic() - clock > args.budget_s:
                    skipped = SystemResult(
                        system.name, system.label, {}, error="skipped: over budget"
                    )
                    results.append(skipped)
                    continue
                result = measure(system, plan, work / f"round{round_no}" / system.name)
                result.settings["round"] = round_no
                results.append(result)
    except BenchError as exc:  # teardown itself failed: stop, but report what we have
        print(f"bench: aborted: {exc}", file=sys.stderr)
    finally:
        for system in systems:  # belt and braces: nothing outlives the run
            system.stop_workers()
    return results, expected


def _print(
    args: argparse.Namespace,
    sources: list[Path | None],
    summary: list[SystemResult],
    http: dict[str, list[http_submit.HttpFigures]],
    pgbench: pgbench_limit.PgbenchFigures | None,
    errors: list[str],
) -> None:
    tables = []
    for source in sources:
        figures = http.get(_suffix(source), [])
        if figures:
            tables.append(http_table(figures, f" {_suffix(source)}" if source else ""))
    for source in sources:
        rows = targets.rows(summary, _suffix(source), http.get(_suffix(source), []), pgbench, None)
        tables.append(targets_table(rows))
    print_table(summary, args.rounds)
    print_tables(tables)
    for error in errors:
        print(f"bench: FAILED: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
